"""BatchReader against a real HTTP DynamoDB endpoint: order, duplicates, absent keys,
threads and batch sizes all give the same rows."""

from __future__ import annotations

import random
from typing import Any

import pytest

from featurepull.dynamo import BatchReader, FeastLayout
from tests.dynamo.conftest import (
    FEATURES,
    PRESENT,
    FeastTable,
    driver_event_ts,
    driver_features,
)
from tests.feast_writer import expected_event_ts, expected_python


def order_workload(seed: int = 7) -> list[int]:
    """25,000 driver ids: 20% absent, 10% duplicates, shuffled."""
    rng = random.Random(seed)
    present = rng.sample(range(PRESENT), 18_000)
    absent = [1_000_000 + i for i in range(4_500)]
    base = present + absent
    ids = base + rng.choices(base, k=2_500)
    rng.shuffle(ids)
    return ids


def expected_row(driver: int) -> tuple[Any, ...] | None:
    if driver >= PRESENT:
        return None
    stored = driver_features(driver)
    return (expected_event_ts(driver_event_ts(driver)),
            *(expected_python(*stored[f]) for f in FEATURES))


def read(table: FeastTable, ids: list[int], **settings: Any) -> Any:
    layout = FeastLayout({"driver_id": "int64"})
    reader = BatchReader(table.name, layout, table.settings(**settings))
    keys = layout.keys_for({"driver_id": ids})
    return reader.read(keys, FEATURES)


@pytest.fixture(scope="module")
def workload() -> list[int]:
    return order_workload()


@pytest.fixture(scope="module")
def baseline(drivers_table: FeastTable, workload: list[int]) -> Any:
    return read(drivers_table, workload, max_read_workers=32, batch_size=100)


def test_every_row_belongs_to_its_input_row(baseline: Any, workload: list[int]) -> None:
    assert len(baseline.rows) == len(workload) == 25_000
    mismatched = [i for i, (d, row) in enumerate(zip(workload, baseline.rows, strict=True))
                  if row != expected_row(d)]
    assert mismatched == []
    stats = baseline.stats
    absent_rows = sum(d >= PRESENT for d in workload)
    assert stats.keys == 25_000
    assert stats.unique_keys == len(set(workload))
    assert stats.missing == absent_rows and stats.found == 25_000 - absent_rows
    # One answered request per 100 unique keys; a request moto was too slow to answer on a
    # loaded machine is counted as a connection error and sent again.
    failed = stats.throttles + stats.server_errors + stats.connection_errors
    assert stats.requests - failed == -(-stats.unique_keys // 100)
    assert stats.consumed_rcu > 0
    assert 0 < stats.latency_p50_ms <= stats.latency_p99_ms


@pytest.mark.slow  # 10,000 keys through moto
@pytest.mark.parametrize(("workers", "batch_size"), [(1, 100), (32, 7)])
def test_same_rows_for_any_threads_and_batch_size(
    drivers_table: FeastTable, workload: list[int], baseline: Any, workers: int, batch_size: int
) -> None:
    # A fifth of the workload (its absent keys and repeats too) against the baseline's rows:
    # the order at full size is test_every_row_belongs_to_its_input_row's.
    part = workload[:5_000]
    assert sum(d >= PRESENT for d in part) > 500 and len(set(part)) < len(part)
    result = read(drivers_table, part, max_read_workers=workers, batch_size=batch_size)
    assert result.rows == baseline.rows[:5_000]
    assert result.stats.requests == -(-result.stats.unique_keys // batch_size)


@pytest.mark.slow  # 2,500 requests to moto
def test_batch_size_one(drivers_table: FeastTable, workload: list[int], baseline: Any) -> None:
    # One key per request: 2,500 rows keep the request count (and test time) reasonable.
    result = read(drivers_table, workload[:2_500], max_read_workers=16, batch_size=1)
    assert result.rows == baseline.rows[:2_500]
    assert result.stats.requests == len(set(workload[:2_500]))


def test_features_in_requested_order(drivers_table: FeastTable) -> None:
    layout = FeastLayout({"driver_id": "int64"})
    reader = BatchReader(drivers_table.name, layout, drivers_table.settings())
    wanted = ["last_seen", "size", "not_a_feature"]
    rows = reader.read(layout.keys_for({"driver_id": [3, 5_000_000]}), wanted,
                       allow_missing_features=True).rows
    stored = driver_features(3)
    assert rows[0] == (expected_event_ts(driver_event_ts(3)),
                       expected_python(*stored["last_seen"]), expected_python(*stored["size"]),
                       None)
    assert rows[1] is None


def test_empty_key_list_reads_nothing(drivers_table: FeastTable) -> None:
    reader = BatchReader(drivers_table.name, FeastLayout({"driver_id": "int64"}),
                         drivers_table.settings())
    result = reader.read([], FEATURES)
    assert result.rows == [] and result.stats.requests == 0


@pytest.mark.parametrize("features", [[], ["size", "size"], [""]])
def test_bad_feature_lists_are_refused(drivers_table: FeastTable, features: list[str]) -> None:
    reader = BatchReader(drivers_table.name, FeastLayout({"driver_id": "int64"}),
                         drivers_table.settings())
    with pytest.raises(ValueError, match="feature"):
        reader.read(["x"], features)
