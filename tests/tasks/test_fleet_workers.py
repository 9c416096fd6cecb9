"""Shards cut for the fleet, end to end: real prefork workers record their pools in Redis at
worker_ready, a submit to their queue cuts a job into the shards their processes call for,
and the output file is byte for byte the one shards of jobs.shard_size write. The fleet's
jobs.shard_size is 100 and jobs.max_shard_size 500, so small jobs show the rule."""

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
from click.testing import CliRunner

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.cli import main
from featurepull.client import Job, JobFailed, submit
from featurepull.config import Settings
from featurepull.dynamo.plan import CHECKED_KEYS
from featurepull.local import MotoService, RedisService
from featurepull.tasks.fleet import fleet_processes, record_pool
from tests.conftest import wait_until
from tests.faultproxy import FaultPlan, FaultProxy
from tests.tasks.conftest import DRIVERS, fleet, mixed_scores_table

pytestmark = pytest.mark.slow  # starts worker fleets

ENTITIES = 3_000
SMALLEST, LARGEST = 100, 500


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Known drivers, 10% unknown ids and some repeats, shuffled."""
    rng = random.Random(5)
    ids = rng.sample(range(DRIVERS), ENTITIES - 450) + [DRIVERS + i for i in range(300)]
    ids += rng.choices(ids, k=ENTITIES - len(ids))
    rng.shuffle(ids)
    path = tmp_path_factory.mktemp("entities") / "drivers.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


def run_job(settings: Settings, entities: Path, output: Path) -> Job:
    job = submit("driver_stats", list(FEATURES), str(entities), str(output), settings=settings)
    assert job.wait(timeout=120, progress=False).state == "succeeded"
    return job


def cut(job: Job) -> tuple[int | None, int, object]:
    """The job's shard size, shard count and the fleet's processes as it recorded them."""
    meta = job.store.meta(job.id)
    return meta.shard_size, meta.shards, (meta.request.model_extra or {}).get("fleet_processes")


def as_before(settings: Settings) -> Settings:
    """The same settings with every shard of jobs.shard_size (what a job was cut into
    before shards were sized for the fleet)."""
    before = settings.model_copy(deep=True)
    before.jobs.max_shard_size = before.jobs.shard_size
    return before


def test_a_worker_records_its_pool_and_a_job_is_cut_for_it(
        redis_server: RedisService, fast_dynamo: EndpointProcess, entities: Path,
        tmp_path: Path) -> None:
    with fleet(redis_server, fast_dynamo.url, shard_size=SMALLEST,
               max_shard_size=LARGEST) as workers:
        proc = workers.start_worker(concurrency=2)
        # Recorded before the worker answered its first ping (start_worker waited for one).
        assert fleet_processes(workers.redis(), workers.queue) == 2
        settings = workers.settings()
        for name in ("job.parquet", "job.csv"):
            job = run_job(settings, entities, tmp_path / name)
            # 3,000 entities for 4 shards a process: 375, down to a multiple of 100.
            assert cut(job) == (300, 10, 2)
            assert job.shard_plan() == {"shard_size": 300, "shard_unit": SMALLEST,
                                        "fleet_processes": 2}
            before = run_job(as_before(settings), entities, tmp_path / f"before-{name}")
            assert cut(before) == (SMALLEST, 30, None) and before.shard_plan() is None
            assert (tmp_path / name).read_bytes() == (tmp_path / f"before-{name}").read_bytes()
        assert pq.ParquetFile(tmp_path / "job.parquet").num_row_groups == 30
        shown = CliRunner().invoke(main, ["status", job.id, "--redis-url", workers.redis_url])
        assert shown.stdout.splitlines()[2] == (
            "shards of 300 entities (2 pool processes on the queue, at least 4 shards each; "
            "jobs.shard_size 100)")
        shown = CliRunner().invoke(main, ["status", job.id, "--json", "--redis-url",
                                          workers.redis_url])
        assert json.loads(shown.stdout)["shard_plan"] == job.shard_plan()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        # A worker that stops removes its record: a job is then cut as before.
        assert fleet_processes(workers.redis(), workers.queue) == 0
        assert workers.redis().keys(f"featurepull:fleet:{workers.queue}*") == []


def test_absent_or_stale_records_fall_back_and_two_workers_add_up(
        redis_server: RedisService, fast_dynamo: EndpointProcess, entities: Path,
        tmp_path: Path) -> None:
    with fleet(redis_server, fast_dynamo.url, shard_size=SMALLEST,
               max_shard_size=LARGEST) as workers:
        settings = workers.settings()
        client = workers.redis()
        # A worker killed without its shutdown: its record expired, its name is left.
        record_pool(client, "killed@host", [workers.queue], 8)
        client.delete(f"featurepull:fleet:{workers.queue}:killed@host")
        # No worker yet (or only workers of a version before pool records, which record
        # nothing): the job is cut in shards of jobs.shard_size, and says none was seen.
        first = submit("driver_stats", list(FEATURES), str(entities),
                       str(tmp_path / "first.parquet"), settings=settings)
        assert cut(first) == (SMALLEST, ENTITIES // SMALLEST, 0)
        shown = CliRunner().invoke(main, ["status", first.id, "--redis-url", workers.redis_url])
        assert shown.stdout.splitlines()[-1] == (
            "shards of 100 entities (no worker had recorded its pool on the queue; "
            "jobs.shard_size 100)")
        workers.start_worker(concurrency=2, name="machine-a")
        workers.start_worker(concurrency=1, name="machine-b")
        assert first.wait(timeout=120, progress=False).state == "succeeded"
        assert fleet_processes(client, workers.queue) == 3
        job = run_job(settings, entities, tmp_path / "job.parquet")
        assert cut(job) == (200, 15, 3)  # 3,000 for 4 shards of each of 3 processes: 250
        assert (tmp_path / "job.parquet").read_bytes() == (
            tmp_path / "first.parquet").read_bytes()


def test_a_shard_past_its_soft_time_limit_names_the_setting_that_sized_it(
        redis_server: RedisService, fast_dynamo: EndpointProcess, entities: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every BatchGetItem is held unanswered: the first shard runs past its 1 s soft limit
    # in its read, whatever its size. Shards sized for the fleet grow with
    # jobs.max_shard_size, not jobs.shard_size: the message names the one to lower.
    with (FaultProxy(fast_dynamo.url, FaultPlan(hold=True)) as proxy,
          fleet(redis_server, proxy.url, shard_size=SMALLEST, max_shard_size=LARGEST,
                shard_soft_time_limit_s=1, shard_time_limit_s=30) as workers):
        workers.start_worker(concurrency=1)
        settings = workers.settings()
        try:
            for using, size, advice in (
                    (settings, LARGEST, "the job's shards of 500 entities were sized for its "
                     "fleet: lower jobs.max_shard_size (not below jobs.shard_size, 100) or "
                     "raise jobs.shard_soft_time_limit_s"),
                    (as_before(settings), SMALLEST,
                     "lower jobs.shard_size or raise jobs.shard_soft_time_limit_s")):
                output = tmp_path / f"{size}.parquet"
                job = submit("driver_stats", list(FEATURES), str(entities), str(output),
                             settings=using)
                assert job.store.meta(job.id).shard_size == size
                with pytest.raises(JobFailed) as failed:
                    job.wait(timeout=120, progress=False)
                assert str(failed.value) == (f"job {job.id} failed: shard 0 ran past its soft "
                                             f"time limit (1s); {advice}")
                assert job.status().error_kind == "failed"
                announced(job)
            # A scan job's scan task is sized by jobs.scan_task_bytes (and its keys), not by
            # its shards: every Scan page answers after 2 s, past the task's soft limit.
            proxy.plan = FaultPlan(scan=True, latency_s=2.0)
            job = submit("driver_stats", list(FEATURES), str(entities),
                         str(tmp_path / "scan.parquet"), settings=settings,
                         dynamodb={"read_mode": "scan"})
            with pytest.raises(JobFailed) as failed:
                job.wait(timeout=120, progress=False)
            message = str(failed.value)
            assert message.startswith(f"job {job.id} failed: scan task ") and message.endswith(
                " ran past its soft time limit (1s); lower jobs.scan_task_bytes (a scan task "
                "scans at least that much of the table, and 100 bytes per unique key of its "
                "job), read the job with read_mode batch-get, or raise "
                "jobs.shard_soft_time_limit_s"), message
            announced(job)
            # A shard past its soft limit while its DescribeTable runs (on a thread, while
            # its keys are hashed): the limit's message, not the describe's interrupted call.
            # The job is stored as an older submitter stored it, without the key schema it
            # checked (one that carries it describes nothing in the worker).
            proxy.plan = FaultPlan(describe_latency_s=3.0)
            with monkeypatch.context() as patched:
                patched.setattr("featurepull.tasks.create._carried", lambda plan: {})
                job = submit("driver_stats", list(FEATURES), str(entities),
                             str(tmp_path / "described.parquet"), settings=as_before(settings))
            assert CHECKED_KEYS not in job.store.meta(job.id).request.model_dump()
            with pytest.raises(JobFailed) as failed:
                job.wait(timeout=120, progress=False)
            assert str(failed.value) == (f"job {job.id} failed: shard 0 ran past its soft "
                                         "time limit (1s); lower jobs.shard_size or raise "
                                         "jobs.shard_soft_time_limit_s")
            announced(job)
        finally:
            proxy.release()
        assert list(tmp_path.iterdir()) == []  # no output, no part left beside it


def test_a_feature_of_two_types_fails_the_job_naming_its_entity_rows(
        redis_server: RedisService, moto_server: MotoService, ddb: Any,
        tmp_path: Path) -> None:
    # Driver 250's score is a double, driver 350's a string. Shards sized for the fleet (4
    # of 200 on one process) hold both in shard 1, whose table cannot type the column;
    # shards of 100 hold one each, whose schemas the finisher cannot unify. Either way: a
    # message naming the column, the rows (in the job) and the fix; exit 2; nothing left.
    name = mixed_scores_table(ddb)
    entities = tmp_path / "ids.csv"
    entities.write_text("driver_id\n" + "".join(f"{i}\n" for i in range(800)))
    with fleet(redis_server, moto_server.url, shard_size=SMALLEST,
               max_shard_size=LARGEST) as workers:
        workers.start_worker(concurrency=1)
        for largest, error in (
                (LARGEST, "shard 1: entity rows 201-400: feature column 'score' mixes float "
                          "(row 251) and str (row 351) (Could not convert 'high' with type "
                          "str: tried to convert to double); an Arrow or Parquet column "
                          "holds one type, so make the values one type or write .jsonl or "
                          ".csv with `featurepull pull` (a job's shards are staged as "
                          "Parquet)"),
                (SMALLEST, "writing the output failed: column 'score' is string in schema 4 "
                           "but double in schemas 1-3 (Unable to merge: Field score has "
                           "incompatible types: double vs string); a column needs one type "
                           "in every table, so convert its values to one type where the rows "
                           "are made")):
            proc = subprocess.run(
                [sys.executable, "-m", "featurepull", "submit", "--table", name,
                 "--features", "score", "--entities", str(entities), "--output",
                 str(tmp_path / "out.parquet"), "--wait"],
                capture_output=True, text=True, timeout=120,
                env={**workers.env, "FEATUREPULL_JOBS__MAX_SHARD_SIZE": str(largest)})
            assert proc.returncode == 2, proc.stderr
            last = proc.stderr.splitlines()[-1]
            assert last.startswith("featurepull: error: job ") and last.endswith(
                f" failed: {error}"), last
            announced(Job(last.split()[3], workers.settings()))
            assert [path.name for path in tmp_path.iterdir()] == ["ids.csv"]


def announced(job: Job) -> None:
    """Wait until the failed job's end is announced: its worker removed what the job staged
    (after recording the failure, which a waiting submit may see first)."""
    wait_until(lambda: job.store.end_announced(job.id), f"the end of job {job.id} announced")
