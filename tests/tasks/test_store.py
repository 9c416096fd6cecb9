"""The job store on the real redis-server: a job's record and state as typed values over the
same stored strings, and locks that an owner releases only while it still holds them, even
when another owner takes the lock over between reading and deleting it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from featurepull.local import RedisService
from featurepull.tasks.store import PREFIX, SCHEDULE_PREFIX, JobState, JobStore

# In-process and fast: run before the job tests by scripts/mutation.sh.
pytestmark = pytest.mark.mutation_first


class TakeoverDuringRelease(redis.Redis):
    """A client that lets another owner take the lock at ``key`` over (as when the first
    owner's TTL ran out) in the middle of the first release that touches it: right after a
    GET — where a GET-then-DEL release loses the race — or right before a script, which
    Redis runs whole. The interleaving is made certain instead of left to timing."""

    key = ""
    take_over: Callable[[], None] | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        fire = self.take_over if self.key in args else None
        if fire is not None:
            self.take_over = None  # once
        if fire is not None and args[0] != "GET":
            fire()
        result = super().execute_command(*args, **options)
        if fire is not None and args[0] == "GET":
            fire()
        return result


@pytest.fixture
def client(redis_server: RedisService) -> Iterator[TakeoverDuringRelease]:
    connection = TakeoverDuringRelease.from_url(redis_server.url)
    yield connection
    connection.close()


def test_an_owner_releases_its_own_finisher_lock(redis_server: RedisService) -> None:
    store = JobStore(redis.Redis.from_url(redis_server.url), ttl_s=60)
    job = store.new_job_id()
    assert store.lock_finish(job, "a", 60)
    assert not store.lock_finish(job, "b", 60)
    assert not store.unlock_finish(job, "b")  # not b's to release
    assert store.unlock_finish(job, "a")
    assert store.lock_finish(job, "b", 60)
    assert store.unlock_finish(job, "b")


def test_a_finisher_lock_taken_over_is_not_released_by_the_old_owner(
        redis_server: RedisService, client: TakeoverDuringRelease) -> None:
    plain = JobStore(redis.Redis.from_url(redis_server.url), ttl_s=60)
    job = plain.new_job_id()
    key = f"{PREFIX}{job}:finish"
    assert plain.lock_finish(job, "old", 60)

    def new_owner_takes_over() -> None:
        plain.redis.delete(key)  # the old owner's TTL ran out
        assert plain.lock_finish(job, "new", 60)

    client.key, client.take_over = key, new_owner_takes_over
    store = JobStore(client, ttl_s=60)
    assert not store.unlock_finish(job, "old")
    assert plain.redis.get(key) == b"new"
    assert not plain.lock_finish(job, "third", 60)  # still held: by the new owner
    assert plain.unlock_finish(job, "new")


def test_a_schedule_lock_taken_over_is_not_released_by_the_old_owner(
        redis_server: RedisService, client: TakeoverDuringRelease) -> None:
    plain = JobStore(redis.Redis.from_url(redis_server.url), ttl_s=60)
    name = f"s{uuid.uuid4().hex[:8]}"
    key = f"{SCHEDULE_PREFIX}{name}:lock"
    assert plain.lock_schedule(name, "tick-1", 60)

    def next_tick_takes_over() -> None:
        plain.redis.delete(key)
        assert plain.lock_schedule(name, "tick-2", 60)

    client.key, client.take_over = key, next_tick_takes_over
    store = JobStore(client, ttl_s=60)
    assert not store.unlock_schedule(name, "tick-1")
    assert plain.redis.get(key) == b"tick-2"
    assert plain.unlock_schedule(name, "tick-2")


def test_the_record_is_typed_over_the_same_stored_strings(redis_server: RedisService) -> None:
    store = JobStore(redis.Redis.from_url(redis_server.url), ttl_s=60)
    job = store.new_job_id()
    spec = {"request": {"output": "s3://b/out.parquet", "notify": {"task": "t", "queue": "q"}},
            "table": "demo.drivers", "shard_size": 2}
    store.create(job, spec, iter([]))
    meta = store.meta(job)
    assert meta.state is JobState.QUEUED and not meta.terminal
    assert (meta.table, meta.shard_size, meta.output) == ("demo.drivers", 2, "s3://b/out.parquet")
    assert meta.notify == {"task": "t", "queue": "q"}
    assert store.redis.hget(f"{PREFIX}{job}:meta", "state") == b"queued"
    assert store.fail(job, "boom", "input")
    failed = store.meta(job)
    assert failed.state is JobState.FAILED and failed.terminal and failed.error_kind == "input"
    assert store.redis.hget(f"{PREFIX}{job}:meta", "state") == b"failed"
    assert not store.cancel(job)  # an ended job stays as it ended
    assert store.state(job) is JobState.FAILED
    store.delete(job)
