"""Job.wait sees a job's end at once: it blocks on the end's announcement (the ``wake`` entry
that the transaction ending the job adds) instead of sleeping between polls. Each wait here
polls every 600 s and gives up at its own timeout: only the announcement can end it sooner
(its client's socket timeout is long enough not to cap the block). Real redis-server; the
fleet test runs real prefork workers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from featurepull.bench.endpoint import EndpointProcess
from featurepull.client import Job, JobFailed, JobStatus, submit
from featurepull.config import Settings, load_settings
from featurepull.local import RedisService
from featurepull.tasks.store import JobStore, connect
from tests.conftest import wait_until
from tests.tasks.conftest import JOB_FEATURES, Fleet, fleet

NEVER_S = 600.0  # the waits' poll interval: longer than the test's time limit
WAIT_S = 60.0  # the waits' own timeout (TimeoutError) when nothing wakes them
TTL = 1_000


class BeforeTheBlock(redis.Redis):
    """A client that runs ``then`` once, right before its first XREAD reaches Redis: the job
    ends between the wait's poll (it was not ended) and its block."""

    then: Callable[[], Any] | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] == "XREAD" and self.then is not None:
            then, self.then = self.then, None
            then()
        return super().execute_command(*args, **options)


def job_on(client: redis.Redis, settings: Settings) -> Job:
    store = JobStore(client, TTL)
    job_id = store.new_job_id()
    store.create(job_id, {"table": "t"}, iter([pa.table({"driver_id": [1, 2]})]))
    return Job(job_id, settings, store)


def test_a_job_that_ends_just_before_the_wait_blocks_is_seen_at_once(
        redis_server: RedisService) -> None:
    settings = load_settings(overrides={"redis_url": redis_server.url})
    client = BeforeTheBlock.from_url(redis_server.url, socket_timeout=3 * NEVER_S)
    job = job_on(client, settings)
    client.then = lambda: job.cancel()
    with pytest.raises(JobFailed, match=f"^job {job.id} cancelled: cancelled by request$"):
        job.wait(timeout=WAIT_S, progress=False, poll_s=NEVER_S, no_worker_after_s=NEVER_S)
    assert client.then is None


def test_a_job_ended_without_the_announcement_is_still_seen_by_polling(
        redis_server: RedisService) -> None:
    # As by a worker of a release before it: the state, and no wake entry.
    settings = load_settings(overrides={"redis_url": redis_server.url})
    client = BeforeTheBlock.from_url(redis_server.url, socket_timeout=30)
    job = job_on(client, settings)
    meta = f"featurepull:job:{job.id}:meta"
    client.then = lambda: client.hset(meta, mapping={"state": "succeeded", "summary": "{}"})
    status = job.wait(timeout=WAIT_S, progress=False, poll_s=0.05)
    assert (status.state, status.summary) == ("succeeded", {})
    assert client.exists(f"featurepull:job:{job.id}:wake") == 0


def blocked_waiters(workers: Fleet) -> int:
    """Clients of the fleet's db blocked in XREAD now."""
    return sum(1 for c in workers.redis().client_list()
               if c["cmd"] == "xread" and "b" in c["flags"] and c["db"] == str(workers.db))


def two_waiters(workers: Fleet, job: Job, pool: ThreadPoolExecutor) -> list[Any]:
    """Two clients waiting on ``job``, each with its own connection, once both block."""
    def wait() -> JobStatus:
        store = JobStore(connect(workers.redis_url, timeout_s=3 * NEVER_S), TTL)
        return Job(job.id, job.settings, store).wait(
            timeout=WAIT_S, progress=False, poll_s=NEVER_S, no_worker_after_s=NEVER_S)
    waits = [pool.submit(wait) for _ in range(2)]
    wait_until(lambda: blocked_waiters(workers) == 2 or any(w.done() for w in waits),
               "two waiters blocked")
    return waits


def write_ids(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(range(count), pa.int64())}), path)
    return path


def test_two_waiters_wake_at_a_cancel_and_at_the_finishers_end(
        redis_server: RedisService, fast_dynamo: EndpointProcess, tmp_path: Path) -> None:
    entities = write_ids(tmp_path, 2_000)
    with fleet(redis_server, fast_dynamo.url, shard_size=500) as workers, \
            ThreadPoolExecutor(2) as pool:
        # No worker yet: both jobs wait queued, and both waiters block.
        cancelled = submit("driver_stats", JOB_FEATURES, str(entities), None,
                           settings=workers.settings())
        waits = two_waiters(workers, cancelled, pool)
        assert cancelled.cancel() is True
        for waited in waits:
            with pytest.raises(JobFailed, match="cancelled by request"):
                waited.result()
        out = tmp_path / "out.parquet"
        job = submit("driver_stats", JOB_FEATURES, str(entities), str(out),
                     settings=workers.settings())
        waits = two_waiters(workers, job, pool)
        workers.start_worker(concurrency=2)
        statuses = [waited.result() for waited in waits]
    assert [s.state for s in statuses] == ["succeeded", "succeeded"]
    assert statuses[0].summary == statuses[1].summary
    assert statuses[0].summary is not None and statuses[0].summary["rows_written"] == 2_000
    assert pq.read_table(out).column("driver_id").to_pylist() == list(range(2_000))
