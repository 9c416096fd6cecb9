"""The job store on the real redis-server: a job's record and state as typed values over the
same stored strings, and locks that an owner releases only while it still holds them, even
when another owner takes the lock over between reading and deleting it. Then its signs of
life: the ``alive`` key every step sets (its value, and the idle limit as its TTL), the
submitter's key and the ``submitting`` field, the active-jobs set, the watchdog's check
(``stalled``: each of its answers), ``snapshot``, ``note_published`` and the scan task keys.
The workers and the submitter make the same calls; these are the tests the mutation runs
(scripts/mutation.sh) can see."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest
import redis

from featurepull.local import RedisService
from featurepull.tasks.store import (
    ACTIVE_JOBS,
    PREFIX,
    SCHEDULE_PREFIX,
    JobState,
    JobStore,
    JobStoreError,
    SubmitterGone,
    UnknownJob,
    connect,
    table_from_bytes,
)

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


class InterferingPipeline(redis.client.Pipeline):
    """A pipeline that lets another client write between its WATCHed read and its
    transaction, once (``JobStoreRaced.interfere``)."""

    owner: JobStoreRaced

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        result = super().immediate_execute_command(*args, **options)
        fire = self.owner.interfere
        if fire is not None and args[0] == "HGET":
            self.owner.interfere = None
            fire()
        return result


class JobStoreRaced(redis.Redis):
    """A client whose next state change races another writer: the job's meta changes after
    the change read the state and before its transaction runs (so Redis refuses it)."""

    interfere: Callable[[], None] | None = None

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = InterferingPipeline(self.connection_pool, self.response_callbacks, transaction,
                                   shard_hint)
        pipe.owner = self
        return pipe


@pytest.mark.parametrize(("other_writer", "failed"), [("notes its finisher", True),
                                                      ("cancels the job", False)])
def test_a_state_change_that_races_another_writer_is_tried_again(
        redis_server: RedisService, other_writer: str, failed: bool) -> None:
    plain = JobStore(redis.Redis.from_url(redis_server.url), ttl_s=60)
    job = plain.new_job_id()
    plain.create(job, {}, iter([]))
    raced = JobStoreRaced.from_url(redis_server.url)
    raced.interfere = (lambda: plain.note_finisher(job, "host:1")) if failed else (
        lambda: plain.cancel(job))
    assert JobStore(raced, ttl_s=60).fail(job, "boom") is failed
    assert raced.interfere is None  # the other writer ran in between
    meta = plain.meta(job)
    assert (meta.state, meta.error) == (("failed", "boom") if failed else
                                        ("cancelled", "cancelled by request"))
    raced.close()


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


# --- signs of life -----------------------------------------------------------------------------

TTL = 1_000
IDLE = 300


@pytest.fixture
def store(redis_server: RedisService) -> Iterator[JobStore]:
    """The session's Redis: the jobs a test leaves idle are deleted after it, so that no
    later watchdog check in this process takes them for stalled."""
    store = JobStore(connect(redis_server.url), TTL, idle_s=IDLE)
    before = set(store.active_jobs())
    yield store
    for job_id in set(store.active_jobs()) - before:
        store.delete(job_id)


def key(job_id: str, name: str) -> str:
    return f"featurepull:job:{job_id}:{name}"


def alive(store: JobStore, job_id: str) -> tuple[bytes | None, int]:
    """The job's sign of life: the alive key's value and TTL (-2: no such key)."""
    name = key(job_id, "alive")
    return store.redis.get(name), int(store.redis.ttl(name))


def assert_alive(store: JobStore, job_id: str, what: bytes, ttl: int = IDLE) -> None:
    value, left = alive(store, job_id)
    assert value == what
    assert ttl - 60 < left <= ttl  # slack for a stalled machine


def ids(*values: int) -> pa.Table:
    return pa.table({"driver_id": pa.array(values, pa.int64())})


def opened(store: JobStore, shards: int = 3, submitter: str | None = None,
           submitter_ttl_s: float = 0.0) -> str:
    job_id = store.new_job_id()
    store.open_job(job_id, {"table": "t"}, shards, shards * 2, submitter, submitter_ttl_s)
    return job_id


@pytest.mark.parametrize(("idle_s", "kept"), [(0.2, 1), (0.0, 1), (90.5, 91), (120.0, 120)])
def test_the_idle_limit_is_whole_seconds_and_at_least_one(redis_server: RedisService,
                                                          idle_s: float, kept: int) -> None:
    assert JobStore(connect(redis_server.url), TTL, idle_s).idle_s == kept


def test_the_idle_limit_defaults_to_an_hour(redis_server: RedisService) -> None:
    assert JobStore(connect(redis_server.url), TTL).idle_s == 3_600


def test_open_job_stores_the_record_and_the_submitters_sign_of_life(store: JobStore) -> None:
    before = time.time()
    job_id = opened(store, shards=4, submitter="host-a:12", submitter_ttl_s=7.2)
    raw = store.redis.hgetall(key(job_id, "meta"))
    assert set(raw) == {b"request", b"state", b"shards", b"rows", b"created", b"submitting"}
    assert (raw[b"request"], raw[b"state"], raw[b"shards"], raw[b"rows"], raw[b"submitting"]) \
        == (b'{"table": "t"}', b"queued", b"4", b"8", b"host-a:12")
    assert before <= float(raw[b"created"]) <= time.time()
    assert TTL - 100 < store.redis.ttl(key(job_id, "meta")) <= TTL
    assert store.redis.get(key(job_id, "submitter")) == b"host-a:12"
    assert 0 < store.redis.ttl(key(job_id, "submitter")) <= 8  # 7.2 s rounded up
    assert_alive(store, job_id, b"submitted")
    assert store.redis.zscore(ACTIVE_JOBS, job_id) == float(raw[b"created"])
    assert job_id in store.active_jobs()
    # No keys of shards yet: create_job stores them one by one after the record.
    assert not store.redis.exists(key(job_id, "keys:0"))


def test_a_submitters_sign_of_life_lasts_at_least_a_second(store: JobStore) -> None:
    job_id = opened(store, submitter="h:1", submitter_ttl_s=0.01)
    assert 10 < store.redis.pttl(key(job_id, "submitter")) <= 1000
    store.submitter_alive(job_id, "h:1", 0.2)
    assert 200 < store.redis.pttl(key(job_id, "submitter")) <= 1000
    store.submitter_alive(job_id, "h:2", 40.5)
    assert store.redis.get(key(job_id, "submitter")) == b"h:2"
    assert 30 < store.redis.ttl(key(job_id, "submitter")) <= 41


def test_open_job_without_a_submitter_names_none(store: JobStore) -> None:
    job_id = opened(store)
    assert store.redis.hget(key(job_id, "meta"), "submitting") is None
    assert not store.redis.exists(key(job_id, "submitter"))
    assert store.stalled(job_id) is None  # alive since it was opened


def test_submitted_forgets_the_submitter(store: JobStore) -> None:
    job_id = opened(store, submitter="h:1", submitter_ttl_s=30)
    other = opened(store, submitter="h:2", submitter_ttl_s=30)
    store.submitted(job_id)
    assert store.redis.hget(key(job_id, "meta"), "submitting") is None
    assert not store.redis.exists(key(job_id, "submitter"))
    assert store.meta(job_id).state == "queued"  # the record stays
    assert store.redis.hget(key(other, "meta"), "submitting") == b"h:2"  # only this job's
    assert store.redis.exists(key(other, "submitter"))


def test_put_shard_keys_stores_them_and_shows_the_submit_alive(store: JobStore) -> None:
    job_id = opened(store)
    store.redis.delete(key(job_id, "alive"))
    store.put_shard_keys(job_id, 2, ids(5, 6))
    assert table_from_bytes(store.redis.get(key(job_id, "keys:2"))).equals(ids(5, 6))
    assert store.shard_keys(job_id, 2).equals(ids(5, 6))
    assert TTL - 100 < store.redis.ttl(key(job_id, "keys:2")) <= TTL
    assert_alive(store, job_id, b"submitting")


def test_update_spec_rewrites_only_the_request(store: JobStore) -> None:
    job_id = opened(store)
    store.update_spec(job_id, {"table": "t", "read_plan": {"mode": "scan"}})
    meta = store.meta(job_id)
    assert meta.request.read_plan == {"mode": "scan"}
    assert store.redis.hget(key(job_id, "meta"), "request") == json.dumps(
        {"table": "t", "read_plan": {"mode": "scan"}}).encode()
    assert (meta.state, meta.shards, meta.rows) == ("queued", 3, 6)


def test_every_step_of_a_shard_is_a_sign_of_life(store: JobStore) -> None:
    job_id = opened(store)
    store.count_attempt(job_id, 0, "w:1")
    assert_alive(store, job_id, b"shard started")
    store.set_progress(job_id, 0, 5)
    assert_alive(store, job_id, b"shard progress")
    store.put_shard_rows(job_id, 0, ids(1), {"keys": 1})
    assert_alive(store, job_id, b"shard done")
    store.heartbeat(job_id, "finishing")
    assert_alive(store, job_id, b"finishing")


def test_a_shards_report_and_its_end_each_read_the_jobs_state_in_the_same_trip(
        store: JobStore) -> None:
    job_id = opened(store)
    assert store.report_progress(job_id, 2, 7) == JobState.QUEUED
    assert store.progress(job_id) == 7
    assert 0 < store.redis.ttl(key(job_id, "progress")) <= TTL
    assert_alive(store, job_id, b"shard progress")
    store.cancel(job_id)
    assert store.report_progress(job_id, 2, 8) == JobState.CANCELLED
    assert store.progress(job_id) == 7  # a stopping shard writes nothing back
    assert store.shard_stored(job_id, 2, ids(1), {"keys": 1}, progress=9) == (
        1, JobState.CANCELLED)
    assert store.progress(job_id) == 9 and store.is_done(job_id, 2)
    assert 0 < store.redis.ttl(key(job_id, "progress")) <= TTL
    assert store.shard_stored(job_id, 1, ids(1), {"keys": 1})[0] == 2
    assert store.progress(job_id) == 9  # no progress given: left as it was
    gone = store.new_job_id()
    assert store.report_progress(gone, 0, 1) is None
    assert list(store.redis.scan_iter(f"featurepull:job:{gone}:*")) == []
    assert store.shard_stored(gone, 0, ids(1), {"keys": 1}) == (1, None)


def test_a_shard_with_an_output_stores_no_rows(store: JobStore) -> None:
    job_id = opened(store)
    store.put_shard_keys(job_id, 1, ids(3))
    assert store.put_shard_rows(job_id, 1, ids(3), {"keys": 1}, keep_rows=False) == 1
    assert not store.redis.exists(key(job_id, "rows:1"))
    assert not store.redis.exists(key(job_id, "keys:1"))  # dropped once done
    assert store.redis.get(key(job_id, "schema:1")) == ids(3).schema.serialize().to_pybytes()
    assert store.is_done(job_id, 1)


def test_schemas_of_more_shards_than_one_mget(store: JobStore) -> None:
    job_id = opened(store, shards=1_002)
    schemas = [pa.schema([(f"c{n}", pa.int64())]) for n in range(1_002)]
    store.redis.mset({key(job_id, f"schema:{n}"): schema.serialize().to_pybytes()
                      for n, schema in enumerate(schemas)})
    assert store.shard_schemas(job_id, 1_002) == schemas
    assert store.shard_schemas(job_id, 1_001) == schemas[:1_001]
    store.redis.delete(key(job_id, "schema:1001"))
    with pytest.raises(JobStoreError) as caught:
        store.shard_schemas(job_id, 1_002)
    assert str(caught.value) == f"schema of shard 1001 of job {job_id} is gone from Redis"


def test_snapshot_is_the_meta_shards_done_and_keys_answered(store: JobStore) -> None:
    job_id = opened(store, shards=3)
    meta, done, answered = store.snapshot(job_id)
    assert (meta.job_id, meta.state, meta.shards, done, answered) == (job_id, "queued", 3, 0, 0)
    store.set_progress(job_id, 0, 4)
    store.set_progress(job_id, 2, 9)
    store.put_shard_rows(job_id, 2, ids(1), {"keys": 1})
    store.mark_running(job_id)
    meta, done, answered = store.snapshot(job_id)
    assert meta == store.meta(job_id)
    assert (meta.state, done, answered) == ("running", 1, 13)
    with pytest.raises(UnknownJob):
        store.snapshot("nosuchjob")


def test_note_published_records_the_outputs_identity(store: JobStore) -> None:
    job_id = opened(store)
    assert store.meta(job_id).published_as is None
    store.note_published(job_id, "12345:67:1700000000")
    assert store.meta(job_id).published_as == "12345:67:1700000000"
    assert store.redis.hget(key(job_id, "meta"), "published_as") == b"12345:67:1700000000"


def test_active_jobs_oldest_first(store: JobStore) -> None:
    first, second, third = opened(store), opened(store), opened(store)
    # Created long before any other job of the session's Redis: listed first.
    store.redis.zadd(ACTIVE_JOBS, {first: 2.0, second: 1.0, third: 3.0})
    assert store.active_jobs()[:3] == [second, first, third]
    store.delete(second)
    assert store.active_jobs()[:2] == [first, third]


# --- the watchdog's check ------------------------------------------------------------------------

def idle(store: JobStore, job_id: str) -> None:
    """No sign of life for the idle limit: the alive key expired."""
    store.redis.delete(key(job_id, "alive"))


def test_a_job_alive_is_left_alone(store: JobStore) -> None:
    job_id = opened(store)
    assert store.stalled(job_id) is None
    assert_alive(store, job_id, b"submitted")
    assert job_id in store.active_jobs()


def test_a_stalled_job_gets_its_shards_not_done_and_counts_as_alive_again(
        store: JobStore) -> None:
    job_id = opened(store, shards=4)
    store.put_shard_rows(job_id, 1, ids(1), {"keys": 1})
    idle(store, job_id)
    assert store.stalled(job_id) == [0, 2, 3]
    assert_alive(store, job_id, b"watchdog")
    assert store.stalled(job_id) is None  # one caller acts, once per idle period
    for shard in (0, 2, 3):
        store.put_shard_rows(job_id, shard, ids(shard), {"keys": 1})
    idle(store, job_id)
    assert store.stalled(job_id) == []  # every shard done: it waits for its finisher
    assert job_id in store.active_jobs()


@pytest.mark.parametrize("end", ["succeed", "fail", "cancel", "expire"])
def test_an_ended_or_expired_job_leaves_the_active_set(store: JobStore, end: str) -> None:
    job_id = opened(store)
    idle(store, job_id)
    if end == "succeed":
        store.begin_finish(job_id)
        store.succeed(job_id, {})
    elif end == "fail":
        store.fail(job_id, "boom")
    elif end == "cancel":
        store.cancel(job_id)
    else:
        store.redis.delete(key(job_id, "meta"))
    assert store.stalled(job_id) is None
    assert job_id not in store.active_jobs()


def test_a_job_whose_submitter_is_gone(store: JobStore) -> None:
    job_id = opened(store, submitter="host-b:4242", submitter_ttl_s=30)
    assert store.stalled(job_id) is None  # its submitter lives
    store.redis.delete(key(job_id, "submitter"))  # expired: the process was killed
    with pytest.raises(SubmitterGone) as caught:
        store.stalled(job_id)  # even while the job shows other signs of life
    assert caught.value.job_id == job_id
    assert str(caught.value) == (
        "the process that submitted the job (host-b:4242) stopped before it had stored and "
        "sent every shard (it was killed, or its machine died); submit the job again")
    store.submitted(job_id)
    assert store.stalled(job_id) is None


def test_a_message_waiting_in_the_broker_is_a_sign_of_life(store: JobStore) -> None:
    job_id = opened(store, shards=2)
    other = opened(store, shards=2)
    queues = [f"q-{job_id}", f"q-{job_id}\x06\x163"]
    unacked = f"unacked-{job_id}"
    try:
        store.redis.rpush(queues[1], *[json.dumps({"args": [other, n]}) for n in range(600)])
        idle(store, job_id)
        assert store.stalled(job_id, queues, unacked) == [0, 1]  # only other jobs queued
        idle(store, job_id)
        store.redis.rpush(queues[1], json.dumps({"args": [job_id, 1]}))  # past 500 messages
        assert store.stalled(job_id, queues, unacked) is None
        assert_alive(store, job_id, b"queued")
        idle(store, job_id)
        assert store.stalled(job_id, queues[:1], unacked) == [0, 1]  # a list not looked in
        store.redis.delete(*queues)
        idle(store, job_id)
        store.redis.hset(unacked, "tag-1", json.dumps([{"args": [other, 0]}, "ex", "q"]))
        assert store.stalled(job_id, queues, unacked) == [0, 1]
        idle(store, job_id)
        store.redis.hset(unacked, "tag-2", json.dumps([{"args": [job_id, 0]}, "ex", "q"]))
        assert store.stalled(job_id, queues, unacked) is None  # held by a worker
        assert_alive(store, job_id, b"queued")
        idle(store, job_id)
        assert store.stalled(job_id, queues) == [0, 1]  # the unacked hash not looked in
    finally:
        store.redis.delete(*queues, unacked)


# --- scan tasks ----------------------------------------------------------------------------------

def test_scan_tasks_owners_progress_and_signs_of_life(store: JobStore) -> None:
    job_id = opened(store)
    store.note_scan_owner(job_id, 1, "host:7")
    assert_alive(store, job_id, b"scan task started")
    store.note_scan_owner(job_id, 0, "host:8")
    store.note_scan_owner(job_id, 1, "host:9")
    assert store.scan_owners(job_id) == {0: "host:8", 1: "host:9"}
    assert store.scan_progress(job_id) == 0
    store.set_scan_progress(job_id, 0, 40)
    assert_alive(store, job_id, b"scan progress")
    store.set_scan_progress(job_id, 1, 15)
    store.set_scan_progress(job_id, 0, 50)
    assert store.scan_progress(job_id) == 65
    for name in ("scan_owners", "scan_progress"):
        assert TTL - 100 < store.redis.ttl(key(job_id, name)) <= TTL
    store.put_scan_part(job_id, 1, {}, {"items_scanned": 30, "pages": 2})
    assert store.scan_progress(job_id) == 80  # a task done counts its total
    assert_alive(store, job_id, b"scan task done")
    store.put_scan_part(job_id, 2, {}, {})
    assert store.redis.hget(key(job_id, "scan_progress"), "2") == b"0"
    for name in ("scanned", "scan_stats", "scan_progress"):
        assert TTL - 100 < store.redis.ttl(key(job_id, name)) <= TTL
    assert store.all_scan_stats(job_id) == {1: {"items_scanned": 30, "pages": 2}, 2: {}}


def test_scan_partitions_of_more_tasks_than_one_mget(store: JobStore) -> None:
    job_id = opened(store)
    parts = 1_002
    for part in (0, 999, 1_000, 1_001):
        assert store.put_scan_part(job_id, part, {3: ids(part)}, {}) >= 1
    assert store.put_scan_part(job_id, 500, {2: ids(7)}, {}) == 5
    tables = store.scan_partitions(job_id, 3, parts)
    assert [t.column("driver_id").to_pylist() for t in tables] == [[0], [999], [1_000], [1_001]]
    assert [t.to_pylist() for t in store.scan_partitions(job_id, 3, 1_001)] == [
        [{"driver_id": n}] for n in (0, 999, 1_000)]
    store.drop_scan_partitions(job_id, 3, parts)
    assert store.scan_partitions(job_id, 3, parts) == []
    assert len(store.scan_partitions(job_id, 2, parts)) == 1  # another shard's stay
    assert store.scan_parts_done(job_id) == {0, 500, 999, 1_000, 1_001}
