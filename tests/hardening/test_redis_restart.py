"""redis-server killed (SIGKILL) and restarted on the same port while a job runs.

Without persistence the job's keys are gone: Job.wait ends with JobFailed saying so, no output
file appears, and the workers carry on with the next job. With an append-only file (fsync
always) the job's keys and the queue survive: the shard that was running waits for Redis, is
retried, and the job completes with exactly the rows of an undisturbed read.

That case once stalled past 60 s: a shard message was acked though its shard never finished,
in two ways. Killed while publishing its progress event, the shard got kombu's
OperationalError, not redis-py's ConnectionError, and was failed instead of retried; killed
while Celery stored its STARTED state, before the body ran, the task failed outside our code.
Either way the failure could not be written to the dead Redis, Celery acked the message
(acks_late acks failures), and the job waited forever for the shard. Both now wait for Redis
and retry (REDIS_OUTAGE_ERRORS in featurepull.tasks.celery_tasks; result_backend_always_retry).

One window is kombu's and stays: a message that BRPOP took in the instant before Redis died,
before kombu recorded it as unacknowledged, is gone (celery/kombu#305). Redis is therefore
killed here while a shard runs, not in the gap between two shards.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kombu.exceptions import OperationalError

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job, JobFailed
from featurepull.config import Settings
from featurepull.local import RedisService, start_redis
from featurepull.pull import PullRequest, pull
from featurepull.tasks.celery_tasks import REDIS_OUTAGE_ERRORS
from featurepull.worker.app import producer_app
from tests.conftest import refused_port, service_port
from tests.hardening._util import run_job, write_entities
from tests.tasks.conftest import fast_dynamo, fleet, freeze_mid_shard  # noqa: F401

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

ENTITIES = 60_000


def _kill(server: RedisService) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)


def _wait_running(job: Job, rows: int) -> None:
    deadline = time.monotonic() + 30
    while (status := job.status()).rows_done < rows:
        assert status.state in ("queued", "running"), status.line()
        assert time.monotonic() < deadline, status.line()
        time.sleep(0.02)


def test_restart_without_persistence_fails_the_wait_clearly(
        fast_dynamo: EndpointProcess, tmp_path: Path) -> None:  # noqa: F811
    port = service_port()  # below the ephemeral range: nothing takes it while Redis is down
    servers = [start_redis(port=port)]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "job.parquet"
    try:
        with fleet(servers[0], fast_dynamo.url, shard_size=5_000) as workers:
            workers.start_worker(concurrency=1)
            entities = write_entities(tmp_path / "e.parquet", list(range(ENTITIES)))
            job = run_job(workers, entities, out)
            _wait_running(job, 10_000)
            _kill(servers[0])
            time.sleep(1.0)
            servers.append(start_redis(port=port))
            started = time.monotonic()
            with pytest.raises(JobFailed, match=r"is gone from Redis.*restarted without"):
                job.wait(timeout=60, progress=False)
            assert time.monotonic() - started < 30
            assert list(out_dir.iterdir()) == []  # no file, no leftover temporary file
            # The worker reconnected and runs the next job on the fresh Redis.
            assert all(proc.poll() is None for proc in workers.workers)
            small = write_entities(tmp_path / "small.parquet", list(range(1_000)))
            status = run_job(workers, small, out).wait(timeout=60, progress=False)
            assert status.state == "succeeded"
            assert pq.read_table(out).num_rows == 1_000
    finally:
        for server in servers:
            server.stop()



def test_restart_with_appendonly_completes_the_job(
        fast_dynamo: EndpointProcess, tmp_path: Path) -> None:  # noqa: F811
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    port = service_port()  # below the ephemeral range: nothing takes it while Redis is down
    servers = [start_redis(port=port, appendonly=True, workdir=redis_dir)]
    ids = list(range(ENTITIES))
    entities = write_entities(tmp_path / "e.parquet", ids)
    out = tmp_path / "job.parquet"
    try:
        # A message whose ack was lost with Redis stays in kombu's unacked hash until the
        # visibility timeout (1 h by default): short here, so it comes back within the test.
        with fleet(servers[0], fast_dynamo.url, shard_size=5_000, shard_soft_time_limit_s=8,
                   shard_time_limit_s=10, visibility_timeout_s=12,
                   redelivery_check_s=1) as workers:
            truth = tmp_path / "truth.parquet"
            pull(PullRequest("driver_stats", list(FEATURES)), str(entities), str(truth),
                 workers.settings())
            worker = workers.start_worker(concurrency=1)
            job = run_job(workers, entities, out)
            # Redis dies inside a shard (it reads DynamoDB for ~0.1 s here), not between
            # two: the worker is frozen mid-shard for the kill, and goes on into the outage.
            freeze_mid_shard(job, group=worker.pid, first=2)
            _kill(servers[0])
            os.killpg(worker.pid, signal.SIGCONT)
            time.sleep(1.0)  # past kombu's publish retries (~0.6 s): publishing fails too
            servers.append(start_redis(port=port, appendonly=True, workdir=redis_dir))
            status = job.wait(timeout=120, progress=False)
            assert status.state == "succeeded"
            assert (status.summary or {})["rows_written"] == ENTITIES
            table = pq.read_table(out)
            assert table.column("driver_id").to_pylist() == ids
            assert table.equals(pq.read_table(truth))
    finally:
        for server in servers:
            server.stop()


def test_a_publish_to_a_dead_redis_is_an_outage() -> None:
    # What a task sends to the broker (progress events, finish_job, its retry) fails with
    # kombu's OperationalError, not redis-py's ConnectionError: both must mean an outage.
    # (ignore_result: in a worker's task, send_task does not subscribe to the result either.)
    with refused_port() as port:
        app = producer_app(Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
        with pytest.raises(REDIS_OUTAGE_ERRORS) as caught:
            app.send_task("featurepull.finish_job", args=["no-job"], queue="nowhere",
                          ignore_result=True)
    assert isinstance(caught.value, OperationalError)
