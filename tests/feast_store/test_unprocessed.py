"""The difference that matters: DynamoDB leaving keys in UnprocessedKeys (injected on the
wire by tests/faultproxy.py). Feast's store reads those keys as "not found"; featurepull's
retries them and loses none — until its retry deadline, where it fails loudly. The read
settings of the online_store block reach the requests (batch_size)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.online_stores.dynamodb import DynamoDBOnlineStore
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Float64, Int64, String

from featurepull.dynamo import RetryDeadlineExceeded
from featurepull.feast_store import FeaturepullOnlineStore
from tests.faultproxy import FaultPlan, FaultProxy
from tests.feast_store.conftest import FeastTables, int64_key, write_rows

ROWS = 2_000
LOSS = 0.05
FEATURES = ["conv_rate", "city"]


@pytest.fixture(scope="module")
def drivers(feast_tables: FeastTables) -> Iterator[FeatureView]:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(name="drivers", entities=[driver],
                       source=FileSource(path="unused.parquet", timestamp_field="ts"),
                       schema=[Field(name="driver_id", dtype=Int64),
                               Field(name="conv_rate", dtype=Float64),
                               Field(name="city", dtype=String)])
    config = feast_tables.config("feast")
    DynamoDBOnlineStore().update(config, [], [view], [], [driver], partial=False)
    write_rows(config, view, ROWS, int64_key,
               lambda row: {"conv_rate": Value(double_val=row / 1000),
                            "city": Value(string_val=f"city-{row % 17}")})
    yield view
    DynamoDBOnlineStore().teardown(config, [view], [driver])


@pytest.fixture
def proxy(endpoint_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(endpoint_url, FaultPlan(unprocessed_rate=LOSS, seed=22)) as running:
        yield running


def _found(rows: list[Any]) -> int:
    return sum(row != (None, None) for row in rows)


def test_feast_loses_the_unprocessed_keys_and_featurepull_none(
        feast_tables: FeastTables, drivers: FeatureView, proxy: FaultProxy) -> None:
    keys = [int64_key(row) for row in range(ROWS)]
    truth = DynamoDBOnlineStore().online_read(feast_tables.config("feast"), drivers, keys,
                                              FEATURES)
    assert _found(truth) == ROWS

    feast_rows = DynamoDBOnlineStore().online_read(
        feast_tables.config("feast", endpoint_url=proxy.url), drivers, keys, FEATURES)
    left_by_feast = proxy.counts["unprocessed_keys"]
    lost = ROWS - _found(feast_rows)
    assert lost == left_by_feast  # every key left unprocessed reads as "not found"
    assert 0.02 * ROWS < lost < 0.10 * ROWS
    assert [row for row in feast_rows if row != (None, None)] == [
        row for row, mine in zip(truth, feast_rows, strict=True) if mine != (None, None)]

    proxy.reset_counts()
    mine = FeaturepullOnlineStore().online_read(
        feast_tables.config("featurepull", endpoint_url=proxy.url), drivers, keys, FEATURES)
    assert proxy.counts["unprocessed_keys"] > 0.02 * ROWS
    assert mine == truth


def test_past_the_retry_deadline_the_read_fails_loudly(
        feast_tables: FeastTables, drivers: FeatureView, proxy: FaultProxy) -> None:
    proxy.plan = FaultPlan(unprocessed_rate=1.0)
    config = feast_tables.config("featurepull", endpoint_url=proxy.url, retry_deadline_s=0.3)
    keys = [int64_key(row) for row in range(50)]
    with pytest.raises(RetryDeadlineExceeded, match=r"50 of 50 keys.*retry_deadline_s=0\.3"):
        FeaturepullOnlineStore().online_read(config, drivers, keys, FEATURES)


def test_batch_size_reaches_the_requests(
        feast_tables: FeastTables, drivers: FeatureView, proxy: FaultProxy) -> None:
    proxy.plan = FaultPlan()
    config = feast_tables.config("featurepull", endpoint_url=proxy.url, batch_size=7)
    keys = [int64_key(row) for row in range(50)]
    rows = FeaturepullOnlineStore().online_read(config, drivers, keys, FEATURES)
    assert _found(rows) == 50
    assert proxy.counts["batch_requests"] == 8  # 7 requests of 7 keys and one of 1
    assert proxy.counts["keys_requested"] == 50


def test_the_read_budget_reaches_the_reads(
        feast_tables: FeastTables, drivers: FeatureView, proxy: FaultProxy) -> None:
    # Feast creates its tables on demand, without a maximum: a share of it has no meaning,
    # and the read says so before any key is requested.
    proxy.plan = FaultPlan()
    config = feast_tables.config("featurepull", endpoint_url=proxy.url, max_rcu_per_s="50%")
    keys = [int64_key(row) for row in range(50)]
    with pytest.raises(Exception, match=r"max_rcu_per_s.*on-demand"):
        FeaturepullOnlineStore().online_read(config, drivers, keys, FEATURES)
    assert proxy.counts["batch_requests"] == 0
    rows = FeaturepullOnlineStore().online_read(
        feast_tables.config("featurepull", endpoint_url=proxy.url, max_rcu_per_s=5000),
        drivers, keys, FEATURES)
    assert _found(rows) == 50
