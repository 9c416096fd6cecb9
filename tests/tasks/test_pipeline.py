"""The job pipeline end to end: real redis-server, real prefork Celery workers, a real HTTP
DynamoDB endpoint. Output through the workers must equal `featurepull pull` on the same
input — also when worker processes are SIGKILLed mid-job."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job, JobFailed, submit
from featurepull.local import RedisService
from featurepull.tasks import JobStoreError
from tests.conftest import wait_until
from tests.tasks.conftest import (
    DRIVERS,
    Fleet,
    fleet,
    freeze_mid_shard,
    wait_for_progress,
)

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

ENTITIES = 200_000


def entity_ids(count: int, seed: int = 3) -> list[int]:
    """Known drivers, 10% unknown ids and 5% repeats, shuffled."""
    rng = random.Random(seed)
    known = rng.sample(range(DRIVERS), int(count * 0.85))
    ids = known + [DRIVERS + i for i in range(count // 10)]
    ids += rng.choices(ids, k=count - len(ids))
    rng.shuffle(ids)
    return ids


@pytest.fixture(scope="module")
def entities_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("entities") / "drivers.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(entity_ids(ENTITIES), pa.int64())}), path)
    return path


@pytest.fixture(scope="module")
def reference(entities_file: Path, fast_dynamo: EndpointProcess,
              tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """What `featurepull pull` (in-process, no broker) writes for the same entities."""
    out = tmp_path_factory.mktemp("reference") / "pull.parquet"
    subprocess.run(
        [sys.executable, "-m", "featurepull", "pull", "--project", "demo", "--table",
         "driver_stats", "--features", ",".join(FEATURES), "--entities", str(entities_file),
         "--output", str(out), "--endpoint-url", fast_dynamo.url, "--region", "us-east-1"],
        check=True, capture_output=True, timeout=300)
    return pq.read_table(out)


def run_job(workers: Fleet, entities: Path, output: Path | None, **kwargs: Any) -> Job:
    return submit("driver_stats", list(FEATURES), str(entities),
                  str(output) if output else None, settings=workers.settings(), **kwargs)


def test_two_worker_processes_match_pull(redis_server: RedisService, fast_dynamo: EndpointProcess,
                                         entities_file: Path, reference: pa.Table,
                                         tmp_path: Path) -> None:
    with fleet(redis_server, fast_dynamo.url, shard_size=20_000) as workers:
        workers.start_worker(concurrency=2)
        out = tmp_path / "job.parquet"
        job = run_job(workers, entities_file, out)
        status = job.wait(timeout=240, progress=False)
        assert status.state == "succeeded" and status.shards == 10
        assert pq.read_table(out).equals(reference)
        summary = status.summary or {}
        assert summary["rows_written"] == ENTITIES
        assert summary["read"]["found"] + summary["read"]["missing"] == ENTITIES
        assert summary["read"]["missing"] == reference.column("event_timestamp").null_count
        assert summary["redelivered_shards"] == 0
        # The rows live in the file now; Redis keeps only the job's summary.
        assert not list(workers.redis().scan_iter(f"featurepull:job:{job.id}:rows:*"))
        with pytest.raises(JobStoreError, match="wrote its rows to"):
            next(job.rows())


def test_two_worker_instances_match_pull(redis_server: RedisService,
                                         fast_dynamo: EndpointProcess, entities_file: Path,
                                         reference: pa.Table, tmp_path: Path) -> None:
    # Two separate worker instances on one Redis, as two machines would run them.
    with fleet(redis_server, fast_dynamo.url, shard_size=10_000) as workers:
        workers.start_worker(concurrency=1, name="machine-a")
        workers.start_worker(concurrency=1, name="machine-b")
        out = tmp_path / "job.csv"
        job = run_job(workers, entities_file, out)
        job.wait(timeout=240, progress=False)
        logs = [log.read_text() for log in workers.logs]
        assert all("featurepull.read_shard" in text and "succeeded" in text for text in logs)
    rows = out.read_text().splitlines()
    assert len(rows) == ENTITIES + 1
    assert [int(r.split(",", 1)[0]) for r in rows[1:]] == reference.column("driver_id").to_pylist()


def test_sigkill_of_a_worker_child_loses_no_rows(redis_server: RedisService,
                                                 fast_dynamo: EndpointProcess,
                                                 entities_file: Path, reference: pa.Table,
                                                 tmp_path: Path) -> None:
    with fleet(redis_server, fast_dynamo.url, shard_size=10_000) as workers:
        worker = workers.start_worker(concurrency=2)
        out = tmp_path / "job.parquet"
        job = run_job(workers, entities_file, out)
        wait_for_progress(job, 0.1)
        victim = freeze_mid_shard(job)
        assert victim in workers.children(worker)
        os.kill(victim, signal.SIGKILL)
        status = job.wait(timeout=240, progress=False)
        assert "signal 9" in workers.log_text()
        assert (status.summary or {})["redelivered_shards"] >= 1
    table = pq.read_table(out)
    assert table.num_rows == ENTITIES
    assert table.equals(reference)


def test_sigkill_of_a_whole_worker_instance_loses_no_rows(redis_server: RedisService,
                                                          fast_dynamo: EndpointProcess,
                                                          entities_file: Path,
                                                          reference: pa.Table,
                                                          tmp_path: Path) -> None:
    # A machine vanishes: its shards stay unacknowledged in Redis until the visibility
    # timeout, then the surviving instance picks them up.
    with fleet(redis_server, fast_dynamo.url, shard_size=10_000, visibility_timeout_s=8,
               shard_soft_time_limit_s=5, shard_time_limit_s=6,
               redelivery_check_s=1) as workers:
        doomed = workers.start_worker(concurrency=1, name="doomed")
        workers.start_worker(concurrency=1, name="survivor")
        out = tmp_path / "job.parquet"
        job = run_job(workers, entities_file, out)
        freeze_mid_shard(job, "doomed@", group=doomed.pid)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        status = job.wait(timeout=240, progress=False)
    # The shard the doomed instance was reading when it died ran again on the survivor.
    assert (status.summary or {})["redelivered_shards"] >= 1
    table = pq.read_table(out)
    assert table.num_rows == ENTITIES
    assert table.equals(reference)


def test_rows_stay_in_redis_without_output(redis_server: RedisService,
                                           fast_dynamo: EndpointProcess, entities_file: Path,
                                           reference: pa.Table, tmp_path: Path) -> None:
    with fleet(redis_server, fast_dynamo.url, shard_size=50_000) as workers:
        workers.start_worker(concurrency=2)
        job = run_job(workers, entities_file, None)
        job.wait(timeout=240, progress=False)
        tables = list(job.tables())
        assert pa.concat_tables(tables).equals(reference)
        fetched = tmp_path / "fetched.parquet"
        proc = subprocess.run([sys.executable, "-m", "featurepull", "fetch", job.id, "--output",
                               str(fetched), "--redis-url", workers.redis_url],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert pq.read_table(fetched).equals(reference)
        status = subprocess.run([sys.executable, "-m", "featurepull", "status", job.id,
                                 "--json", "--redis-url", workers.redis_url],
                                capture_output=True, text=True, timeout=60)
        assert json.loads(status.stdout)["state"] == "succeeded"
        assert job.delete() > 0
        with pytest.raises(KeyError):
            job.status()


def test_a_failing_shard_fails_the_job_and_writes_nothing(redis_server: RedisService,
                                                          tmp_path: Path,
                                                          entities_file: Path) -> None:
    from featurepull.bench.endpoint import start_endpoint

    with (start_endpoint(drivers=1000, table="demo.driver_stats", throttle_rate=1.0) as always,
          fleet(redis_server, always.url, shard_size=50_000) as workers):
        workers.start_worker(concurrency=2)
        out = tmp_path / "never.parquet"
        job = run_job(workers, entities_file, out, dynamodb={"retry_deadline_s": 0.5})
        with pytest.raises(JobFailed, match=r"failed: shard \d+: .* keys of table "
                                            r"demo.driver_stats"):
            job.wait(timeout=120, progress=False)
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir()] == []


def test_another_celery_app_starts_a_job_by_name(redis_server: RedisService,
                                                 fast_dynamo: EndpointProcess,
                                                 entities_file: Path, reference: pa.Table,
                                                 tmp_path: Path) -> None:
    # A scoring app that shares the broker knows only the task name and its JSON arguments;
    # the entities travel by reference (here a Redis key holding the Parquet bytes).
    from celery import Celery

    with fleet(redis_server, fast_dynamo.url, shard_size=50_000) as workers:
        workers.start_worker(concurrency=2)
        workers.redis().set("featurepull:input:scoring", entities_file.read_bytes())
        scoring = Celery("scoring", broker=workers.redis_url, backend=workers.redis_url)
        scoring.conf.update(task_serializer="json", accept_content=["json"],
                            result_accept_content=["json"])
        out = tmp_path / "scored.parquet"
        started = scoring.send_task(
            "featurepull.submit_job", queue=workers.queue,
            args=[{"table": "driver_stats", "features": list(FEATURES),
                   "entities": "redis-key:featurepull:input:scoring", "output": str(out)}])
        answer = started.get(timeout=120)
        assert answer["rows"] == ENTITIES and answer["shards"] == 4
        Job(answer["job_id"], workers.settings()).wait(timeout=240, progress=False)
        assert pq.read_table(out).equals(reference)
        refused = scoring.send_task("featurepull.submit_job", queue=workers.queue,
                                    args=[{"table": "driver_stats", "features": ["conv_rate"],
                                           "entities": "redis-key:featurepull:input:missing"}])
        with pytest.raises(Exception, match="no such Redis key"):
            refused.get(timeout=60)
        scoring.close()


# With an output, a job's keys are staged beside it and removed at the cancel (a shard that
# did not look at the job's state would find none); without one they stay in Redis, and only
# the shard's own look at the job's state keeps it from reading.
@pytest.mark.parametrize("with_output", [True, False], ids=["output", "rows-in-redis"])
def test_cancel_stops_the_remaining_shards(redis_server: RedisService,
                                           fast_dynamo: EndpointProcess, entities_file: Path,
                                           tmp_path: Path, with_output: bool) -> None:
    with fleet(redis_server, fast_dynamo.url, shard_size=5_000) as workers:
        workers.start_worker(concurrency=1)
        out = tmp_path / "cancelled.parquet" if with_output else None
        keys_before = fast_dynamo.stats()["keys"]
        job = run_job(workers, entities_file, out)
        wait_for_progress(job, 0.05)
        assert job.cancel()
        started = set(job.store.owners(job.id))  # shards that began reading before the cancel
        with pytest.raises(JobFailed, match="cancelled"):
            job.wait(timeout=60, progress=False)
        # The worker takes every remaining message off the queue and skips it. A message
        # stays in kombu's unacked hash until its task has ended (acks_late): when both are
        # empty, every shard's task has run.
        queue = workers.redis()
        wait_until(lambda: not (queue.llen(workers.queue) or queue.hlen("unacked")),
                   "empty queue and unacked hash", 60)
        # No shard began after the cancel. The one process may have checked the job's state
        # just before the cancel and recorded its shard's start just after the look above:
        # that one shard began before the cancel too.
        began = set(job.store.owners(job.id))
        assert began >= started and len(began - started) <= 1
        assert len(began) < 40  # 40 shards in all
        # At the endpoint: no key of a shard that had not begun before the cancel was asked
        # for (each shard has 5,000 keys; a running one stops at its next progress check).
        assert fast_dynamo.stats()["keys"] - keys_before <= 5_000 * len(began)
        assert out is None or not out.exists()
