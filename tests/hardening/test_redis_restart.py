"""redis-server killed (SIGKILL) and restarted on the same port while a job runs.

Without persistence the job's keys are gone: Job.wait ends with JobFailed saying so, no output
file appears, and the workers carry on with the next job. (With an append-only file the job
usually completes — shards wait for Redis before retrying — but a run was seen to stall past
60 s, so that case is not yet claimed here; see issue 7.)
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import EndpointProcess
from featurepull.client import Job, JobFailed
from featurepull.local import RedisService, start_redis
from tests.hardening._util import run_job, write_entities
from tests.tasks.conftest import fast_dynamo, fleet  # noqa: F401

ENTITIES = 60_000


def _kill(server: RedisService) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)


def _wait_running(job: Job, rows: int) -> None:
    deadline = time.monotonic() + 30
    while job.status().rows_done < rows:
        assert time.monotonic() < deadline, job.status().line()
        time.sleep(0.02)


def test_restart_without_persistence_fails_the_wait_clearly(
        fast_dynamo: EndpointProcess, tmp_path: Path) -> None:  # noqa: F811
    servers = [start_redis()]
    port = servers[0].port
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
