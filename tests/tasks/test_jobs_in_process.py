"""A job's steps in this process, without Celery: create_job stores the shards, run_shard
reads one against a real HTTP endpoint, finish_job writes the ordered output — all on the
real redis-server. Fast enough for the mutation runs (scripts/mutation.sh), which trace only
this process; the same steps through prefork workers are in test_pipeline.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import EndpointProcess, SyntheticTable
from featurepull.config import Settings
from featurepull.dynamo import decode_value
from featurepull.dynamo.layouts import parse_event_ts
from featurepull.tasks import JobStore
from featurepull.tasks.create import create_job
from featurepull.tasks.finish import finish_job
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.shards import JobStopped, run_shard
from tests.tasks.conftest import DRIVERS

FEATURES = ["conv_rate", "city"]
# The session's 200,000 drivers (tests/tasks/conftest.py): 200,000.. are unknown.
IDS = [199_000 + (i * 37) % 1_200 for i in range(450)]


def entities(tmp_path: Path) -> Path:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(IDS, pa.int64())}), path)
    return path


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
    request = JobRequest(table="driver_stats", features=FEATURES,
                         entities=str(entities(tmp_path)), output=str(out))
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
    request = JobRequest(table="driver_stats", features=FEATURES,
                         entities=str(entities(tmp_path)))
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
    request = JobRequest(table="driver_stats", features=FEATURES,
                         entities=str(entities(tmp_path)))
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
