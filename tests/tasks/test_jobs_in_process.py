"""A job's steps in this process, without Celery: create_job stores the shards, run_shard
reads one against a real HTTP endpoint, finish_job writes the ordered output — all on the
real redis-server. Fast enough for the mutation runs (scripts/mutation.sh), which trace only
this process; the same steps through prefork workers are in test_pipeline.py."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import EndpointProcess, SyntheticTable
from featurepull.config import ConfigError, S3Settings, Settings
from featurepull.dynamo import decode_value
from featurepull.dynamo.errors import EntityKeyError, TableError
from featurepull.dynamo.layouts import FeastLayout, parse_event_ts
from featurepull.dynamo.plan import layout_spec
from featurepull.io import EntityFileError, EntityTable, OutputError, _csv_stream
from featurepull.io.parts import StagedOutput
from featurepull.tasks import JobStore
from featurepull.tasks.confine import RequestOutOfBounds
from featurepull.tasks.create import _shard_tables, _store_shards, create_job, load_entities
from featurepull.tasks.finish import finish_job
from featurepull.tasks.fleet import (
    LOWER_SHARD_SIZE,
    forget_pool,
    record_pool,
    time_limit_advice,
)
from featurepull.tasks.requests import JobRequest, OutputRequired, RequestTooLarge
from featurepull.tasks.scoring import UnknownScorer
from featurepull.tasks.shards import JobStopped, run_shard
from featurepull.tasks.store import JobMeta
from tests.conftest import REGION, unique_name, wait_until
from tests.tasks.conftest import DRIVERS

FEATURES = ["conv_rate", "city"]
# The session's 200,000 drivers (tests/tasks/conftest.py): 200,000.. are unknown.
IDS = [199_000 + (i * 37) % 1_200 for i in range(450)]


def entities(tmp_path: Path) -> Path:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(IDS, pa.int64())}), path)
    return path


def ids_request(tmp_path: Path, **fields: Any) -> JobRequest:
    """A request for FEATURES of driver_stats for IDS (written to tmp_path), and ``fields``."""
    return JobRequest(table="driver_stats", features=FEATURES,
                      entities=str(entities(tmp_path)), **fields)


def expected(ids: list[int]) -> list[dict[str, object]]:
    table = SyntheticTable(0)
    rows: list[dict[str, object]] = []
    for driver in ids:
        if driver >= DRIVERS:
            rows.append({"driver_id": driver, "event_timestamp": None,
                         **dict.fromkeys(FEATURES)})
        else:
            stored = table.expected_features(driver)
            rows.append({"driver_id": driver,
                         "event_timestamp": parse_event_ts(table.event_ts(driver)),
                         **{f: decode_value(stored[f]) for f in FEATURES}})
    return rows


def test_shards_read_in_any_order_finish_in_input_order(settings: Settings, store: JobStore,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    request = ids_request(tmp_path, output=str(out))
    meta = create_job(request, settings, store)
    assert (meta.state, meta.shards, meta.rows) == ("queued", 5, len(IDS))
    assert finish_job(meta.job_id, settings, store) is None  # not every shard is done
    reported: list[tuple[int, int]] = []
    lasts = [run_shard(meta.job_id, shard, settings, store,
                       report=lambda done, total, _capacity: reported.append((done, total)))
             for shard in (4, 2, 0, 3, 1)]
    assert lasts == [False, False, False, False, True]
    assert reported and all(0 < done <= total <= 100 for done, total in reported)
    assert store.meta(meta.job_id).state == "running"
    # A redelivered shard that already finished reads nothing and changes nothing.
    assert run_shard(meta.job_id, 2, settings, store) is True
    summary = finish_job(meta.job_id, settings, store)
    assert summary is not None
    assert summary["rows"] == summary["rows_written"] == len(IDS)
    assert summary["shards"] == 5 and summary["redelivered_shards"] == 0
    unknown = sum(d >= DRIVERS for d in IDS)
    assert summary["read"]["missing"] == unknown
    assert summary["read"]["found"] == len(IDS) - unknown
    assert summary["read"]["requests"] == 5
    assert [s["shard"] for s in summary["slowest_shards"]] != [] and len(
        summary["slowest_shards"]) == 3
    assert pq.read_table(out).to_pylist() == expected(IDS)
    assert store.meta(meta.job_id).state == "succeeded"
    assert finish_job(meta.job_id, settings, store) is None  # once
    assert not list(store.redis.scan_iter(f"featurepull:job:{meta.job_id}:rows:*"))


def test_rows_stay_in_redis_without_an_output(settings: Settings, store: JobStore,
                                              tmp_path: Path) -> None:
    request = ids_request(tmp_path)
    meta = create_job(request, settings, store)
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
    summary = finish_job(meta.job_id, settings, store)
    assert summary is not None and summary["rows_written"] is None
    rows = [row for n in range(meta.shards)
            for row in store.shard_rows(meta.job_id, n).to_pylist()]
    assert rows == expected(IDS)


def test_a_cancelled_or_failed_job_reads_no_more_shards(settings: Settings, store: JobStore,
                                                        fast_dynamo: EndpointProcess,
                                                        tmp_path: Path) -> None:
    request = ids_request(tmp_path)
    meta = create_job(request, settings, store)
    run_shard(meta.job_id, 0, settings, store)
    assert store.cancel(meta.job_id)
    before = fast_dynamo.stats()["keys"]
    assert run_shard(meta.job_id, 1, settings, store) is False
    assert fast_dynamo.stats()["keys"] == before
    assert store.done_count(meta.job_id) == 1 and finish_job(meta.job_id, settings, store) is None

    other = create_job(request, settings, store)
    progress: list[int] = []

    def fail_midway(done: int, total: int, capacity: dict[str, Any]) -> None:
        progress.append(done)
        store.fail(other.job_id, "shard 9: boom")

    # The first progress report fails the job; the last check (all keys answered) stops
    # the shard before it stores its rows.
    small_batches = settings.model_copy(update={
        "dynamodb": settings.dynamodb.model_copy(update={"batch_size": 10})})
    with pytest.raises(JobStopped):
        run_shard(other.job_id, 0, small_batches, store, report=fail_midway)
    assert store.done_count(other.job_id) == 0
    assert progress and store.meta(other.job_id).error == "shard 9: boom"


class Sent:
    """What create_job sends (an ``Enqueue``): shards and scan tasks, in order; raises
    ``RuntimeError`` at the message numbered ``fail_at`` (from 0)."""

    def __init__(self, fail_at: int | None = None, store: JobStore | None = None) -> None:
        self.messages: list[tuple[str, str, int]] = []
        self.fail_at = fail_at
        self.store = store
        self.stored: list[int] = []  # with a store: the shards' keys stored at each message

    def _send(self, kind: str, meta: JobMeta, number: int) -> None:
        if self.store is not None:
            self.stored.append(sum(k.startswith("keys:") for k in job_keys(self.store,
                                                                          meta.job_id)))
        if len(self.messages) == self.fail_at:
            self.messages.append(("failed", meta.job_id, number))
            raise RuntimeError("the broker went away")
        self.messages.append((kind, meta.job_id, number))

    def __call__(self, meta: JobMeta, shard: int) -> None:
        self._send("shard", meta, shard)

    def scan(self, meta: JobMeta, part: int) -> None:
        self._send("scan", meta, part)


def job_keys(store: JobStore, job_id: str) -> list[str]:
    return sorted(k.decode().split(f"{job_id}:", 1)[1]
                  for k in store.redis.scan_iter(f"featurepull:job:{job_id}:*"))


@pytest.mark.mutation_first
def test_each_shard_is_stored_then_sent_in_order(settings: Settings, store: JobStore,
                                                 tmp_path: Path) -> None:
    request = ids_request(tmp_path)
    sent = Sent()
    meta = create_job(request, settings, store, enqueue=sent)
    assert [(kind, shard) for kind, _, shard in sent.messages] == [
        ("shard", n) for n in range(5)]
    assert {job_id for _, job_id, _ in sent.messages} == {meta.job_id}
    assert (meta.shards, meta.rows) == (5, len(IDS))
    stored = [store.shard_keys(meta.job_id, n) for n in range(5)]
    assert [t.num_rows for t in stored] == [100] * 4 + [50]
    assert all(t.schema.field("driver_id").type == pa.int64() for t in stored)
    assert [v for t in stored for v in t.column("driver_id").to_pylist()] == IDS
    done = store.meta(meta.job_id)
    assert done.request.read_plan is not None and done.request.read_plan["mode"] == "batch-get"
    assert "submitting" not in store.redis.hgetall(f"featurepull:job:{meta.job_id}:meta")
    assert not store.redis.exists(f"featurepull:job:{meta.job_id}:submitter")
    assert getattr(done.request, "keys_in", None) == "redis"


@pytest.mark.mutation_first
def test_a_job_with_an_output_stages_its_keys_beside_it(settings: Settings, store: JobStore,
                                                        tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    request = ids_request(tmp_path, output=str(output))
    meta = create_job(request, settings, store)
    assert getattr(store.meta(meta.job_id).request, "keys_in", None) == "staged"
    assert not [k for k in job_keys(store, meta.job_id) if k.startswith("keys:")]
    staged = StagedOutput(str(output), meta.job_id, meta.shards)
    assert pa.concat_tables(staged.read_keys(n) for n in range(meta.shards)).column(
        "driver_id").to_pylist() == IDS


@pytest.mark.mutation_first
@pytest.mark.parametrize("fail_at", [None, 2])
def test_a_scan_job_sends_its_scan_tasks_once_every_shard_is_stored(
        settings: Settings, store: JobStore, tmp_path: Path, fail_at: int | None) -> None:
    scan = settings.model_copy(update={
        "dynamodb": settings.dynamodb.model_copy(update={"read_mode": "scan"})})
    request = ids_request(tmp_path)
    sent = Sent(fail_at)
    if fail_at is not None:  # the third scan task's message fails: the job with it
        with pytest.raises(RuntimeError):
            create_job(request, scan, store, enqueue=sent)
        assert store.meta(sent.messages[0][1]).error == (
            "submit stopped after 2 of 5 shards were sent: RuntimeError: the broker went away")
        return
    meta = create_job(request, scan, store, enqueue=sent)
    plan = store.meta(meta.job_id).request.read_plan
    assert plan is not None and plan["mode"] == "scan" and meta.request.read_plan == plan
    assert plan["scan_tasks"] == 5  # 450 keys, 5 shards
    assert sent.messages == [("scan", meta.job_id, n) for n in range(5)]


@pytest.mark.mutation_first
def test_shards_wait_for_the_plan_when_the_rows_cannot_decide_it(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    # 30,000 rows could make a scan cheaper; their 450 distinct keys do not: batch-get,
    # known (and each shard sent) only once every shard is stored.
    path = tmp_path / "repeated.parquet"
    pq.write_table(pa.table({"driver_id": pa.array([IDS[n % 450] for n in range(30_000)],
                                                   pa.int64())}), path)
    big = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"shard_size": 10_000})})
    request = JobRequest(table="driver_stats", features=FEATURES, entities=str(path))
    failing = Sent(fail_at=2)
    with pytest.raises(RuntimeError):
        create_job(request, big, store, enqueue=failing)
    assert store.meta(failing.messages[0][1]).error == (
        "submit stopped after 2 of 3 shards were sent: RuntimeError: the broker went away")
    sent = Sent(store=store)
    meta = create_job(request, big, store, enqueue=sent)
    assert sent.messages == [("shard", meta.job_id, n) for n in range(3)]
    assert sent.stored == [3, 3, 3]
    plan = store.meta(meta.job_id).request.read_plan
    assert plan is not None and (plan["mode"], plan["unique_keys"]) == ("batch-get", 450)


@pytest.mark.mutation_first
@pytest.mark.parametrize("fail_at", [0, 2])
def test_a_submit_that_stops_leaves_no_job_or_fails_the_one_it_sent(
        settings: Settings, store: JobStore, tmp_path: Path, fail_at: int) -> None:
    request = ids_request(tmp_path, output=str(tmp_path / "o.parquet"))
    sent = Sent(fail_at)
    with pytest.raises(RuntimeError, match="the broker went away"):
        create_job(request, settings, store, enqueue=sent)
    job_id = sent.messages[0][1]
    assert [p.name for p in tmp_path.iterdir()] == ["ids.parquet"]  # no staged keys left
    if fail_at == 0:  # nothing was sent: nothing is left
        assert job_keys(store, job_id) == []
        return
    meta = store.meta(job_id)
    assert meta.state == "failed" and meta.error == (
        "submit stopped after 2 of 5 shards were sent: RuntimeError: the broker went away")
    assert not [k for k in job_keys(store, job_id) if k.startswith(("keys:", "rows:"))]


@pytest.mark.mutation_first
def test_entities_are_loaded_within_the_limits_from_a_file_s3_or_redis(
        settings: Settings, store: JobStore, endpoint_url: str, tmp_path: Path) -> None:
    csv = b"driver_id\n1001\n1002\n"
    path = tmp_path / "e.csv"
    path.write_bytes(csv)
    tight = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"max_entity_file_bytes": len(csv) - 1})})
    with pytest.raises(EntityFileError, match=rf"^{path} is {len(csv)} bytes; .*at most "
                                              rf"{len(csv) - 1} bytes"):
        load_entities(str(path), tight, store)
    # s3:// with the settings' S3 endpoint.
    s3: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)
    bucket = unique_name("featurepull-")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="e.csv", Body=csv)
    on_s3 = settings.model_copy(update={"s3": S3Settings(endpoint_url=endpoint_url,
                                                         region=REGION)})
    loaded = load_entities(f"s3://{bucket}/e.csv", on_s3, store)
    assert loaded.columns["driver_id"] == [1001, 1002]
    s3.put_object(Bucket=bucket, Key="out.parquet", Body=b"keep me")  # an S3 output exists
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        create_job(JobRequest(table="driver_stats", features=FEATURES, entities=str(path),
                              output=f"s3://{bucket}/out.parquet"), on_s3, store)
    # redis-key:NAME, a Parquet file's bytes: named as given, bounded by its length.
    name = unique_name("entities-")
    with pytest.raises(EntityFileError) as missing:
        load_entities(f"redis-key:{name}", settings, store)
    assert str(missing.value) == (f"redis-key:{name}: no such Redis key; store the entities "
                                  "there as a Parquet file's bytes first")
    table = tmp_path / "e.parquet"
    pq.write_table(pa.table({"driver_id": pa.array([7, 8, 9], pa.int32())}), table)
    store.redis.set(name, table.read_bytes(), ex=60)
    size = table.stat().st_size
    small = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"max_entity_file_bytes": size - 1})})
    with pytest.raises(EntityFileError, match=rf"^redis-key:{name} is {size:,} bytes"):
        load_entities(f"redis-key:{name}", small, store)
    few = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"max_entities": 2})})
    with pytest.raises(EntityFileError) as over:  # the footer's rows, within the limits
        load_entities(f"redis-key:{name}", few, store)
    assert str(over.value).startswith(f"redis-key:{name} has 3 entities")
    loaded = load_entities(f"redis-key:{name}", settings, store)
    assert (loaded.source, loaded.columns, loaded.types) == (
        f"redis-key:{name}", {"driver_id": [7, 8, 9]}, {"driver_id": "int32"})
    # A bad key (2**31 as int32) stops the streamed read: the whole file is loaded from
    # Redis again to name its row.
    pq.write_table(pa.table({"driver_id": pa.array([7, 2**31], pa.int64())}), table)
    store.redis.set(name, table.read_bytes(), ex=60)
    with pytest.raises(EntityKeyError) as bad_key:
        create_job(JobRequest(table="driver_stats", features=FEATURES,
                              entities=f"redis-key:{name}",
                              join_key_types={"driver_id": "int32"}), settings, store)
    assert str(bad_key.value) == (
        f"redis-key:{name}, entity row 2, column 'driver_id': 2147483648 is outside the "
        "int32 range")
    store.redis.set(name, b"not parquet", ex=60)
    with pytest.raises(EntityFileError) as bad:
        load_entities(f"redis-key:{name}", settings, store)
    assert str(bad.value).startswith(f"redis-key:{name}") and ".parquet" not in str(bad.value)


@pytest.mark.mutation_first
def test_shard_tables_keep_the_key_types_and_an_empty_file_is_one_shard(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    columns: dict[str, list[Any]] = {
        "i64": [1, 2, 3], "i32": [1, 2, 3], "s": ["a", "b", "c"], "b": [b"a", b"b", b"c"],
        "f": [1.5, 2.5, 3.5], "t": [True, False, True], "n": [None, None, None]}
    types = {"i64": "int64", "i32": "int32", "s": "string", "b": "bytes", "f": "float",
             "t": "bool", "n": "null"}
    shards = list(_shard_tables(EntityTable("e", columns, types), list(columns), 2))
    assert [t.num_rows for t in shards] == [2, 1]
    assert pa.concat_tables(shards).to_pydict() == columns
    assert [shards[0].schema.field(c).type for c in columns] == [
        pa.int64(), pa.int32(), pa.string(), pa.binary(), pa.float64(), pa.bool_(), pa.null()]
    one = list(_shard_tables(EntityTable("e", {"i32": [5]}, {"i32": "int32"}), ["i32"], 1))
    assert [t.to_pydict() for t in one] == [{"i32": [5]}]
    empty = list(_shard_tables(EntityTable("e", {"i32": []}, {"i32": "int32"}), ["i32"], 2))
    assert [(t.num_rows, t.schema.field("i32").type) for t in empty] == [(0, pa.int32())]


REFUSED: dict[str, tuple[dict[str, Any], dict[str, Any], type[Exception], str]] = {
    # case: (jobs settings, request fields, error, what it says)
    "request too large": ({"max_request_bytes": 300}, {"features": [f"f{n}" for n in range(40)]},
                          RequestTooLarge, "jobs.max_request_bytes"),
    "output not allowed": ({"allowed_outputs": ["ALLOWED"]}, {"output": "OUT"},
                           RequestOutOfBounds, "outside the locations this deployment allows"),
    "unknown scorer": ({}, {"scorer": "nope"}, UnknownScorer, "'nope' is not registered"),
    "notify on the job queue": ({}, {"notify": {"task": "app.done", "queue": "featurepull"}},
                                ConfigError, "is featurepull's own job queue"),
    "output exists": ({}, {"output": "EXISTING"}, OutputError, "exists; pass --overwrite"),
    "the request's project": ({}, {"project": "elsewhere"}, TableError, "does not exist"),
    "too many entities": ({"max_entities": 449}, {}, EntityFileError,
                          "has 450 entities; this deployment accepts at most 449 per job"),
    "rows kept in Redis": ({"max_entities_without_output": 449}, {}, OutputRequired,
                           "this job has 450 entities and no output"),
    "a key that cannot be built": ({}, {"join_key_types": {"driver_id": "int32"}},
                                   EntityKeyError, "entity row 450, column 'driver_id'"),
}


@pytest.mark.mutation_first
@pytest.mark.parametrize("whole", [False, True], ids=["streamed", "read-whole"])
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_request_stores_nothing(settings: Settings, store: JobStore, tmp_path: Path,
                                          case: str, whole: bool) -> None:
    jobs, fields, error, phrase = REFUSED[case]
    ids = [*IDS[:-1], 2**31]  # the last key fits int64, not int32
    # Quoted ids: a CSV file only the exact reader types, read whole; else streamed (CSV: a
    # Parquet file's footer is checked against the limits before create_job sees it).
    quote = '"' if whole else ""
    path = tmp_path / "ids.csv"
    path.write_text("driver_id\n" + "".join(f"{quote}{i}{quote}\n" for i in ids))
    existing = tmp_path / "existing.parquet"
    existing.write_bytes(b"keep me")
    named = {"EXISTING": str(existing), "OUT": str(tmp_path / "out" / "o.parquet"),
             "ALLOWED": str(tmp_path / "allowed")}
    fields = {k: named.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    jobs = {k: [named[p] for p in v] if isinstance(v, list) else v for k, v in jobs.items()}
    limited = settings.model_copy(update={"jobs": settings.jobs.model_copy(update=jobs)})
    request = JobRequest(**{"table": "driver_stats", "features": FEATURES,
                            "entities": str(path), **fields})
    before = set(store.redis.scan_iter("featurepull:job:*"))
    with pytest.raises(error) as refused:
        create_job(request, limited, store)
    assert phrase in str(refused.value)
    assert set(store.redis.scan_iter("featurepull:job:*")) <= before  # (others may expire)
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "out").exists()
    if case == "too many entities":  # named by its path; at the limit, accepted
        assert str(refused.value).startswith(f"{path} has 450")
        at_limit = settings.model_copy(update={"jobs": settings.jobs.model_copy(
            update={"max_entities": 450})})
        assert create_job(request.model_copy(update={"join_key_types": {}}), at_limit,
                          store).rows == 450
    if case == "output exists":  # unless it may be replaced
        request = request.model_copy(update={"overwrite": True, "join_key_types": {}})
        assert create_job(request, limited, store).rows == len(ids)


@pytest.mark.mutation_first
def test_the_submitter_sends_each_shard_once_stored_and_shows_itself_alive(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    beating = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"submitter_timeout_s": 3.0})})  # a sign of life every second
    request = ids_request(tmp_path)
    seen: list[tuple[int, int, str, int]] = []  # shard, keys stored, submitter, its TTL
    renewed: list[bool] = []

    def send(meta: JobMeta, shard: int) -> None:
        key = f"featurepull:job:{meta.job_id}"
        stored = sum(k.startswith("keys:") for k in job_keys(store, meta.job_id))
        seen.append((shard, stored, store.redis.hget(f"{key}:meta", "submitting").decode(),
                     int(store.redis.ttl(f"{key}:submitter"))))
        if shard == 0:  # gone: the heartbeat sets it again within a second
            store.redis.delete(f"{key}:submitter")
            renewed.append(bool(wait_until(lambda: store.redis.exists(f"{key}:submitter"),
                                           "the submitter's mark set again", 30)))

    meta = create_job(request, beating, store, enqueue=send)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    assert [(shard, stored, who) for shard, stored, who, _ in seen] == [
        (n, n + 1, owner) for n in range(5)]
    assert all(0 < ttl <= 3 for *_, ttl in seen) and renewed == [True]
    plan = store.meta(meta.job_id).request.read_plan
    assert plan is not None and plan["rows"] == len(IDS)
    # One shard for a job under the shard size.
    few = create_job(request.model_copy(update={"entities": str(pq_ids(tmp_path, [1, 2, 3]))}),
                     settings, store)
    assert (few.shards, few.rows) == (1, 3)


def pq_ids(tmp_path: Path, ids: list[int]) -> Path:
    path = tmp_path / f"ids-{len(ids)}.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


@pytest.mark.mutation_first
def test_a_file_that_changed_while_it_was_read_is_refused(settings: Settings, store: JobStore,
                                                          tmp_path: Path) -> None:
    # Its footer counted 450 rows; the batches read held 400 (a file still being written).
    request = ids_request(tmp_path)
    spec = {"request": request.model_dump(), "table": "demo.driver_stats", "shard_size": 100,
            **layout_spec(FeastLayout({"driver_id": "int64"}))}
    keys = pa.table({"driver_id": pa.array(IDS[:400], pa.int64())})
    before = set(store.redis.scan_iter("featurepull:job:*"))
    with pytest.raises(EntityFileError) as changed:
        _store_shards(spec, len(IDS), (keys.slice(n, 100) for n in range(0, 400, 100)), settings, store,
                      None, {"TableSizeBytes": 60_000_000, "ItemCount": 200_000})
    assert str(changed.value) == (
        f"{request.entities}: changed while it was read (450 rows counted, 4 shards read); "
        "submit it again once it is complete")
    assert set(store.redis.scan_iter("featurepull:job:*")) <= before  # (others may expire)


@pytest.mark.mutation_first
def test_a_streamed_files_key_errors_name_the_file_and_what_its_reader_noted(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    csv = tmp_path / "ids.csv"
    csv.write_text("driver_id\n1\n2\n")
    with pytest.raises(EntityKeyError) as missing:
        create_job(JobRequest(table="driver_stats", features=FEATURES, entities=str(csv),
                              join_keys=["user_id"]), settings, store)
    assert str(missing.value).startswith(f"{csv} has no column 'user_id' for --join-keys")
    jsonl = tmp_path / "ids.jsonl"  # a column of arrays is left out, with a note why
    jsonl.write_text('{"driver_id": 1, "tags": [1, 2]}\n{"driver_id": 2, "tags": []}\n')
    with pytest.raises(EntityKeyError) as noted:
        create_job(JobRequest(table="driver_stats", features=FEATURES, entities=str(jsonl),
                              join_keys=["tags"]), settings, store)
    assert str(noted.value).startswith(f"{jsonl}: column 'tags' holds ")
    assert str(noted.value).endswith(", so it cannot be a join key; write its values as "
                                     "integers or strings")


def late_csv(path: Path, late: str, at: int = 2_000) -> Path:
    """ids then ``late`` as a driver_id (a note column beside), in blocks of 4 KiB."""
    path.write_text("driver_id,note\n" + "".join(
        f"{value},n{i}\n" for i, value in enumerate([*range(at), late, 5])))
    return path


@pytest.fixture
def small_csv_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_csv_stream, "_BLOCK_BYTES", 4096)  # a tuning constant


def test_a_late_mixed_join_key_fails_the_job_sent_on_the_first_rows_types(
        settings: Settings, store: JobStore, tmp_path: Path, small_csv_blocks: None) -> None:
    # The first shards are sent once the first block is typed; text past it makes the join
    # key "mixed": the whole-file path's refusal, and the job its shards went to is failed.
    path = late_csv(tmp_path / "e.csv", "abc")
    request = JobRequest(table="driver_stats", features=FEATURES, entities=str(path),
                         join_keys=["driver_id"])
    sent: list[tuple[str, int]] = []
    with pytest.raises(EntityKeyError) as streamed:
        create_job(request, settings, store,
                   enqueue=lambda meta, shard: sent.append((meta.job_id, shard)))  # type: ignore[arg-type]
    with pytest.raises(EntityKeyError) as whole:
        create_job(request, settings, store, entities=load_entities(str(path), settings, store))
    assert str(streamed.value) == str(whole.value) == (
        f"{path}: column 'driver_id' mixes integers (line 2: '0') and other text (line 2002: "
        "'abc'), so its Feast join-key type is unclear: pass --join-key-types "
        "driver_id=int64 to read every value as an integer, or driver_id=string to hash every "
        "value as text")
    job_id = sent[0][0]
    assert sent[0] == (job_id, 0) and {job for job, _ in sent} == {job_id}
    meta = store.meta(job_id)
    assert meta.state == "failed" and meta.error is not None
    assert meta.error == f"submit stopped after {len(sent)} of 21 shards were sent: {whole.value}"


@pytest.mark.parametrize(("late", "types"), [("7", {}), ("007", {"driver_id": "string"}),
                                             ("007", {"driver_id": "int64"})])
def test_what_the_whole_file_path_takes_past_the_first_rows_is_one_job(
        settings: Settings, store: JobStore, tmp_path: Path, small_csv_blocks: None,
        late: str, types: dict[str, str]) -> None:
    # A join key of a given type that is mixed past the first block: read to its end
    # before anything is sent or stored, then read whole. A mixed column that is not a
    # join key (the note, late "7" beside "n0"...) streams.
    path = late_csv(tmp_path / "e.csv", late)
    if not types:
        path.write_text(path.read_text().replace(",n2001\n", ",7\n"))
    request = JobRequest(table="driver_stats", features=FEATURES, entities=str(path),
                         join_keys=["driver_id"], join_key_types=types)
    sent: list[str] = []
    meta = create_job(request, settings, store,
                      enqueue=lambda meta, shard: sent.append(meta.job_id))  # type: ignore[arg-type]
    assert sent == [meta.job_id] * 21 and meta.rows == 2_002
    keys = pa.concat_tables([store.shard_keys(meta.job_id, n) for n in range(21)])
    whole = _shard_tables(load_entities(str(path), settings, store), ["driver_id"], 100)
    assert keys.equals(pa.concat_tables(list(whole)))


def test_a_shard_past_its_time_limit_is_told_the_setting_that_sized_it(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    entity_file = str(pq_ids(tmp_path, list(range(1_000))))
    cut = settings.model_copy(deep=True)
    cut.jobs.queue = unique_name("fleet")
    cut.jobs.max_shard_size = 200
    record_pool(store.redis, "w@test", [cut.jobs.queue], 1)
    try:
        for using, advice in (
                (cut, "the job's shards of 200 entities were sized for its fleet: lower "
                      "jobs.max_shard_size (not below jobs.shard_size, 100) or raise "
                      "jobs.shard_soft_time_limit_s"),
                (settings, "lower jobs.shard_size or raise jobs.shard_soft_time_limit_s")):
            meta = create_job(JobRequest(table="driver_stats", features=FEATURES,
                                         entities=entity_file,
                                         output=str(tmp_path / "out.parquet")), using, store)
            assert time_limit_advice(store, meta.job_id) == advice
            store.delete(meta.job_id)  # gone meanwhile: the advice that needs no record
            assert time_limit_advice(store, meta.job_id) == LOWER_SHARD_SIZE
    finally:
        forget_pool(store.redis, "w@test", [cut.jobs.queue])


def test_a_job_cut_for_its_fleet_writes_the_file_shards_of_shard_size_write(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    ids = [199_000 + (i * 37) % 1_200 for i in range(1_000)]
    entity_file = str(pq_ids(tmp_path, ids))
    cut = settings.model_copy(deep=True)
    cut.jobs.queue = unique_name("fleet")
    cut.jobs.max_shard_size = 200
    record_pool(store.redis, "w@test", [cut.jobs.queue], 1)
    before = settings.model_copy(deep=True)  # shard_size 100 set alone: every shard 100
    outputs = []
    for name, using, shards, unit in (("fleet", cut, 5, 100), ("before", before, 10, 0)):
        out = tmp_path / f"{name}.parquet"
        request = JobRequest(table="driver_stats", features=FEATURES, entities=entity_file,
                             output=str(out))
        meta = create_job(request, using, store)
        assert (meta.shards, meta.request.shard_unit) == (shards, unit)
        for shard in range(meta.shards):
            run_shard(meta.job_id, shard, using, store)
        assert finish_job(meta.job_id, using, store) is not None
        outputs.append(out.read_bytes())
    # A scorer is called once per shard: its job keeps jobs.shard_size, fleet or not.
    cut.scorers = [{"name": "linear", "path": "tests.tasks.scorers_for_tests:linear"}]
    scored = create_job(JobRequest(table="driver_stats", features=FEATURES,
                                   entities=entity_file, output=str(tmp_path / "s.parquet"),
                                   scorer="linear"), cut, store)
    assert (scored.shards, scored.request.shard_unit) == (10, 0)
    # A file read whole (quoted values: only the exact reader types them) is cut alike.
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("driver_id\n" + "".join(f'"{i}"\n' for i in ids))
    whole = create_job(JobRequest(table="driver_stats", features=FEATURES,
                                  entities=str(quoted), output=str(tmp_path / "w.parquet")),
                       cut, store)
    assert (whole.shards, whole.request.shard_unit) == (5, 100)
    forget_pool(store.redis, "w@test", [cut.jobs.queue])
    assert outputs[0] == outputs[1]
    assert pq.read_table(tmp_path / "fleet.parquet").to_pylist() == expected(ids)
    assert pq.ParquetFile(tmp_path / "fleet.parquet").num_row_groups == 10
