"""The other ways a shard is read (featurepull.tasks.shards), in this process: under the
fleet's read budget in Redis, through a Feast-references reader, from what a scan job's scan
tasks stored, with a scorer; the per-process reader cache keyed by the job's spec; and what
a shard says when its job ends or disappears. Real redis-server and the session's endpoint;
the scan tasks' results are stored as featurepull.tasks.scans would store them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import structlog

from featurepull.bench.endpoint import EndpointProcess
from featurepull.config import ScorerSettings, Settings
from featurepull.dynamo import ReadStats
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.plan import layout_from_spec
from featurepull.dynamo.views import ViewRead, ViewsPlan
from featurepull.io import OutputError
from featurepull.local import MotoService, RedisService
from featurepull.tasks import JobStore
from featurepull.tasks.capacity import PREFIX
from featurepull.tasks.confine import RequestOutOfBounds
from featurepull.tasks.create import create_job
from featurepull.tasks.finish import finish_job
from featurepull.tasks.output import discard_staged_output
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.scans import key_map, partitions
from featurepull.tasks.shards import (
    JobStopped,
    capacity_fields,
    run_shard,
    shard_log_fields,
)
from featurepull.tasks.store import JobMeta, UnknownJob, connect, table_to_bytes
from tests.tasks import scorers_for_tests
from tests.tasks.conftest import DRIVERS, TABLE, NewJob, local_job_settings, mixed_scores_table
from tests.tasks.test_jobs_in_process import expected
from tests.tasks.test_shards_in_process import CAPACITY, FEATURES, IDS

pytestmark = pytest.mark.mutation_first  # as test_shards_in_process.py
BUDGET = 4321.0  # RCU/s: a rate no other test's budget uses, so its Redis bucket is this test's


def rows_of(store: JobStore, job_id: str, shard: int) -> list[dict[str, Any]]:
    return store.shard_rows(job_id, shard).to_pylist()


def test_a_budgeted_shard_takes_from_the_fleets_bucket_in_redis(new_job: NewJob,
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    rate_key = f"{PREFIX}{TABLE}:{BUDGET!r}"
    store.redis.delete(f"{PREFIX}{TABLE}", rate_key)
    meta = new_job(IDS, dynamodb={"max_rcu_per_s": BUDGET})
    reports: list[dict[str, Any]] = []
    with structlog.testing.capture_logs() as logs:
        run_shard(meta.job_id, 0, settings, store,
                  report=lambda done, total, capacity: reports.append(capacity))
    # The reader's budget is the Redis bucket every worker shares, not one of this process.
    assert store.redis.exists(rate_key) == 1
    assert reports and all(set(capacity) == CAPACITY for capacity in reports)
    assert reports[-1]["budget_rcu_per_s"] == BUDGET
    (finished,) = [entry for entry in logs if entry["event"] == "shard_done"]
    stats = store.all_stats(meta.job_id)[0]
    assert (finished["budget_rcu_per_s"], stats["budget_rcu_per_s"]) == (BUDGET, BUDGET)
    assert finished["budget_wait_s"] == round(stats["budget_wait_s"], 3) >= 0
    assert finished["in_flight"] == f"{stats['concurrency_min']}-{stats['concurrency_max']}"
    assert rows_of(store, meta.job_id, 0) == expected(IDS[:100])


def test_a_feast_references_shard_reads_every_view_under_the_budget(new_job: NewJob,
        settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    rate_key = f"{PREFIX}{TABLE}:{BUDGET!r}"
    store.redis.delete(f"{PREFIX}{TABLE}", rate_key)
    meta = new_job(IDS, dynamodb={"max_rcu_per_s": BUDGET})
    # The spec a job naming two views' features stores (featurepull.tasks.feast_views):
    # both views' tables are the endpoint's one, which the spec's "table" names twice.
    key = {"driver_id": "int64"}
    plan = ViewsPlan([ViewRead("stats", TABLE, key, ["conv_rate"], 0.0),
                      ViewRead("profile", TABLE, key, ["city"], 0.0)],
                     list(FEATURES), [(0, 0), (1, 0)], ["driver_id"])
    spec = store.meta(meta.job_id).request.model_dump()
    store.update_spec(meta.job_id, {**spec, "table": f"{TABLE}, {TABLE}",
                                    "views": plan.to_spec()})
    before = fast_dynamo.stats()["keys"]
    reports: list[tuple[int, int]] = []
    run_shard(meta.job_id, 0, settings, store,
              report=lambda done, total, capacity: reports.append((done, total)))
    assert fast_dynamo.stats()["keys"] == before + 2 * 80  # each view, each unique key
    assert store.redis.exists(rate_key) == 1
    assert reports[-1] == (80, 80)  # 100 rows, 80 drivers
    got = rows_of(store, meta.job_id, 0)
    assert got == [{"driver_id": row["driver_id"],
                    "stats__event_timestamp": row["event_timestamp"],
                    "profile__event_timestamp": row["event_timestamp"],
                    **{f: row[f] for f in FEATURES}} for row in expected(IDS[:100])]
    assert store.all_stats(meta.job_id)[0]["budget_rcu_per_s"] == BUDGET


def test_each_jobs_spec_gets_its_own_reader(new_job: NewJob, settings: Settings, store: JobStore,
                                            tmp_path: Path) -> None:
    # Two jobs on one table in one process: the second's keys are int32, which the table
    # (int64 keys) does not hold. A reader cached by table alone would find them.
    first = new_job(IDS)
    run_shard(first.job_id, 1, settings, store)
    assert store.all_stats(first.job_id)[1]["found"] == 20
    second = new_job(IDS, join_key_types={"driver_id": "int32"})
    run_shard(second.job_id, 1, settings, store)
    assert (store.all_stats(second.job_id)[1]["found"],
            store.all_stats(second.job_id)[1]["missing"]) == (0, 40)


def test_a_scan_jobs_shard_is_built_from_what_its_scan_tasks_stored(new_job: NewJob,
        settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    meta = new_job(IDS)
    spec = store.meta(meta.job_id).request.model_dump()
    spec["read_plan"] = {"mode": "scan", "reason": "test", "total_segments": 4,
                         "scan_tasks": 2}
    store.update_spec(meta.job_id, spec)
    meta = store.meta(meta.job_id)
    before = fast_dynamo.stats()["requests"]
    with structlog.testing.capture_logs() as logs:
        assert run_shard(meta.job_id, 0, settings, store) is False  # no scan task done
    assert [entry["reason"] for entry in logs if entry["event"] == "shard_skipped"] == [
        "the job's scan tasks are not all done; the last one sends every shard"]
    assert store.done_count(meta.job_id) == 0 and store.attempts(meta.job_id) == {}
    # The two scan tasks matched the known drivers of both shards between them.
    layout = layout_from_spec(spec, settings)
    where = key_map(store, meta, layout, settings)
    known = sorted({d for d in IDS if d < DRIVERS})
    keys = layout.keys_for({"driver_id": known})
    rows = {row["driver_id"]: (row["event_timestamp"], *(row[f] for f in FEATURES))
            for row in expected(known)}
    found = {key: rows[driver] for key, driver in zip(keys, known, strict=True)}
    halves = (dict(list(found.items())[:50]), dict(list(found.items())[50:]))
    store.put_scan_part(meta.job_id, 0, partitions(halves[0], where, FEATURES), {})
    store.put_scan_part(meta.job_id, 1, partitions(halves[1], where, FEATURES), {})
    assert run_shard(meta.job_id, 0, settings, store, worker="w:1") is False
    assert run_shard(meta.job_id, 1, settings, store) is True
    assert fast_dynamo.stats()["requests"] == before  # nothing read from the table
    assert rows_of(store, meta.job_id, 0) == expected(IDS[:100])
    assert rows_of(store, meta.job_id, 1) == expected(IDS[100:])
    stats = store.all_stats(meta.job_id)
    assert (stats[0]["keys"], stats[0]["found"], stats[0]["missing"],
            stats[0]["read_mode"]) == (100, 80, 20, "scan")
    assert store.progress(meta.job_id) == 100 + 40 and store.owners(meta.job_id) == {
        0: "w:1", 1: ""}
    # Each shard's partitions are dropped once its rows are stored.
    assert store.scan_partitions(meta.job_id, 0, 2) == []
    assert store.scan_partitions(meta.job_id, 1, 2) == []


@pytest.mark.parametrize("with_features", [False, True])
def test_a_scorer_scores_the_rows_it_read(new_job: NewJob, settings: Settings, store: JobStore,
                                          tmp_path: Path, with_features: bool) -> None:
    scoring = settings.model_copy(update={"scorers": [ScorerSettings(
        name="linear", path="tests.tasks.scorers_for_tests:linear")]})
    entities = str(new_job(IDS, using=scoring).request.request["entities"])
    plain, scored = (create_job(JobRequest(table="driver_stats", features=["conv_rate", "acc_rate"],
                                           entities=entities, **scorer), scoring, store)
                     for scorer in ({}, {"scorer": "linear", "with_features": with_features}))
    run_shard(plain.job_id, 0, scoring, store)
    read = store.shard_rows(plain.job_id, 0)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        run_shard(scored.job_id, 0, scoring, store)
    took = time.monotonic() - started
    by_hand = scorers_for_tests.linear(read.append_column(
        "_found", pa.array([row is not None for row in read.column("event_timestamp")
                            .to_pylist()])))
    got = store.shard_rows(scored.job_id, 0)
    kept = read.column_names if with_features else ["driver_id"]
    assert got.column_names == [*kept, "score", "seen"]
    assert got.select(kept).equals(read.select(kept))
    assert got.column("score").to_pylist() == by_hand.column("score").to_pylist()
    assert got.column("seen").to_pylist() == [d < DRIVERS for d in IDS[:100]]
    seconds = store.all_stats(scored.job_id)[0]["score_seconds"]
    assert isinstance(seconds, float) and 0 <= seconds <= took and round(seconds, 3) == seconds
    (finished,) = [entry for entry in logs if entry["event"] == "shard_done"]
    assert (finished["scorer"], finished["score_seconds"]) == ("linear", seconds)
    assert "score_seconds" not in store.all_stats(plain.job_id)[0]


def test_a_shard_names_its_job_when_the_job_ended_or_is_gone(new_job: NewJob,
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    slow = settings.model_copy(update={
        "dynamodb": settings.dynamodb.model_copy(update={"batch_size": 10})})
    meta = new_job(IDS)

    def cancelled(done: int, total: int, capacity: dict[str, Any]) -> None:
        store.cancel(meta.job_id)

    with pytest.raises(JobStopped) as stopped:
        run_shard(meta.job_id, 0, slow, store, report=cancelled)
    assert stopped.value.args == (meta.job_id,)
    gone = new_job(IDS)

    def deleted(done: int, total: int, capacity: dict[str, Any]) -> None:
        store.delete(gone.job_id)

    with pytest.raises(UnknownJob) as unknown:
        run_shard(gone.job_id, 0, slow, store, report=deleted)
    assert str(unknown.value) == (
        f"no job {gone.job_id!r} in Redis: check the id, and that it has not expired "
        "(jobs.ttl_s) or been cleaned up")


@pytest.mark.parametrize("meanwhile", ["cancelled", "finished"])
def test_a_shard_whose_job_ended_meanwhile_reads_nothing(new_job: NewJob,
        settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path, meanwhile: str) -> None:
    meta = new_job(IDS, output=str(tmp_path / "out.parquet"))
    run_shard(meta.job_id, 1, settings, store)

    class EndedMeanwhile(JobStore):
        """Right after this shard checked that it had not run: the job is cancelled and its
        staged keys removed by another of its shards, or another worker runs this shard
        (a redelivered copy), the job's last, and the finisher publishes the output."""

        def meta_and_done(self, job_id: str, shard: int) -> tuple[JobMeta, bool]:
            read = super().meta_and_done(job_id, shard)
            if meanwhile == "cancelled":
                store.cancel(job_id)
                discard_staged_output(job_id, settings, store)
            else:
                run_shard(job_id, shard, settings, store)
                finish_job(job_id, settings, store)
            return read

    racing = EndedMeanwhile(store.redis, settings.jobs.ttl_s)
    before = fast_dynamo.stats()["keys"]
    with structlog.testing.capture_logs() as logs:
        # True: this completed the job (as far as this shard knows), so its task calls the
        # finisher, which finds the job finished.
        assert run_shard(meta.job_id, 0, settings, racing) is (meanwhile == "finished")
    skipped = [(entry["event"], entry["reason"]) for entry in logs if "reason" in entry]
    assert skipped == [
        ("shard_skipped", "done meanwhile (a redelivered message), or the job ended")]
    read_meanwhile = 80 if meanwhile == "finished" else 0  # by the other worker
    assert fast_dynamo.stats()["keys"] == before + read_meanwhile
    assert store.attempts(meta.job_id).get(0, 0) == read_meanwhile // 80
    assert store.meta(meta.job_id).state == ("succeeded" if read_meanwhile else "cancelled")


def test_a_job_whose_output_is_outside_the_allowed_places_reads_nothing(new_job: NewJob,
        settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    """A job stored without submit's checks (or forged in Redis) is bounded by each shard."""
    meta = new_job(IDS, output=str(tmp_path / "out.parquet"))
    bounded = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"allowed_outputs": [str(tmp_path / "elsewhere")]})})
    before = fast_dynamo.stats()["keys"]
    with pytest.raises(RequestOutOfBounds, match="allowed_outputs"):
        run_shard(meta.job_id, 0, bounded, store)
    assert fast_dynamo.stats()["keys"] == before and store.attempts(meta.job_id) == {}


def test_what_a_read_spends_of_the_tables_capacity() -> None:
    stats = ReadStats(consumed_rcu=5.0, budget_rcu_per_s=100.44, budget_wait_s=0.12345,
                      concurrency_min=3, concurrency_max=9)
    assert capacity_fields(stats, 3.0) == {"rcu_per_s": 1.7, "budget_rcu_per_s": 100.4,
                                           "budget_wait_s": 0.123, "in_flight": "3-9"}
    assert capacity_fields(stats, 0.0)["rcu_per_s"] == 0.0  # no time yet: no rate
    assert capacity_fields(None, 1.0) == {}  # no read under way (progress before the first)
    # The shard_done line rounds what the stored stats (featurepull.dynamo.stats) keep.
    logged = shard_log_fields(ReadStats(keys=10, consumed_rcu=2.12345, seconds=3.0))
    assert (logged["rcu"], logged["rcu_per_s"], logged["rows_per_s"], logged["seconds"]) == (
        2.123, 0.7, 3.3, 3.0)


def test_a_bad_key_in_a_stored_shard_is_named_by_job_and_shard(new_job: NewJob,
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    """A job stored without submit's checks (or forged in Redis): the shard names itself."""
    meta = new_job(IDS)
    forged = pa.table({"driver_id": pa.array([DRIVERS - 1, None], pa.int64())})
    store.redis.set(f"featurepull:job:{meta.job_id}:keys:0", table_to_bytes(forged))
    with pytest.raises(EntityKeyError, match=f"job {meta.job_id} shard 0"):
        run_shard(meta.job_id, 0, settings, store)


def test_rows_that_cannot_share_a_type_are_named_by_their_entity_rows(
        redis_server: RedisService, moto_server: MotoService, ddb: Any,
        tmp_path: Path) -> None:
    # Driver 250's score is a double, driver 350's a string: both in shard 1 of shards of
    # 200, whose message numbers them in the job (entity rows 251 and 351, not 51 and 151).
    name = mixed_scores_table(ddb)
    settings = local_job_settings(redis_server.url, moto_server.url, shard_size=200)
    store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
    entities = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(range(600), pa.int64())}), entities)
    meta = create_job(JobRequest(table=name, features=["score"], entities=str(entities)),
                      settings, store)
    with pytest.raises(OutputError) as refused:
        run_shard(meta.job_id, 1, settings, store)
    assert str(refused.value).startswith(
        "entity rows 201-400: feature column 'score' mixes float (row 251) and str (row 351)")
    store.delete(meta.job_id)


def test_progress_is_stored_before_each_report_and_the_last_is_always_sent(new_job: NewJob,
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    meta = new_job(IDS)
    small = settings.model_copy(update={
        "dynamodb": settings.dynamodb.model_copy(update={"batch_size": 10})})
    reports: list[tuple[int, int, int, dict[str, Any]]] = []
    run_shard(meta.job_id, 0, small, store, report=lambda done, total, capacity: reports.append(
        (done, total, store.progress(meta.job_id), capacity)))
    # 8 answers of 10 keys: reported at most every 0.5 s, and always the last.
    assert [(done, total) for done, total, _, _ in reports][-1] == (80, 80)
    # Stored in entity rows (100, repeats included), reported in distinct keys (80).
    assert all(stored == done * 100 // 80 for done, _, stored, _ in reports)
    assert reports[-1][3]["rcu_per_s"] > 0  # per second of this shard's read so far
