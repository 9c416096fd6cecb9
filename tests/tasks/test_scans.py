"""The pieces of a scan job, in this process against the real redis-server: the scan keys of
a job (the map in featurepull/tasks/store.py's docstring), where each key sits in the entity
shards (repeats across shards included), what a scan task stores by shard and how a shard's
rows come back from it, the segments of each scan task, the read plan made at submit, and
the messages a scan job is sent (and re-sent by the watchdog) in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from featurepull.config import Settings
from featurepull.dynamo.layouts import FeastLayout
from featurepull.local import RedisService
from featurepull.tasks.scans import (
    ScanRefused,
    count_unique,
    key_map,
    partitions,
    plan_job_read,
    scanned_result,
    segments_of,
)
from featurepull.tasks.store import JobStore, connect
from tests.tasks.conftest import taken_messages

TTL = 1_000
TS = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def store(redis_server: RedisService) -> JobStore:
    return JobStore(connect(redis_server.url), TTL)


def ids(*values: int) -> pa.Table:
    return pa.table({"driver_id": pa.array(values, pa.int64())})


def scan_job(store: JobStore, shards: list[pa.Table], scan_tasks: int) -> str:
    job_id = store.new_job_id()
    spec = {"table": "t", "shard_size": 3, "layout": "feast", "key_types": {"driver_id": "int64"},
            "key_columns": ["driver_id"],
            "read_plan": {"mode": "scan", "reason": "test", "total_segments": 4,
                          "scan_tasks": scan_tasks}}
    store.create(job_id, spec, iter(shards))
    return job_id


def test_a_scan_task_stores_its_partitions_once_and_a_shard_joins_them(
        store: JobStore) -> None:
    layout = FeastLayout({"driver_id": "int64"})
    # Driver 1 is in both shards (twice in shard 0); driver 9 has no item.
    job_id = scan_job(store, [ids(1, 2, 1), ids(3, 1, 9)], scan_tasks=2)
    meta = store.meta(job_id)
    where = key_map(store, meta, layout, Settings())
    key = layout.keys_for({"driver_id": [1, 2, 3, 9]})
    assert where[key[0]] == (0 << 32 | 0, 1 << 32 | 1)  # first position in each shard
    assert where[key[1]] == 0 << 32 | 1 and where[key[2]] == 1 << 32 | 0
    rows = {key[0]: (TS, 0.5), key[1]: (TS, None), key[2]: (None, 2.5)}
    # Task 0 matched drivers 1 and 2, task 1 driver 3 (their segments split the table).
    first = partitions({key[0]: rows[key[0]], key[1]: rows[key[1]]}, where, ["f"])
    second = partitions({key[2]: rows[key[2]]}, where, ["f"])
    assert sorted(first) == [0, 1] and sorted(second) == [1]
    stats: dict[str, Any] = {"pages": 2, "items_scanned": 10}
    assert store.put_scan_part(job_id, 0, first, stats) == 1
    assert store.put_scan_part(job_id, 0, first, stats) == 1  # redelivered: the same again
    assert store.scan_done_count(job_id) == 1 and store.is_scan_done(job_id, 0)
    assert store.put_scan_part(job_id, 1, second, stats) == 2
    assert store.scan_parts_done(job_id) == {0, 1}
    assert store.all_scan_stats(job_id) == {0: stats, 1: stats}
    for part, shard in ((0, 0), (0, 1), (1, 1)):
        name = f"featurepull:job:{job_id}:scan:{part}:{shard}"
        assert TTL - 100 < store.redis.ttl(name) <= TTL
    assert not store.redis.exists(f"featurepull:job:{job_id}:scan:1:0")  # nothing matched
    shard0 = layout.keys_for({"driver_id": [1, 2, 1]})
    shard1 = layout.keys_for({"driver_id": [3, 1, 9]})
    built0 = scanned_result(store, meta, 0, shard0)
    built1 = scanned_result(store, meta, 1, shard1)
    assert built0.rows == [(TS, 0.5), (TS, None), (TS, 0.5)]
    assert built1.rows == [(None, 2.5), (TS, 0.5), None]
    assert (built1.stats.keys, built1.stats.unique_keys, built1.stats.found,
            built1.stats.missing, built1.stats.read_mode) == (3, 3, 2, 1, "scan")
    store.drop_scan_partitions(job_id, 1, 2)
    assert store.scan_partitions(job_id, 1, 2) == []
    assert len(store.scan_partitions(job_id, 0, 2)) == 1


def test_scan_tasks_share_the_segments_evenly() -> None:
    plan = {"total_segments": 10, "scan_tasks": 4}
    shares = [segments_of(plan, part) for part in range(4)]
    assert shares == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]


def test_unique_keys_are_counted_over_every_shard() -> None:
    assert count_unique([ids(1, 2, 1), ids(2, 3)], ["driver_id"]) == 3
    two = [pa.table({"a": [1, 1, 2], "b": ["x", "y", "x"]}), pa.table({"a": [1], "b": ["x"]})]
    assert count_unique(two, ["a", "b"]) == 3
    assert count_unique([], ["a"]) == 0


DESCRIPTION = {"TableName": "t", "ItemCount": 200_000, "TableSizeBytes": 60_000_000}


def settings(read_mode: str, max_scan_keys: int = 2_000_000,
             scan_task_bytes: int = 8 * 1024**2) -> Settings:
    return Settings(dynamodb={"read_mode": read_mode},
                    jobs={"max_scan_keys": max_scan_keys, "scan_task_bytes": scan_task_bytes})


def test_the_read_plan_made_at_submit() -> None:
    scan = plan_job_read(settings("auto"), "t", DESCRIPTION, 150_000, shards=3)
    assert scan["mode"] == "scan" and scan["requested"] == "auto"
    assert scan["reason"].startswith("read_mode=scan: ~")
    assert scan["scan_rcu"] < scan["batch_get_rcu"]
    # A scan task scans 100 bytes per key (15 MB here) of the 60 MB table: 4 tasks, but
    # never more than the shards; max_read_workers (10) segments each.
    assert (scan["scan_tasks"], scan["total_segments"]) == (3, 30)
    many = plan_job_read(settings("auto"), "t", DESCRIPTION, 150_000, shards=10)
    assert (many["scan_tasks"], many["total_segments"]) == (4, 40)
    # jobs.scan_task_bytes when it is more: 30 MB a task.
    big = plan_job_read(settings("auto", scan_task_bytes=30_000_000), "t", DESCRIPTION,
                        150_000, shards=10)
    assert (big["scan_tasks"], big["total_segments"]) == (2, 20)
    few = plan_job_read(settings("auto"), "t", DESCRIPTION, 1_000, shards=1)
    assert few["mode"] == "batch-get" and "total_segments" not in few
    asked = plan_job_read(settings("batch-get"), "t", None, 0, shards=3)
    assert asked == {"mode": "batch-get", "requested": "batch-get",
                     "reason": "read_mode=batch-get (requested)"}
    over = plan_job_read(settings("auto", 100_000), "t", DESCRIPTION, 150_000, shards=3)
    assert over["mode"] == "batch-get" and "over jobs.max_scan_keys (100,000)" in over["reason"]
    with pytest.raises(ScanRefused, match=r"150,000 or more unique keys, over jobs.max_scan_keys"):
        plan_job_read(settings("scan", 100_000), "t", DESCRIPTION, 150_000, shards=3)
    views = plan_job_read(settings("auto"), "t", None, 0, shards=3, references=True)
    assert views["mode"] == "batch-get" and "several views" in views["reason"]
    with pytest.raises(ScanRefused, match="several views"):
        plan_job_read(settings("scan"), "t", None, 0, shards=3, references=True)


def test_a_scan_job_sends_its_scan_tasks_first_and_the_watchdog_what_is_missing(
        redis_server: RedisService) -> None:
    # No worker: the messages stay on the queue, where we read which tasks they name.
    from featurepull.tasks.celery_tasks import enqueue_shards
    from featurepull.tasks.watchdog import resend_stalled
    from featurepull.worker.producer import producer_app

    url = f"redis://127.0.0.1:{redis_server.port}/15"
    queue = "scan-messages"
    store = JobStore(connect(url), TTL, idle_s=1)
    worker_settings = Settings(redis_url=url, jobs={"queue": queue})
    app = producer_app(worker_settings)

    def sent() -> list[tuple[str, list[Any]]]:
        return [(task, args) for task, args, _ in taken_messages(store, queue)]

    try:
        job_id = scan_job(store, [ids(1, 2, 1), ids(3, 1, 9)], scan_tasks=2)
        enqueue_shards(app, store.meta(job_id), queue)  # as submit does
        assert sent() == [("featurepull.scan_segments", [job_id, 0]),
                          ("featurepull.scan_segments", [job_id, 1])]
        store.put_scan_part(job_id, 0, {}, {})
        store.redis.delete(f"featurepull:job:{job_id}:alive")  # idle past the limit
        assert resend_stalled(app, store, queue, worker_settings) == {job_id: [0, 1]}
        assert sent() == [("featurepull.scan_segments", [job_id, 1])]  # the task not done
        store.put_scan_part(job_id, 1, {}, {})
        store.redis.delete(f"featurepull:job:{job_id}:alive")
        resend_stalled(app, store, queue, worker_settings)  # the scan is complete: now the shards
        assert sent() == [("featurepull.read_shard", [job_id, 0]),
                          ("featurepull.read_shard", [job_id, 1])]
    finally:
        app.close()
        store.redis.flushdb()
