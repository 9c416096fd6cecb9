"""Faults injected on the wire (tests/faultproxy.py between the reader and a real HTTP
DynamoDB endpoint): the rows must equal a fault-free read's, and the stats must count what
the proxy did. Past the deadline the read fails; it never reports an existing row missing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from featurepull.dynamo import BatchReader, FeastLayout, RetryDeadlineExceeded
from tests.dynamo.conftest import FEATURES, FeastTable
from tests.dynamo.test_reader import expected_row, order_workload
from tests.faultproxy import FaultPlan, FaultProxy

LAYOUT = FeastLayout({"driver_id": "int64"})


@pytest.fixture(scope="module")
def proxy(drivers_table: FeastTable) -> Iterator[FaultProxy]:
    with FaultProxy(drivers_table.endpoint_url) as running:
        yield running


IDS = order_workload(seed=11)[:10_000]


@pytest.fixture(scope="module")
def workload() -> list[Any]:
    return LAYOUT.keys_for({"driver_id": IDS})


@pytest.fixture(scope="module")
def clean_rows() -> list[Any]:
    """The rows a fault-free read gives (test_reader checks a real read against these), as
    the synthetic table holds them: no read of 10,000 keys through moto to learn them."""
    return [expected_row(driver) for driver in IDS]


def reader_via(proxy: FaultProxy, table: FeastTable, **overrides: Any) -> BatchReader:
    settings = table.settings(endpoint_url=proxy.url, **overrides)
    return BatchReader(table.name, LAYOUT, settings, seed=1)


def test_rows_survive_every_fault_at_once(
    proxy: FaultProxy, drivers_table: FeastTable, workload: list[Any], clean_rows: list[Any]
) -> None:
    # first_hits: 16 requests at a time reach the proxy's RNG in any order; without it a
    # loaded machine could see no 500 at all.
    proxy.plan = FaultPlan(unprocessed_rate=0.3, throttle_rate=0.1, error_rate=0.02,
                           drop_rate=0.03, shuffle=True, seed=5, first_hits=6)
    proxy.reset_counts()
    result = reader_via(proxy, drivers_table, max_read_workers=16).read(workload, FEATURES)
    counts = proxy.counts
    assert result.rows == clean_rows
    # Every fault kind really happened, and the stats saw each one of them.
    assert counts["unprocessed_keys"] > 1000
    assert counts["throttled"] > 5 and counts["errors_500"] > 0 and counts["dropped"] > 0
    assert counts["shuffled"] > 0
    stats = result.stats
    assert stats.unprocessed_retries == counts["unprocessed_keys"]
    assert stats.throttles == counts["throttled"]
    assert stats.server_errors == counts["errors_500"]
    assert stats.connection_errors == counts["dropped"]
    assert stats.requests == counts["batch_requests"]
    assert stats.retries == counts["throttled"] + counts["errors_500"] + counts["dropped"]
    assert stats.found + stats.missing == len(workload)


def test_unprocessed_keys_are_never_reported_missing(
    proxy: FaultProxy, drivers_table: FeastTable, workload: list[Any], clean_rows: list[Any]
) -> None:
    # Most keys come back unprocessed at least once; a reader that treated them as
    # "not found" (as Feast's does) would lose most rows here.
    proxy.plan = FaultPlan(unprocessed_rate=0.8, seed=9)
    proxy.reset_counts()
    result = reader_via(proxy, drivers_table).read(workload[:3000], FEATURES)
    assert result.rows == clean_rows[:3000]
    assert result.stats.unprocessed_retries == proxy.counts["unprocessed_keys"] > 3000


@pytest.mark.parametrize(("plan", "says"), [
    (FaultPlan(throttle_rate=1.0), "DynamoDB kept throttling"),
    (FaultPlan(unprocessed_rate=1.0), "DynamoDB kept leaving keys unprocessed"),
    (FaultPlan(error_rate=1.0), "DynamoDB kept failing on its side"),
], ids=["throttled-forever", "unprocessed-forever", "5xx-forever"])
def test_deadline_exceeded_fails_loudly(
    proxy: FaultProxy, drivers_table: FeastTable, workload: list[Any], plan: FaultPlan,
    says: str
) -> None:
    proxy.plan = plan
    reader = reader_via(proxy, drivers_table, retry_deadline_s=0.5)
    with pytest.raises(RetryDeadlineExceeded) as failure:
        reader.read(workload[:500], FEATURES)
    unique = len(set(workload[:500]))
    assert failure.value.keys_left == unique
    message = str(failure.value)
    assert drivers_table.name in message and f"{unique} of {unique} keys" in message
    assert "retry_deadline_s" in message
    # The failure that kept the keys unanswered, and the advice for it (not another's).
    assert says in message
    capacity_advice = "Raise the table's read capacity" in message
    assert capacity_advice == (plan.error_rate == 0.0)


def test_latency_is_only_slower(proxy: FaultProxy, drivers_table: FeastTable,
                                workload: list[Any], clean_rows: list[Any]) -> None:
    proxy.plan = FaultPlan(latency_s=0.05)
    result = reader_via(proxy, drivers_table, max_read_workers=8).read(workload[:2000], FEATURES)
    assert result.rows == clean_rows[:2000]
    assert result.stats.latency_p50_ms >= 50


def test_connection_resets_are_resent(proxy: FaultProxy, drivers_table: FeastTable,
                                      workload: list[Any], clean_rows: list[Any]) -> None:
    proxy.plan = FaultPlan(drop_rate=0.2, drop_reset=True, seed=3, first_hits=1)
    proxy.reset_counts()
    result = reader_via(proxy, drivers_table).read(workload[:2000], FEATURES)
    assert result.rows == clean_rows[:2000]
    assert result.stats.connection_errors == proxy.counts["dropped"] > 0
