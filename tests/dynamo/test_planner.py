"""The read planner's rule on DescribeTable blocks as DynamoDB writes them: auto takes a scan
when the keys cover most of a table and it is clearly cheaper, batch-get otherwise, and
never a scan on counts it cannot trust."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from featurepull.config import DynamoSettings
from featurepull.dynamo.planner import SCAN_MARGIN, estimate_rcu, plan_read

MB = 1024 * 1024


def table(items: int, size: int) -> dict[str, Any]:
    return {"TableName": "p.drivers", "ItemCount": items, "TableSizeBytes": size}


SMALL_ITEMS = table(1_000_000, 200 * 1_000_000)  # 200-byte items: a scan is ~49k RCU


def test_batch_get_costs_a_unit_per_started_4_kb_per_key_and_scan_the_table() -> None:
    assert estimate_rcu(SMALL_ITEMS, 10_000, consistent=False) == (5_000.0,
                                                                   24_414.5)
    # 6 KB items: two units a key; consistent reads cost twice as much either way.
    big = table(1_000, 6_000 * 1_000)
    assert estimate_rcu(big, 100, consistent=True) == (200.0, 1_465.0)
    assert estimate_rcu(big, 100, consistent=False) == (100.0, 732.5)


@pytest.mark.parametrize(("keys", "mode"), [(900_000, "scan"), (500_000, "scan"),
                                            (100_000, "scan"), (60_000, "batch-get"),
                                            (10_000, "batch-get"), (10, "batch-get")])
def test_auto_takes_a_scan_only_when_the_keys_cover_enough_of_the_table(keys: int,
                                                                        mode: str) -> None:
    plan = plan_read(SMALL_ITEMS, keys, DynamoSettings())
    assert plan.mode == mode
    assert (plan.scan_rcu * SCAN_MARGIN <= plan.batch_get_rcu) == (mode == "scan")


def test_the_reason_names_both_estimates_as_the_summary_shows_them(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="featurepull.dynamo.planner"):
        plan = plan_read(SMALL_ITEMS, 900_000, DynamoSettings())
    assert re.match(r"read_mode=scan: ~24,414 RCU vs ~450,000 RCU for batch-get "
                    r"\(900,000 keys of ~1,000,000 items\)$", plan.reason), plan.reason
    assert plan.total_segments == 10  # one per page in flight (max_read_workers)
    assert plan.reason in caplog.text and "p.drivers" in caplog.text
    few = plan_read(SMALL_ITEMS, 10_000, DynamoSettings())
    assert few.reason.startswith("read_mode=batch-get: ~5,000 RCU vs ~24,414 RCU for scan "
                                 "(a scan must be 2x cheaper"), few.reason
    assert few.total_segments == 0


@pytest.mark.parametrize("counts", [table(0, 0), table(1_000_000, 0), table(0, 200 * MB),
                                    {"TableName": "p.drivers"}])
def test_an_empty_or_missing_count_never_picks_a_scan(counts: dict[str, Any]) -> None:
    plan = plan_read(counts, 900_000, DynamoSettings())
    assert plan.mode == "batch-get"
    assert "refresh about every 6 hours" in plan.reason and "unknown for scan" in plan.reason


def test_a_stale_count_scales_the_table_up_to_the_keys() -> None:
    # DescribeTable still says 100,000 items, but the job asks for 2,000,000 keys: the
    # table may well have grown 20x since it was counted.
    stale = table(100_000, 20 * MB)
    batch_get, scan = estimate_rcu(stale, 2_000_000, consistent=False)
    assert scan == pytest.approx(20 * MB * 20 / 4096 * 0.5, rel=1e-3)
    assert plan_read(stale, 2_000_000, DynamoSettings()).mode == "scan"
    assert batch_get == 1_000_000


def test_small_tables_are_read_by_key_below_scan_min_items() -> None:
    small = table(50_000, 50_000 * 100)
    plan = plan_read(small, 50_000, DynamoSettings())
    assert plan.mode == "batch-get" and plan.scan_rcu < plan.batch_get_rcu / 10
    assert "under dynamodb.scan_min_items=100,000" in plan.reason
    assert plan_read(small, 50_000, DynamoSettings(scan_min_items=10_000)).mode == "scan"


def test_items_of_4_kb_and_more_are_never_cheaper_to_scan() -> None:
    large = table(1_000_000, 4096 * 1_000_000)
    assert plan_read(large, 1_000_000, DynamoSettings()).mode == "batch-get"


def test_a_requested_mode_is_taken_with_both_estimates_said() -> None:
    scan = plan_read(table(0, 0), 10, DynamoSettings(read_mode="scan"))
    assert scan.mode == "scan" and scan.total_segments == 10
    assert scan.reason == "read_mode=scan: ~0.0 RCU vs ~5.0 RCU for batch-get (requested)"
    get = plan_read(SMALL_ITEMS, 900_000, DynamoSettings(), mode="batch-get")
    assert get.mode == "batch-get" and get.requested == "batch-get"
    assert get.reason.endswith("(requested)")


def test_a_large_table_gets_a_segment_per_2_gb() -> None:
    huge = table(10**9, 100 * 1024**3)
    assert plan_read(huge, 10**9, DynamoSettings()).total_segments == 50
