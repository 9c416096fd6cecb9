"""The watchdog in this process, against the real redis-server and no worker: what it sends
for a stalled job (the messages on the queue are what is checked), a job whose submitter
died, where it looks for a job's waiting messages, and its thread. Redis db 15 of the
session's server, emptied after each test: the watchdog looks at every active job of its db."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import structlog

from featurepull.config import Settings
from featurepull.local import RedisService
from featurepull.tasks import monitor
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.store import JobStore, connect
from featurepull.tasks.watchdog import Watchdog, broker_keys, resend_stalled
from featurepull.worker.producer import producer_app
from tests.conftest import wait_until
from tests.tasks.conftest import taken_messages

pytestmark = pytest.mark.mutation_first  # in-process and fast (scripts/mutation.sh)

QUEUE = "watchdog-messages"
RESENT = "watchdog-resent"  # not the app's own queue: re-sends go where they are told
TTL = 1_000


@pytest.fixture
def settings(redis_server: RedisService) -> Settings:
    return Settings(redis_url=f"redis://127.0.0.1:{redis_server.port}/15",
                    jobs={"queue": QUEUE, "redelivery_check_s": 1})


@pytest.fixture
def store(settings: Settings) -> Iterator[JobStore]:
    store = JobStore(connect(settings.redis_url), TTL, idle_s=60)
    store.redis.flushdb()  # a db of its own: what a killed earlier run left is not looked at
    yield store
    store.redis.flushdb()


@pytest.fixture
def app(settings: Settings) -> Iterator[Any]:
    app = producer_app(settings)
    yield app
    app.close()


def sent(store: JobStore, queue: str = QUEUE) -> list[tuple[str, list[Any], str]]:
    return taken_messages(store, queue)


def stored_job(store: JobStore, shards: int, request: dict[str, Any] | None = None) -> str:
    job_id = store.new_job_id()
    spec = {"table": "demo.t", "shard_size": 2, "request": request or {}}
    store.create(job_id, spec, iter([pa.table({"driver_id": [n, n + 10]})
                                     for n in range(shards)]))
    return job_id


def idle(store: JobStore, job_id: str) -> None:
    store.redis.delete(f"featurepull:job:{job_id}:alive")  # no sign of life for the limit


def test_a_stalled_job_is_sent_its_shards_not_done_then_its_finisher(
        store: JobStore, app: Any, settings: Settings) -> None:
    busy = stored_job(store, shards=1)  # alive: left alone (and looked at first)
    job_id = stored_job(store, shards=23)
    assert resend_stalled(app, store, RESENT, settings) == {}
    store.put_shard_rows(job_id, 1, pa.table({"driver_id": [1]}), {})
    idle(store, job_id)
    with structlog.testing.capture_logs() as logs:
        assert resend_stalled(app, store, RESENT, settings) == {job_id: [0, *range(2, 23)]}
    meta = store.meta(job_id)
    assert sent(store, RESENT) == sorted(
        ("featurepull.read_shard", [job_id, n], monitor.shard_args(meta, n))
        for n in (0, *range(2, 23)))
    assert logs == [{"event": "job_stalled_resent", "log_level": "warning", "job_id": job_id,
                     "state": "queued", "shards": [0, *range(2, 21)], "shards_resent": 22,
                     "finisher": False, "idle_s": 60}]
    assert resend_stalled(app, store, RESENT, settings) == {}  # alive again for the idle limit
    for shard in (0, *range(2, 23)):
        store.put_shard_rows(job_id, shard, pa.table({"driver_id": [1]}), {})
    idle(store, job_id)
    with structlog.testing.capture_logs() as logs:
        assert resend_stalled(app, store, RESENT, settings) == {job_id: []}
    assert sent(store, RESENT) == [
        ("featurepull.finish_job", [job_id], monitor.finish_args(meta))]
    assert sent(store) == []  # nothing on the app's own queue
    assert [(e["event"], e["shards"], e["shards_resent"], e["finisher"]) for e in logs] == [
        ("job_stalled_resent", [], 0, True)]
    assert busy in store.active_jobs()


def test_a_job_whose_submitter_died_is_failed_once_and_what_it_stored_removed(
        store: JobStore, app: Any, settings: Settings, tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    request = JobRequest(table="driver_stats", features=["city"], entities="e.parquet",
                         output=str(output), join_keys=["driver_id"],
                         notify={"task": "ended", "queue": QUEUE})
    job_id = stored_job(store, shards=2, request=request.model_dump(mode="json"))
    staging = tmp_path / f".out.parquet.parts-{job_id}"  # as the submitter left it
    staging.mkdir()
    (staging / "keys-0").write_bytes(b"staged")
    store.redis.hset(f"featurepull:job:{job_id}:meta", "submitting", "gone-host:77")
    stalled = stored_job(store, shards=1)  # looked at after it, in the same round
    idle(store, stalled)
    with structlog.testing.capture_logs() as logs:
        assert resend_stalled(app, store, RESENT, settings) == {stalled: [0]}
    assert [args for _, args, _ in sent(store, RESENT)] == [[stalled, 0]]
    error = ("the process that submitted the job (gone-host:77) stopped before it had stored "
             "and sent every shard (it was killed, or its machine died); submit the job again")
    meta = store.meta(job_id)
    assert (meta.state, meta.error) == ("failed", error)
    assert {"event": "job_submitter_gone", "log_level": "warning", "job_id": job_id,
            "error": error} in logs
    assert not staging.exists()
    assert not store.redis.exists(*(f"featurepull:job:{job_id}:keys:{n}" for n in (0, 1)))
    assert store.end_announced(job_id)
    [(task, args, shown)] = sent(store)  # the end announced: its notify task
    assert (task, args[0]["job_id"], args[0]["state"], shown) == (
        "ended", job_id, "failed", f"job_id={job_id} state=failed")
    assert job_id in store.active_jobs()
    assert resend_stalled(app, store, QUEUE, settings) == {}
    assert job_id not in store.active_jobs()
    assert sent(store) == []  # ended: not failed or announced again


def test_a_job_whose_message_waits_in_the_broker_is_not_resent(
        store: JobStore, app: Any, settings: Settings) -> None:
    job_id = stored_job(store, shards=2)
    lists, unacked = broker_keys(app, QUEUE)
    idle(store, job_id)
    store.redis.rpush(lists[-1], json.dumps({"args": [job_id, 1]}))  # queued, low priority
    assert resend_stalled(app, store, QUEUE, settings) == {}
    store.redis.delete(*lists)
    idle(store, job_id)
    store.redis.hset(unacked, "tag-1", json.dumps([{"args": [job_id, 0]}, "", QUEUE]))
    assert resend_stalled(app, store, QUEUE, settings) == {}  # held by a worker, not acked yet
    store.redis.delete(unacked)
    idle(store, job_id)
    assert resend_stalled(app, store, QUEUE, settings) == {job_id: [0, 1]}  # lost: sent again


def test_a_scan_job_is_sent_its_scan_tasks_not_done(store: JobStore, app: Any,
                                                    settings: Settings) -> None:
    job_id = store.new_job_id()
    spec = {"table": "demo.t", "shard_size": 2, "layout": "feast",
            "key_types": {"driver_id": "int64"}, "key_columns": ["driver_id"],
            "read_plan": {"mode": "scan", "reason": "test", "total_segments": 4,
                          "scan_tasks": 2}}
    store.create(job_id, spec, iter([pa.table({"driver_id": [1, 2]})] * 2))
    store.put_scan_part(job_id, 0, {}, {})
    idle(store, job_id)
    assert resend_stalled(app, store, QUEUE, settings) == {job_id: [0, 1]}
    assert [(task, args) for task, args, _ in sent(store)] == [
        ("featurepull.scan_segments", [job_id, 1])]


def test_a_job_failed_meanwhile_is_left_as_it_ended(store: JobStore, app: Any,
                                                    settings: Settings) -> None:
    from featurepull.tasks.watchdog import fail_abandoned

    job_id = stored_job(store, shards=1)
    assert store.cancel(job_id)
    fail_abandoned(app, store, job_id, "late", settings)
    meta = store.meta(job_id)
    assert (meta.state, meta.error) == ("cancelled", "cancelled by request")
    assert store.redis.exists(f"featurepull:job:{job_id}:keys:0")  # not the watchdog's to free
    # Its end is announced as it ended (once, whoever comes first), as a failing task does.
    assert store.end_announced(job_id) and store.meta(job_id).state == "cancelled"


def test_broker_keys_are_kombus_queue_lists_and_unacked_hash(app: Any) -> None:
    from kombu.transport.redis import Channel

    lists, unacked = broker_keys(app, "q")
    assert lists == ["q", *(f"q\x06\x16{step}" for step in Channel.priority_steps[1:])]
    assert unacked == "unacked"
    app.conf.broker_transport_options = {"priority_steps": [0, 5], "sep": ":",
                                         "global_keyprefix": "fp-", "unacked_key": "held"}
    assert broker_keys(app, "q") == (["fp-q", "fp-q:5"], "fp-held")
    app.conf.broker_transport_options = {"global_keyprefix": "fp-"}
    lists, unacked = broker_keys(app, "q")
    assert (lists[:2], unacked) == (["fp-q", "fp-q\x06\x163"], "fp-unacked")


def test_the_watchdog_thread_resends_until_stopped_and_outlives_a_failed_check(
        store: JobStore, app: Any, settings: Settings) -> None:
    # Checks every second: 20 s is a generous deadline (and what a mutant that stops the
    # checks costs scripts/mutation.sh).
    job_id = stored_job(store, shards=1)
    idle(store, job_id)
    gone = stored_job(store, shards=1)
    store.redis.hset(f"featurepull:job:{gone}:meta", "submitting", "gone-host:79")
    settings.jobs = settings.jobs.model_copy(update={"visibility_timeout_s": 2_000})
    with structlog.testing.capture_logs() as logs:
        watchdog = Watchdog(app, settings)
        assert (watchdog.name, watchdog.daemon) == ("featurepull-watchdog", True)
        watchdog.start()
        try:
            wait_until(lambda: store.redis.llen(QUEUE) and store.end_announced(gone),
                       "re-send and announced end", 20)
            assert sent(store) == [("featurepull.read_shard", [job_id, 0],
                                    monitor.shard_args(store.meta(job_id), 0))]
            # Its store has the workers' idle limit as the alive key's TTL.
            assert 1_900 < store.redis.ttl(f"featurepull:job:{job_id}:alive") <= 2_000
            # ... and the workers' TTL: the announced end expires with the job.
            assert 0 < store.redis.ttl(f"featurepull:job:{gone}:ended") <= settings.jobs.ttl_s
        finally:
            watchdog.stop()
            watchdog.join(timeout=20)
        assert not watchdog.is_alive()
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with structlog.testing.capture_logs() as logs:
        watchdog = Watchdog(app, broken)
        watchdog.start()
        try:
            wait_until(lambda: len([e for e in logs if e["event"] == "watchdog_check_failed"])
                       >= 2, "second failed check", 20)
        finally:
            watchdog.stop()
            watchdog.join(timeout=20)
    failed = [e for e in logs if e["event"] == "watchdog_check_failed"]
    assert failed[0]["log_level"] == "warning"
    assert failed[0]["error"].startswith("RedisUnavailable: cannot reach Redis at "
                                         "redis://127.0.0.1:1/0 (")
