"""Reading one shard of a job (featurepull.tasks.shards) in this process: what it reports
while it reads, logs and stores when it is done, sums for status, skips, and what it does
when its job ends or disappears meanwhile. Real redis-server and the session's endpoint."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import structlog

from featurepull.bench.endpoint import EndpointProcess
from featurepull.config import Settings
from featurepull.dynamo.errors import RequestError, TableError, UnknownFeatureError
from featurepull.dynamo.plan import CHECKED_KEYS
from featurepull.dynamo.views import ViewRead, ViewsPlan
from featurepull.tasks import JobStore, shards
from featurepull.tasks.feast_views import VIEWS
from featurepull.tasks.output import staged_output
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.shards import reset_process_state, run_shard, shard_totals
from featurepull.tasks.store import UnknownJob
from tests.tasks.conftest import DRIVERS, JOB_FEATURES, NewJob

FEATURES = JOB_FEATURES
# 2 shards: 100 rows of 80 drivers (20 rows unknown), then 40 rows (20 unknown).
IDS = [DRIVERS - 60 + i % 80 for i in range(100)] + [DRIVERS - 20 + i for i in range(40)]
CAPACITY = {"rcu_per_s", "budget_rcu_per_s", "budget_wait_s", "in_flight"}
# scripts/mutation.sh runs these first for a mutant of featurepull.tasks.shards: they kill
# most in seconds, before the bigger job tests in its list start.
pytestmark = pytest.mark.mutation_first
FEAST_KEYS = {"KeySchema": [{"AttributeName": "entity_id", "KeyType": "HASH"}],
              "AttributeDefinitions": [{"AttributeName": "entity_id", "AttributeType": "S"}]}


def describes(endpoint: EndpointProcess) -> int:
    """DynamoDB calls other than reads the endpoint answered (DescribeTable)."""
    stats = endpoint.stats()
    return int(stats["requests"] - stats["batch_get_item"] - stats["scan"])


def test_a_shard_reports_logs_and_stores_what_it_read(
        new_job: NewJob, settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    meta = new_job(IDS)
    reports: list[tuple[int, int, dict[str, Any]]] = []
    before = fast_dynamo.stats()["keys"]
    with structlog.testing.capture_logs() as logs:
        last = run_shard(meta.job_id, 0, settings, store, worker="host-a:1",
                         report=lambda done, total, capacity: reports.append(
                             (done, total, capacity)))
    assert last is False
    assert fast_dynamo.stats()["keys"] == before + 80  # each unique key asked for once
    done, total, capacity = reports[-1]
    assert (done, total) == (80, 80) and set(capacity) == CAPACITY
    assert store.progress(meta.job_id) == 100  # entity rows, as status counts them
    assert store.owners(meta.job_id) == {0: "host-a:1"}
    assert store.attempts(meta.job_id) == {0: 1}
    stats = store.all_stats(meta.job_id)[0]
    assert (stats["keys"], stats["unique_keys"], stats["found"], stats["missing"]) == (
        100, 80, 80, 20)
    assert stats["read_mode"] == "batch-get"
    assert stats["latencies_ms"] == [stats["latency_p50_ms"]]  # one request, to 0.01 ms
    rows = store.shard_rows(meta.job_id, 0).to_pylist()
    assert [row["driver_id"] for row in rows] == IDS[:100]
    assert [row["city"] is None for row in rows] == [d >= DRIVERS for d in IDS[:100]]

    (start,) = [entry for entry in logs if entry["event"] == "shard_start"]
    assert start == {"event": "shard_start", "log_level": "info",
                     "table": "demo.driver_stats", "rows": 100, "unique_keys": 80,
                     "shards": 2, "threads": settings.dynamodb.max_read_workers}
    (finished,) = [entry for entry in logs if entry["event"] == "shard_done"]
    seconds = stats["seconds"]
    assert finished == {
        "event": "shard_done", "log_level": "info", "rows": 100, "unique_keys": 80,
        "found": 80, "missing": 20, "requests": 1, "retries": 0, "unprocessed_retries": 0,
        "throttles": 0, "server_errors": 0, "connection_errors": 0,
        "rcu": round(stats["consumed_rcu"], 3),
        "rcu_per_s": finished["rcu_per_s"],
        "budget_rcu_per_s": 0.0, "budget_wait_s": 0.0,
        "in_flight": f"{stats['concurrency_min']}-{stats['concurrency_max']}",
        "latency_p50_ms": round(stats["latency_p50_ms"], 2),
        "latency_p99_ms": round(stats["latency_p99_ms"], 2),
        "seconds": round(seconds, 3), "rows_per_s": round(stats["rows_per_s"], 1),
        "shards_done": 1, "shards": 2}
    assert finished["rcu"] > 0
    # Per second of the shard's read, which is stored to the millisecond.
    assert stats["consumed_rcu"] / (seconds + 0.0005) <= finished["rcu_per_s"] + 0.05
    assert finished["rcu_per_s"] - 0.05 <= stats["consumed_rcu"] / max(seconds - 0.0005, 1e-9)

    assert run_shard(meta.job_id, 1, settings, store) is True  # the last shard
    # What status sums: every shard's counters, with or without their latencies.
    everything = store.all_stats(meta.job_id)
    total_stats = shard_totals(everything)
    assert (total_stats.keys, total_stats.found, total_stats.requests) == (140, 100, 2)
    assert sorted(total_stats.latencies_ms) == sorted(everything[0]["latencies_ms"]
                                                      + everything[1]["latencies_ms"])
    assert shard_totals(everything, latencies=False).latencies_ms == []
    assert shard_totals(everything, latencies=False).keys == 140


def without_carried_keys(store: JobStore, job_id: str) -> None:
    """The job's record as a submitter that carried no key schema stored it."""
    spec = store.meta(job_id).request.model_dump()
    assert spec.pop(CHECKED_KEYS) == {"demo.driver_stats": FEAST_KEYS}
    store.update_spec(job_id, spec)


def test_a_job_carries_its_tables_key_schema_and_no_process_describes_it(
        new_job: NewJob, settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    meta = new_job(IDS)
    assert meta.request.model_dump()[CHECKED_KEYS] == {"demo.driver_stats": FEAST_KEYS}
    reset_process_state()  # as after a fork: this process has no reader yet
    before = describes(fast_dynamo)
    run_shard(meta.job_id, 0, settings, store)
    assert run_shard(meta.job_id, 1, settings, store) is True
    assert describes(fast_dynamo) == before
    rows = store.shard_rows(meta.job_id, 0).to_pylist() + store.shard_rows(
        meta.job_id, 1).to_pylist()
    assert [row["driver_id"] for row in rows] == IDS
    assert [row["city"] is None for row in rows] == [d >= DRIVERS for d in IDS]


def test_a_process_describes_the_table_of_a_job_that_carries_none_once(
        new_job: NewJob, settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    meta = new_job(IDS)
    without_carried_keys(store, meta.job_id)  # an older submitter's, another app's
    reset_process_state()  # as after a fork: this process has no reader yet
    before = describes(fast_dynamo)
    run_shard(meta.job_id, 0, settings, store)
    assert describes(fast_dynamo) == before + 1
    run_shard(meta.job_id, 1, settings, store)
    assert describes(fast_dynamo) == before + 1


def test_a_carried_schema_is_its_own_jobs_alone(
        new_job: NewJob, settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    # A record that carries a schema the table does not have (forged, or a table changed
    # since) fails its own job; jobs of the same table read by the same process that carry
    # none, or carry one for another table only, describe it and read as ever.
    forged = new_job(IDS)
    spec = store.meta(forged.job_id).request.model_dump()
    spec[CHECKED_KEYS] = {"demo.driver_stats": {
        "KeySchema": [{"AttributeName": "user", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "user", "AttributeType": "S"}]}}
    store.update_spec(forged.job_id, spec)
    plain = new_job(IDS)
    without_carried_keys(store, plain.job_id)
    elsewhere = new_job(IDS)
    spec = store.meta(elsewhere.job_id).request.model_dump()
    spec[CHECKED_KEYS] = {"demo.other": FEAST_KEYS}
    store.update_spec(elsewhere.job_id, spec)
    reset_process_state()
    try:
        before = describes(fast_dynamo)
        with pytest.raises(TableError, match=r"^table demo\.driver_stats is keyed by user HASH"):
            run_shard(forged.job_id, 0, settings, store)
        assert describes(fast_dynamo) == before  # refused on what it carries
        for n, job in enumerate((plain, elsewhere), start=1):
            run_shard(job.job_id, 0, settings, store)
            assert describes(fast_dynamo) == before + n
            rows = store.shard_rows(job.job_id, 0).to_pylist()
            assert [row["driver_id"] for row in rows] == IDS[:100]
        assert len(shards._readers) == 3  # a reader of each job's own
    finally:
        reset_process_state()


def test_a_malformed_carried_schema_fails_its_shard_before_any_request(
        new_job: NewJob, settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    meta = new_job(IDS)
    spec = store.meta(meta.job_id).request.model_dump()
    spec[CHECKED_KEYS] = {"demo.driver_stats": {**FEAST_KEYS, "KeySchema": "entity_id"}}
    store.update_spec(meta.job_id, spec)
    before = fast_dynamo.stats()["requests"]
    with pytest.raises(RequestError, match=r"^the job's record carries a malformed key schema "
                                           r"for table demo.driver_stats \(checked_keys: its "
                                           r"KeySchema is not a list of 1 or 2 attributes\)"):
        run_shard(meta.job_id, 0, settings, store)
    assert fast_dynamo.stats()["requests"] == before


def test_a_process_keeps_the_readers_of_its_latest_jobs_only(
        new_job: NewJob, settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    # Each job has a reader of its own (its request is part of the spec): a long-lived
    # worker keeps the most recently used ones, and builds a dropped one again.
    jobs = []
    for n in range(shards.READERS_KEPT + 1):
        entities = tmp_path / f"ids-{n}.parquet"
        pq.write_table(pa.table({"driver_id": pa.array(IDS, pa.int64())}), entities)
        jobs.append(new_job(IDS, entities=str(entities)).job_id)
        without_carried_keys(store, jobs[-1])  # so that a reader built describes its table
    reset_process_state()  # as after a fork: this process has no reader yet
    try:
        before = describes(fast_dynamo)
        for job_id in jobs:
            run_shard(job_id, 0, settings, store)
        assert describes(fast_dynamo) == before + len(jobs)
        assert len(shards._readers) == shards.READERS_KEPT

        def second_shard(job_id: str) -> int:
            """Run shard 1 of the job; how many tables it described (1: its reader was new)."""
            start = describes(fast_dynamo)
            assert run_shard(job_id, 1, settings, store) is True
            rows = store.shard_rows(job_id, 1).to_pylist()
            assert [row["driver_id"] for row in rows] == IDS[100:]
            assert [row["city"] is None for row in rows] == [d >= DRIVERS for d in IDS[100:]]
            return describes(fast_dynamo) - start

        assert second_shard(jobs[1]) == 0  # kept, and now the most recently used
        assert second_shard(jobs[0]) == 1  # the oldest was dropped: built again, reads the same
        assert second_shard(jobs[2]) == 1  # dropped for it: the least recently used
        assert second_shard(jobs[-1]) == 0
        assert len(shards._readers) == shards.READERS_KEPT
    finally:
        reset_process_state()  # the readers of these jobs not left for other tests


def views_job(store: JobStore, features: list[str], carried: bool = False) -> str:
    """A Feast-references job of one view, driver_stats, as submit stores it (the plan a
    registry would make, written out: the endpoint has no registry), 2 shards of IDS;
    ``carried``: with the view's table's key schema, as submit stores it now."""
    plan = ViewsPlan([ViewRead("driver_stats", "demo.driver_stats", {"driver_id": "int64"},
                               features, 0.0)],
                     features, [(0, n) for n in range(len(features))], ["driver_id"])
    request = JobRequest(features=[f"driver_stats:{name}" for name in features],
                         entities="ids.parquet", feature_store_yaml="feature_store.yaml")
    spec = {"request": request.model_dump(), "shard_size": 100, "table": "demo.driver_stats",
            "layout": "feast", "key_types": {"driver_id": "int64"},
            "key_columns": ["driver_id"], VIEWS: plan.to_spec(),
            **({CHECKED_KEYS: {"demo.driver_stats": FEAST_KEYS}} if carried else {})}
    job_id = store.new_job_id()
    store.create(job_id, spec, (pa.table({"driver_id": pa.array(IDS[n:n + 100], pa.int64())})
                                for n in (0, 100)))
    return job_id


def test_a_views_job_reads_with_one_reader_per_process_and_reports_its_capacity(
        settings: Settings, store: JobStore, fast_dynamo: EndpointProcess) -> None:
    job_id = views_job(store, ["city"])
    reset_process_state()  # as after a fork: this process has no reader yet
    before = describes(fast_dynamo)
    reports: list[tuple[int, int, dict[str, Any]]] = []
    run_shard(job_id, 0, settings, store, report=lambda done, total, capacity: reports.append(
        (done, total, capacity)))
    assert describes(fast_dynamo) == before + 1
    done, total, capacity = reports[-1]  # after the view's read: what it spent, still
    assert (done, total) == (80, 80) and set(capacity) == CAPACITY
    assert capacity["in_flight"] != "0-0"
    assert run_shard(job_id, 1, settings, store) is True
    assert describes(fast_dynamo) == before + 1  # its second shard: the same reader
    # Another request is another reader (its features): never one cached for the first.
    other = views_job(store, ["conv_rate"])
    run_shard(other, 0, settings, store)
    assert store.shard_rows(other, 0).column_names == ["driver_id", "event_timestamp",
                                                       "conv_rate"]
    assert store.shard_rows(job_id, 0).column_names == ["driver_id", "event_timestamp",
                                                        "city"]


def test_a_views_job_carrying_its_tables_key_schemas_describes_none(
        settings: Settings, store: JobStore, fast_dynamo: EndpointProcess) -> None:
    job_id = views_job(store, ["city"], carried=True)
    reset_process_state()
    before = describes(fast_dynamo)
    run_shard(job_id, 0, settings, store)
    assert run_shard(job_id, 1, settings, store) is True
    assert describes(fast_dynamo) == before
    rows = store.shard_rows(job_id, 0).to_pylist()
    assert [row["city"] is None for row in rows] == [d >= DRIVERS for d in IDS[:100]]


def test_shards_that_need_no_reading_are_skipped(
        new_job: NewJob, settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    meta = new_job(IDS)
    run_shard(meta.job_id, 0, settings, store)
    before = fast_dynamo.stats()["keys"]
    with structlog.testing.capture_logs() as logs:
        assert run_shard(meta.job_id, 0, settings, store) is False  # done: 1 of 2 shards
        run_shard(meta.job_id, 1, settings, store)
        assert run_shard(meta.job_id, 1, settings, store) is True  # done: every shard
        store.fail(meta.job_id, "failed elsewhere")  # a message sent again after it failed
        assert run_shard(meta.job_id, 1, settings, store) is False
    assert fast_dynamo.stats()["keys"] == before + 40  # shard 1, once
    assert [entry["reason"] for entry in logs if entry["event"] == "shard_skipped"] == [
        "already done (a redelivered message)", "already done (a redelivered message)",
        "the job is failed"]
    assert store.attempts(meta.job_id) == {0: 1, 1: 1}


def test_a_shard_stops_when_its_job_is_gone(new_job: NewJob, settings: Settings,
                                            store: JobStore, tmp_path: Path) -> None:
    meta = new_job(IDS)
    reported: list[int] = []

    def cleaned_up(done: int, total: int, capacity: dict[str, Any]) -> None:
        reported.append(done)
        store.delete(meta.job_id)  # as `featurepull cleanup` would, mid-read

    slow = settings.model_copy(update={  # 8 requests: a first report before the last
        "dynamodb": settings.dynamodb.model_copy(update={"batch_size": 10})})
    with pytest.raises(UnknownJob):
        run_shard(meta.job_id, 0, slow, store, report=cleaned_up)
    # It stopped at its next look at the job: no report after the first, and nothing of the
    # job written back into Redis (progress, stats, rows, or its sign of life).
    assert len(reported) == 1 and reported[0] < 80
    assert list(store.redis.scan_iter(f"featurepull:job:{meta.job_id}:*")) == []
    assert meta.job_id not in store.active_jobs()


def progress_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("featurepull-progress")]


def test_a_shards_reports_are_sent_beside_its_read_not_in_its_event_loop(
        new_job: NewJob, settings: Settings, store: JobStore) -> None:
    meta = new_job(IDS)
    sent: list[tuple[int, str, bool]] = []

    def where(done: int, total: int, capacity: dict[str, Any]) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            sent.append((done, threading.current_thread().name, False))
        else:  # a report made here would hold the requests the loop should send meanwhile
            sent.append((done, threading.current_thread().name, True))

    small_batches = settings.model_copy(update={  # 8 requests: a first report, a last
        "dynamodb": settings.dynamodb.model_copy(update={"batch_size": 10})})
    assert run_shard(meta.job_id, 0, small_batches, store, report=where) is False
    assert len(sent) >= 2 and sent[0][0] < 80 and sent[-1][0] == 80
    assert {(name, on_loop) for _, name, on_loop in sent} == {("featurepull-progress-0", False)}
    assert store.progress(meta.job_id) == 100 and store.done_count(meta.job_id) == 1
    assert progress_threads() == []  # none left running after the shard


@pytest.mark.parametrize("first", [True, False])
def test_a_report_that_fails_fails_its_shard(new_job: NewJob, settings: Settings,
                                             store: JobStore, first: bool) -> None:
    meta = new_job(IDS)

    def broken(done: int, total: int, capacity: dict[str, Any]) -> None:
        if first or done == total:
            raise ConnectionError("the broker went away")

    small_batches = settings.model_copy(update={
        "dynamodb": settings.dynamodb.model_copy(update={"batch_size": 10})})
    # Raised in the read at its next answer, or (the last report) before the shard stores.
    with pytest.raises(ConnectionError, match="the broker went away"):
        run_shard(meta.job_id, 0, small_batches, store, report=broken)
    assert store.done_count(meta.job_id) == 0 and store.all_stats(meta.job_id) == {}
    assert progress_threads() == []


@pytest.mark.parametrize("ended", ["cancelled", "failed"])
def test_a_part_written_after_its_job_was_cancelled_is_removed(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path, ended: str
) -> None:
    out = tmp_path / "out.parquet"
    meta = new_job(IDS, output=str(out))
    staging = Path(staged_output(meta.job_id, meta, settings).staging)
    assert staging.is_dir()

    def cancel_at_the_end(done: int, total: int, capacity: dict[str, Any]) -> None:
        if done == total:  # after the last check: the shard goes on to write its part
            if ended == "cancelled":
                store.cancel(meta.job_id)
            else:
                store.fail(meta.job_id, "another shard failed")

    assert run_shard(meta.job_id, 0, settings, store, report=cancel_at_the_end) is False
    assert store.meta(meta.job_id).state == ended
    assert not staging.exists() and not out.exists()


def test_missing_features_are_null_when_the_job_allows_them(
        new_job: NewJob, settings: Settings, store: JobStore) -> None:
    features = [*FEATURES, "no_such_feature"]
    refused = new_job(IDS, features=features)  # no item holds it: a typo, so refused
    with pytest.raises(UnknownFeatureError, match="no_such_feature"):
        run_shard(refused.job_id, 1, settings, store)
    meta = new_job(IDS, features=features, allow_missing_features=True)
    run_shard(meta.job_id, 1, settings, store)
    rows = store.shard_rows(meta.job_id, 1).to_pylist()
    assert [row["no_such_feature"] for row in rows] == [None] * 40
    assert [row["city"] is None for row in rows] == [d >= DRIVERS for d in IDS[100:]]


def test_a_shard_hashes_the_keys_after_its_first_requests_while_it_reads(
        new_job: NewJob, settings: Settings, store: JobStore) -> None:
    # 2 requests of 10 in flight: 20 of shard 0's 80 distinct keys are hashed before its
    # read, the other 60 beside it (featurepull.dynamo.keys_ahead). The same rows and
    # counts as the job whose first requests take every key.
    plain = new_job(IDS)
    ahead = new_job(IDS, dynamodb={"max_read_workers": 2, "batch_size": 10})
    for meta in (plain, ahead):
        run_shard(meta.job_id, 0, settings, store)
    assert store.shard_rows(ahead.job_id, 0).equals(store.shard_rows(plain.job_id, 0))
    counts = [{name: store.all_stats(meta.job_id)[0][name]
               for name in ("keys", "unique_keys", "found", "missing", "requests")}
              for meta in (plain, ahead)]
    assert counts == [{"keys": 100, "unique_keys": 80, "found": 80, "missing": 20,
                       "requests": requests} for requests in (1, 8)]
