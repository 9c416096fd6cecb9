"""redis-server killed (SIGKILL) and restarted on the same port while a job runs.

Without persistence the job's keys are gone: Job.wait ends with JobFailed saying so, no output
file appears, and the workers carry on with the next job. With an append-only file the job's
keys and the queue survive: the shard that was reading waits for Redis, is retried, and the
job completes with every row.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import EndpointProcess
from featurepull.client import Job, JobFailed
from featurepull.local import (
    RedisService,
    _port_open,
    free_port,
    redis_server_binary,
    start_redis,
)
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


def _start_aof_redis(port: int, workdir: Path) -> RedisService:
    """A redis-server with an append-only file in ``workdir`` (survives a SIGKILL)."""
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir),
         "--logfile", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True)
    deadline = time.monotonic() + 20
    while not _port_open(port):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return RedisService("redis-server", proc, port, log)


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


def test_restart_with_appendonly_completes_the_job(
        fast_dynamo: EndpointProcess, tmp_path: Path) -> None:  # noqa: F811
    workdir = Path(tempfile.mkdtemp(prefix="featurepull-aof-", dir=tmp_path))
    port = free_port()
    servers = [_start_aof_redis(port, workdir)]
    out = tmp_path / "job.parquet"
    try:
        # A message the worker had reserved (prefetched) when Redis died stays in Redis'
        # unacked set and comes back only after the visibility timeout (default 1 h): short
        # here, so such a shard is redelivered within the test.
        with fleet(servers[0], fast_dynamo.url, shard_size=5_000, shard_soft_time_limit_s=8,
                   shard_time_limit_s=10, visibility_timeout_s=12,
                   redelivery_check_s=1) as workers:
            workers.start_worker(concurrency=1)
            ids = list(range(ENTITIES))
            entities = write_entities(tmp_path / "e.parquet", ids)
            job = run_job(workers, entities, out)
            _wait_running(job, 10_000)
            _kill(servers[0])
            time.sleep(3.0)  # longer than Celery's retry-publish policy (~0.6 s)
            servers.append(_start_aof_redis(port, workdir))
            status = job.wait(timeout=60, progress=False)
            assert status.state == "succeeded"
            print("redelivered shards:", (status.summary or {})["redelivered_shards"],
                  "seconds:", (status.summary or {})["seconds"])
            table = pq.read_table(out)
            assert table.column("driver_id").to_pylist() == ids
            assert table.column("event_timestamp").null_count == 0  # every driver exists
            assert (status.summary or {})["rows_written"] == ENTITIES
    finally:
        for server in servers:
            server.stop()
