"""JobStore against the real redis-server, in this process: the exact keys, values and TTLs
of a job and a schedule (the map in featurepull/tasks/store.py's docstring), the state
transitions, the locks and claims. The workers use the same calls; these tests (with
test_store.py) are the ones the mutation runs (scripts/mutation.sh) can see."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pytest

from featurepull.local import RedisService, free_port, start_redis
from featurepull.tasks import JobMeta, JobStore, JobStoreError, RedisUnavailable, UnknownJob
from featurepull.tasks.store import (
    JobSpec,
    RedisRefused,
    connect,
    redact_url,
    table_from_bytes,
    table_to_bytes,
)
from tests.conftest import wait_until

TTL = 1_000

# In-process and fast: run before the job tests by scripts/mutation.sh.
pytestmark = pytest.mark.mutation_first


@pytest.fixture
def store(redis_server: RedisService) -> JobStore:
    return JobStore(connect(redis_server.url), TTL)


def key(job_id: str, name: str) -> str:
    return f"featurepull:job:{job_id}:{name}"


def ttl_of(store: JobStore, name: str) -> int:
    """The key's TTL in seconds (-1: none, -2: no such key)."""
    return int(store.redis.ttl(name))


def assert_job_ttl(store: JobStore, *names: str) -> None:
    for name in names:
        assert TTL - 100 < ttl_of(store, name) <= TTL, name  # a stalled machine: slack


def keys_of(store: JobStore, job_id: str) -> set[str]:
    return {k.decode() for k in store.redis.scan_iter(match=key(job_id, "*"), count=1000)}


def ids(*values: int) -> pa.Table:
    return pa.table({"driver_id": pa.array(values, pa.int64())})


def new_job(store: JobStore, shards: int = 2, request: dict[str, Any] | None = None) -> str:
    job_id = store.new_job_id()
    store.create(job_id, request or {"table": "t"},
                 iter([ids(shard, shard + 100) for shard in range(shards)]))
    return job_id


# --- URLs and connections -------------------------------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@host:6380/2", "redis://:***@host:6380/2"),
    ("redis://user:pw@host/0", "redis://user:***@host/0"),
    ("rediss://:pw@h.example:6379/1?ssl_cert_reqs=none#frag",
     "rediss://:***@h.example:6379/1?ssl_cert_reqs=none"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("redis://user@host:6379/0", "redis://user@host:6379/0"),
    ("unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
])
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_connect_with_a_wrong_password_names_the_url_without_it() -> None:
    server = start_redis(password="the-password")
    try:
        url = f"redis://:planted-secret@127.0.0.1:{server.port}/0"
        with pytest.raises(JobStoreError) as caught:
            connect(url)
    finally:
        server.stop()
    assert type(caught.value) is RedisRefused
    message = str(caught.value)
    assert "planted-secret" not in message
    assert message.startswith(
        f"Redis at redis://:***@127.0.0.1:{server.port}/0 refused the credentials (")
    assert message.endswith("); check the password in FEATUREPULL_REDIS_URL or redis_url in "
                            "the config file (redis://:PASSWORD@host:port/db)")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_connect_to_nothing_is_redis_unavailable() -> None:
    url = f"redis://:planted-secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as caught:
        connect(url, timeout_s=2.0)
    message = str(caught.value)
    assert "planted-secret" not in message
    assert message.startswith(f"cannot reach Redis at {redact_url(url)} (")
    assert message.endswith("); is redis-server running there? Set FEATUREPULL_REDIS_URL or "
                            "redis_url in the config file")
    assert caught.value.__suppress_context__


def test_connect_to_a_database_that_does_not_exist_is_not_unavailable(
        redis_server: RedisService) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/99"  # 16 databases
    with pytest.raises(JobStoreError) as caught:
        connect(url)
    assert type(caught.value) is RedisRefused
    assert str(caught.value).startswith(f"cannot reach Redis at {url} (")
    assert "DB index is out of range" in str(caught.value)


@pytest.mark.parametrize(("timeout_s", "socket_timeout"), [(2.0, 30.0), (45.0, 45.0)])
def test_connect_waits_timeout_s_to_connect_and_at_least_30_s_for_a_reply(
        redis_server: RedisService, timeout_s: float, socket_timeout: float) -> None:
    client = connect(redis_server.url, timeout_s=timeout_s)
    options = client.connection_pool.connection_kwargs
    assert (options["socket_connect_timeout"], options["socket_timeout"],
            options["health_check_interval"]) == (timeout_s, socket_timeout, 30)
    assert client.ping() is True


def test_connect_defaults_to_five_seconds(redis_server: RedisService) -> None:
    options = connect(redis_server.url).connection_pool.connection_kwargs
    assert options["socket_connect_timeout"] == 5.0


# --- Arrow bytes -------------------------------------------------------------------------------

def test_tables_round_trip_typed_and_compressed() -> None:
    table = pa.table({"id": pa.array([7] * 20_000, pa.int64()),
                      "name": pa.array(["x"] * 20_000, pa.string()),
                      "when": pa.array([None] * 20_000, pa.timestamp("us", "UTC"))})
    data = table_to_bytes(table)
    assert isinstance(data, bytes)
    assert len(data) < table.nbytes // 4  # lz4-compressed
    back = table_from_bytes(data)
    assert back.schema == table.schema
    assert back.equals(table)


# --- a job's keys ------------------------------------------------------------------------------

def test_create_stores_every_shards_keys_and_the_meta(store: JobStore) -> None:
    job_id = store.new_job_id()
    tables = [ids(*range(n, n + 3)) for n in range(0, 60, 3)]  # 20 shards: more than one batch
    before = time.time()
    assert store.create(job_id, {"table": "t", "n": [1, 2]}, iter(tables)) == (20, 60)
    after = time.time()
    names = {f"keys:{n}" for n in range(20)} | {"meta"}
    assert keys_of(store, job_id) == {key(job_id, name) for name in names | {"alive"}}
    assert_job_ttl(store, *(key(job_id, name) for name in names))
    for shard in (0, 15, 16, 19):
        assert store.shard_keys(job_id, shard).equals(tables[shard])
    raw = store.redis.hgetall(key(job_id, "meta"))
    assert set(raw) == {b"request", b"state", b"shards", b"rows", b"created"}
    assert (raw[b"request"], raw[b"state"], raw[b"shards"], raw[b"rows"]) == (
        b'{"table": "t", "n": [1, 2]}', b"queued", b"20", b"60")
    meta = store.meta(job_id)
    assert meta == JobMeta(job_id=job_id, request={"table": "t", "n": [1, 2]}, state="queued",
                           shards=20, rows=60, created=meta.created, started=None,
                           finished=None, error=None, summary=None, error_kind=None)
    assert before <= meta.created <= after
    assert not meta.terminal


def test_create_with_no_shards(store: JobStore) -> None:
    job_id = store.new_job_id()
    assert store.create(job_id, {}, iter([])) == (0, 0)
    meta = store.meta(job_id)
    assert (meta.state, meta.shards, meta.rows, meta.request) == ("queued", 0, 0, JobSpec())
    assert keys_of(store, job_id) == {key(job_id, "meta"), key(job_id, "alive")}


def test_an_unknown_job(store: JobStore) -> None:
    with pytest.raises(UnknownJob) as caught:
        store.meta("nosuchjob")
    assert caught.value.args == ("nosuchjob",)
    assert str(caught.value) == ("no job 'nosuchjob' in Redis: check the id, and that it has "
                                 "not expired (jobs.ttl_s) or been cleaned up")
    assert store.state("nosuchjob") is None
    with pytest.raises(UnknownJob) as caught:
        store.shard_keys("nosuchjob", 0)
    assert caught.value.args == ("nosuchjob",)
    assert store.done_count("nosuchjob") == 0
    assert store.progress("nosuchjob") == 0
    assert store.all_stats("nosuchjob") == {}
    assert store.attempts("nosuchjob") == {}
    assert store.owners("nosuchjob") == {}
    assert store.delete("nosuchjob") == 0


def test_new_job_ids_are_distinct_hex(store: JobStore) -> None:
    made = {store.new_job_id() for _ in range(50)}
    assert len(made) == 50
    assert all(len(job_id) == 32 and int(job_id, 16) >= 0 for job_id in made)


# --- states ------------------------------------------------------------------------------------

def test_a_job_that_succeeds(store: JobStore) -> None:
    job_id = new_job(store)
    before = time.time()
    store.mark_running(job_id)
    meta = store.meta(job_id)
    assert (meta.state, meta.finished, meta.error) == ("running", None, None)
    assert meta.started is not None and before <= meta.started <= time.time()
    started = meta.started
    store.mark_running(job_id)  # only from queued: the start time stays
    assert store.meta(job_id).started == started
    assert store.begin_finish(job_id) is True
    assert store.state(job_id) == "finishing"
    assert store.begin_finish(job_id) is True  # a redelivered finisher begins again
    assert store.cancel(job_id) is False  # too late to cancel
    store.succeed(job_id, {"rows": 4, "path": "out.parquet"})
    meta = store.meta(job_id)
    assert (meta.state, meta.summary, meta.error, meta.error_kind) == (
        "succeeded", {"rows": 4, "path": "out.parquet"}, None, None)
    assert meta.started == started
    assert meta.finished is not None and started <= meta.finished <= time.time()
    assert meta.terminal
    assert store.fail(job_id, "late") is False
    assert store.begin_finish(job_id) is False
    assert store.cancel(job_id) is False
    store.mark_running(job_id)
    assert store.meta(job_id).state == "succeeded"


@pytest.mark.parametrize("state_before", ["queued", "running", "finishing"])
def test_the_first_failure_wins(store: JobStore, state_before: str) -> None:
    job_id = new_job(store)
    store.redis.hset(key(job_id, "meta"), "state", state_before)
    before = time.time()
    assert store.fail(job_id, "shard 1: boom", kind="input") is True
    assert store.fail(job_id, "second error") is False
    meta = store.meta(job_id)
    assert (meta.state, meta.error, meta.error_kind, meta.terminal) == (
        "failed", "shard 1: boom", "input", True)
    assert meta.finished is not None and before <= meta.finished <= time.time()
    assert store.cancel(job_id) is False
    assert store.begin_finish(job_id) is False
    store.succeed(job_id, {})
    assert store.meta(job_id).state == "failed"


def test_a_failure_is_of_kind_failed_unless_told(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.fail(job_id, "boom") is True
    assert store.meta(job_id).error_kind == "failed"


@pytest.mark.parametrize(("state_before", "cancelled"),
                         [("queued", True), ("running", True), ("finishing", False)])
def test_cancel(store: JobStore, state_before: str, cancelled: bool) -> None:
    job_id = new_job(store)
    store.redis.hset(key(job_id, "meta"), "state", state_before)
    assert store.cancel(job_id) is cancelled
    meta = store.meta(job_id)
    if cancelled:
        assert (meta.state, meta.error, meta.error_kind, meta.terminal) == (
            "cancelled", "cancelled by request", None, True)
        assert meta.finished is not None
        assert store.cancel(job_id) is False
        assert store.fail(job_id, "late") is False
        assert store.begin_finish(job_id) is False
    else:
        assert (meta.state, meta.error, meta.finished) == (state_before, None, None)


def test_begin_finish_from_queued_and_succeed_only_from_finishing(store: JobStore) -> None:
    job_id = new_job(store)
    store.succeed(job_id, {"rows": 1})
    assert store.meta(job_id).state == "queued"
    store.redis.hset(key(job_id, "meta"), "state", "running")
    store.succeed(job_id, {"rows": 1})
    assert (store.meta(job_id).state, store.meta(job_id).summary) == ("running", None)
    assert store.begin_finish(job_id) is True
    other = new_job(store)
    assert store.begin_finish(other) is True
    assert store.meta(other).state == "finishing"


def test_states_of_a_job_that_is_gone(store: JobStore) -> None:
    assert store.fail("gone", "x") is False
    assert store.cancel("gone") is False
    assert store.begin_finish("gone") is False
    store.mark_running("gone")
    store.succeed("gone", {})
    assert store.redis.exists(key("gone", "meta")) == 0


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "cancelled"])
def test_terminal_states(terminal: str) -> None:
    meta = JobMeta(job_id="j", request={}, state=terminal, shards=0, rows=0, created=0.0,
                   started=None, finished=None, error=None, summary=None)
    assert meta.terminal
    assert not JobMeta(job_id="j", request={}, state="finishing", shards=0, rows=0,
                       created=0.0, started=None, finished=None, error=None,
                       summary=None).terminal


# --- the end's announcement (JobStore.wait_end: what Job.wait blocks on) ----------------------

def end_job(store: JobStore, job_id: str, how: str) -> None:
    if how == "succeed":
        assert store.begin_finish(job_id) is True
        store.succeed(job_id, {"rows": 4})
    elif how == "fail":
        assert store.fail(job_id, "boom") is True
    else:
        assert store.cancel(job_id) is True


@pytest.mark.parametrize(("how", "state"), [
    ("succeed", "succeeded"), ("fail", "failed"), ("cancel", "cancelled")])
def test_the_transaction_that_ends_a_job_announces_its_end_to_every_waiter(
        store: JobStore, how: str, state: str) -> None:
    job_id = new_job(store)
    assert store.wait_end(job_id, 0.01) is False  # not ended: the block times out
    store.mark_running(job_id)
    before = keys_of(store, job_id)
    assert key(job_id, "wake") not in before
    end_job(store, job_id, how)
    assert keys_of(store, job_id) == before | {key(job_id, "wake")}
    assert_job_ttl(store, key(job_id, "wake"))
    # Ended before the wait began: seen at once (the socket's 30 s would cap 60 s at 15 s),
    # and read, not consumed: every waiter sees it.
    assert store.wait_end(job_id, 60) is True
    assert store.wait_end(job_id, 60) is True
    assert store.fail(job_id, "late") is False and store.cancel(job_id) is False
    ((_, fields),) = store.redis.xrange(key(job_id, "wake"))  # ends once
    assert fields == {b"state": state.encode()}
    assert store.delete(job_id) == len(before) + 1
    assert keys_of(store, job_id) == set()


def blocked_in_xread(store: JobStore) -> int:
    return sum(1 for c in store.redis.client_list() if c["cmd"] == "xread" and "b" in c["flags"])


def test_a_blocked_wait_wakes_when_another_client_ends_the_job(store: JobStore) -> None:
    job_id = new_job(store)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(store.wait_end, job_id, 60)  # 15 s at most: the socket's 30
        wait_until(lambda: blocked_in_xread(store) == 1 or waiting.done(), "the wait blocked")
        assert store.fail(job_id, "boom") is True
        assert waiting.result() is True


def test_no_state_but_an_end_announces_one(store: JobStore) -> None:
    job_id = new_job(store)
    store.mark_running(job_id)
    assert store.begin_finish(job_id) is True
    assert store.redis.exists(key(job_id, "wake")) == 0
    assert store.wait_end(job_id, 0.01) is False
    assert store.wait_end("gone", 0.01) is False


def test_wait_end_blocks_under_half_the_clients_socket_timeout(
        redis_server: RedisService) -> None:
    import redis

    quick = JobStore(redis.Redis.from_url(redis_server.url, socket_timeout=0.2), TTL)
    job_id = new_job(quick)
    assert quick.wait_end(job_id, 60) is False  # blocked 0.1 s: a 60 s block would trip it
    end_job(quick, job_id, "fail")
    assert quick.wait_end(job_id, 60) is True


# --- shards ------------------------------------------------------------------------------------

def test_shard_rows_schema_stats_and_done(store: JobStore) -> None:
    job_id = new_job(store, shards=3)
    rows1 = pa.table({"driver_id": [101, 1], "f": [1.5, None]})
    rows0 = pa.table({"driver_id": pa.array([100], pa.int32()), "g": ["a"]})
    assert store.done_count(job_id) == 0
    assert not store.is_done(job_id, 1)
    assert store.put_shard_rows(job_id, 1, rows1, {"keys": 2, "ms": 1.5}) == 1
    assert store.put_shard_rows(job_id, 0, rows0, {"keys": 1}) == 2
    assert store.put_shard_rows(job_id, 1, rows1, {"keys": 2, "ms": 2.5}) == 2  # redelivered
    assert store.done_count(job_id) == 2
    assert (store.is_done(job_id, 0), store.is_done(job_id, 1), store.is_done(job_id, 2)) == (
        True, True, False)
    assert store.shard_rows(job_id, 1).equals(rows1)
    assert store.shard_rows(job_id, 0).equals(rows0)
    assert store.shard_schemas(job_id, 2) == [rows0.schema, rows1.schema]
    assert store.all_stats(job_id) == {0: {"keys": 1}, 1: {"keys": 2, "ms": 2.5}}
    assert {m.decode() for m in store.redis.smembers(key(job_id, "done"))} == {"0", "1"}
    assert store.redis.hgetall(key(job_id, "stats")) == {
        b"0": b'{"keys": 1}', b"1": b'{"keys": 2, "ms": 2.5}'}
    assert_job_ttl(store, *(key(job_id, name) for name in
                            ("rows:0", "rows:1", "schema:0", "schema:1", "done", "stats")))
    with pytest.raises(JobStoreError) as caught:
        store.shard_rows(job_id, 2)
    assert str(caught.value) == (f"rows of shard 2 of job {job_id} are gone from Redis "
                                 "(expired or cleaned up)")
    with pytest.raises(JobStoreError) as caught:
        store.shard_schemas(job_id, 3)
    assert str(caught.value).startswith(f"schema of shard 2 of job {job_id} is gone from ")


def test_attempts_and_owners(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.count_attempt(job_id, 0, "host-a:11") == 1
    assert store.count_attempt(job_id, 1) == 1
    assert store.count_attempt(job_id, 0, "host-b:22") == 2
    assert store.attempts(job_id) == {0: 2, 1: 1}
    assert store.owners(job_id) == {0: "host-b:22", 1: ""}
    assert_job_ttl(store, key(job_id, "attempts"), key(job_id, "owners"))


def test_a_first_attempt_marks_the_job_running_as_mark_running_does(store: JobStore) -> None:
    job_id, other = new_job(store), new_job(store)
    before = time.time()
    assert store.count_attempt(job_id, 0, "w:1", mark_running=True) == 1
    meta = store.meta(job_id)
    assert meta.state == "running" and meta.started is not None
    assert before <= meta.started <= time.time()
    store.mark_running(other)  # what the shard did before: the same fields, the same text
    assert (set(store.redis.hgetall(key(job_id, "meta")))
            == set(store.redis.hgetall(key(other, "meta"))))
    assert isinstance(store.redis.hget(key(job_id, "meta"), "started"), bytes)
    started = meta.started
    assert store.count_attempt(job_id, 1, "w:2", mark_running=True) == 1  # only from queued
    assert store.meta(job_id).started == started
    assert store.attempts(job_id) == {0: 1, 1: 1}
    assert store.owners(job_id) == {0: "w:1", 1: "w:2"}
    assert store.redis.get(key(job_id, "alive")) == b"shard started"
    assert store.redis.ttl(key(job_id, "alive")) > 0
    cancelled = new_job(store)
    assert store.cancel(cancelled)
    store.count_attempt(cancelled, 0, mark_running=True)
    assert store.meta(cancelled).state == "cancelled"
    queued = new_job(store)
    store.count_attempt(queued, 0)
    assert (store.meta(queued).state, store.meta(queued).started) == ("queued", None)


def test_meta_and_done(store: JobStore) -> None:
    job_id = new_job(store)
    store.shard_stored(job_id, 1, ids(1), {"keys": 1})
    assert store.meta_and_done(job_id, 0) == (store.meta(job_id), False)
    assert store.meta_and_done(job_id, 1) == (store.meta(job_id), True)
    with pytest.raises(UnknownJob):
        store.meta_and_done("gone", 0)


def test_progress_adds_up_the_shards_latest_figures(store: JobStore) -> None:
    job_id = new_job(store, shards=3)
    assert store.progress(job_id) == 0
    store.set_progress(job_id, 0, 10)
    store.set_progress(job_id, 2, 7)
    store.set_progress(job_id, 0, 25)
    assert store.progress(job_id) == 32
    assert store.redis.hgetall(key(job_id, "progress")) == {b"0": b"25", b"2": b"7"}
    assert_job_ttl(store, key(job_id, "progress"))


def test_drop_rows_frees_rows_keys_and_schemas_only(store: JobStore) -> None:
    shards = 400  # 1,200 keys: more than one DEL
    job_id = new_job(store, shards=shards)
    for shard in range(shards):
        store.redis.set(key(job_id, f"rows:{shard}"), b"r")
        store.redis.set(key(job_id, f"schema:{shard}"), b"s")
    store.put_shard_rows(job_id, 0, ids(1), {"keys": 1})
    store.set_progress(job_id, 0, 1)
    store.drop_rows(job_id, shards)
    assert keys_of(store, job_id) == {key(job_id, name) for name in
                                      ("meta", "stats", "done", "progress", "alive")}
    assert store.meta(job_id).shards == shards
    small = new_job(store, shards=2)
    store.drop_rows(small, 2)
    assert keys_of(store, small) == {key(small, "meta"), key(small, "alive")}


def test_delete_removes_every_key_of_one_job(store: JobStore) -> None:
    job_id = new_job(store, shards=3)
    other = new_job(store, shards=1)
    store.put_shard_rows(job_id, 0, ids(1), {"keys": 1})
    store.count_attempt(job_id, 0, "w")
    store.lock_finish(job_id, "w", 60)
    # meta, keys:0-2, rows:0, schema:0, done, stats, attempts, owners, finish
    assert store.delete(job_id) == 11
    assert keys_of(store, job_id) == set()
    assert store.meta(other).shards == 1


# --- locks and claims --------------------------------------------------------------------------

def test_the_finisher_lock(store: JobStore) -> None:
    job_id = new_job(store)
    lock = key(job_id, "finish")
    assert store.lock_finish(job_id, "task-1", 600) is True
    assert store.redis.get(lock) == b"task-1"
    assert 500 < ttl_of(store, lock) <= 600
    assert store.lock_finish(job_id, "task-2", 600) is False
    assert store.lock_finish(job_id, "task-1", 900) is True  # redelivered: taken again
    assert 800 < ttl_of(store, lock) <= 900
    store.unlock_finish(job_id, "task-2")  # not its lock
    assert store.redis.get(lock) == b"task-1"
    store.unlock_finish(job_id, "task-1")
    assert store.redis.exists(lock) == 0
    assert store.lock_finish(job_id, "task-2", 60) is True


def test_note_finisher_returns_the_one_before(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.note_finisher(job_id, "host:1") is None
    assert store.note_finisher(job_id, "host:2") == "host:1"
    assert store.redis.hget(key(job_id, "meta"), "finisher") == b"host:2"


def test_the_end_is_announced_once(store: JobStore) -> None:
    job_id = new_job(store)
    ended = key(job_id, "ended")
    assert not store.end_announced(job_id)
    assert store.claim_end(job_id, "task-1", 300) is True
    assert store.redis.get(ended) == b"task-1"
    assert 200 < ttl_of(store, ended) <= 300
    assert not store.end_announced(job_id)
    assert store.claim_end(job_id, "task-2", 30) is False
    assert store.claim_end(job_id, "task-1", 30) is True  # the same task, redelivered
    store.mark_ended(job_id)
    assert store.redis.get(ended) == b"sent"
    assert_job_ttl(store, ended)
    assert store.end_announced(job_id)
    assert store.claim_end(job_id, "task-1", 30) is False
    assert store.claim_end(job_id, "task-2", 30) is False
    assert store.claim_end(job_id, "sent", 30) is False


# --- schedules ---------------------------------------------------------------------------------

def test_the_schedule_lock(store: JobStore) -> None:
    name = f"nightly-{store.new_job_id()}"
    lock = f"featurepull:schedule:{name}:lock"
    assert store.lock_schedule(name, "run-1", 400) is True
    assert store.redis.get(lock) == b"run-1"
    assert 300 < ttl_of(store, lock) <= 400
    assert store.lock_schedule(name, "run-2", 40) is False
    assert store.lock_schedule(name, "run-1", 40) is False  # not re-entrant
    store.unlock_schedule(name, "run-2")
    assert store.redis.get(lock) == b"run-1"
    store.unlock_schedule(name, "run-1")
    assert store.redis.exists(lock) == 0
    assert store.lock_schedule(name, "run-2", 40) is True


def test_schedule_runs_newest_first_and_the_last_hundred(store: JobStore) -> None:
    name = f"hourly-{store.new_job_id()}"
    assert store.schedule_last_job(name) is None
    assert store.schedule_runs(name) == []
    for run in range(105):
        store.record_schedule_run(name, f"job-{run}")
    assert store.schedule_last_job(name) == "job-104"
    assert store.schedule_runs(name) == [f"job-{run}" for run in range(104, 4, -1)]
    assert_job_ttl(store, f"featurepull:schedule:{name}:last_job",
                   f"featurepull:schedule:{name}:runs")
