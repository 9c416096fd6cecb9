"""SegmentScanner against real endpoints: the bench endpoint (Scan by hash range, 1 MB or
``Limit`` pages, ConsumedCapacity by size) and moto (its own segmenting and paging), with
faults injected on the wire. A scan joined to the keys must give exactly BatchReader's rows —
unknown ids, repeats and shuffled order included — for both layouts."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, EndpointProcess, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import (
    BatchReader,
    FeastLayout,
    PlainLayout,
    RetryDeadlineExceeded,
    SegmentScanner,
    UnknownFeatureError,
)
from featurepull.dynamo.found import FoundRows
from featurepull.dynamo.layouts import unique_keys
from featurepull.dynamo.planned import _rows, read_planned
from featurepull.dynamo.scan import ScanResult, join
from featurepull.dynamo.stats import ReadStats
from tests.conftest import REGION, moto_table, unique_name
from tests.faultproxy import FaultPlan, FaultProxy
from tests.feast_writer import create_feast_table, write_feast_rows

DRIVERS = 3_000
ALL = list(FEATURES)
LAYOUT = FeastLayout({"driver_id": "int64"})


@pytest.fixture(scope="module")
def lean() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=DRIVERS) as endpoint:
        yield endpoint


def settings(url: str, **overrides: Any) -> DynamoSettings:
    values: dict[str, Any] = {"region": REGION, "endpoint_url": url,
                              "retry_base_delay_s": 0.005, "retry_max_delay_s": 0.05}
    return DynamoSettings(**{**values, **overrides})


def driver_ids(known: int, seed: int, universe: int = DRIVERS) -> list[int]:
    """``known`` drivers of the table, 40 unknown ids, 30 repeats, shuffled."""
    rng = random.Random(seed)
    ids = rng.sample(range(universe), known) + [universe + 7 * i for i in range(40)]
    ids += rng.choices(ids, k=30)
    rng.shuffle(ids)
    return ids


def client_as(url: str, access_key: str) -> Any:
    """A client signing as its own access key id (the endpoint records consumption by it)."""
    return boto3.client("dynamodb", endpoint_url=url, region_name=REGION,
                        aws_access_key_id=access_key, aws_secret_access_key="x")


@pytest.mark.parametrize("transport", ["fast", "botocore"])
def test_scan_joined_to_the_keys_is_what_batch_get_reads(lean: EndpointProcess,
                                                         transport: str) -> None:
    dynamo = settings(lean.url, transport=transport)
    ids = driver_ids(900, seed=1)
    keys = LAYOUT.keys_for({"driver_id": ids})
    expected = BatchReader(DEFAULT_TABLE, LAYOUT, dynamo).read(keys, ALL).rows
    result = SegmentScanner(DEFAULT_TABLE, LAYOUT, dynamo).scan(range(4), 4, ALL, set(keys))
    rows = join(keys, result.found)
    assert rows == expected
    assert [row is None for row in rows] == [i >= DRIVERS for i in ids] and len(rows) == 970
    assert len(result.found) == result.stats.found == result.stats.items_matched == 900
    assert result.stats.read_mode == "scan"


@pytest.mark.parametrize("seed", [3, 4])
def test_a_planned_scan_of_distinct_keys_keeps_its_columns_as_batch_get_rows(
        lean: EndpointProcess, seed: int) -> None:
    # Distinct keys and each row's position among them (a console pull's): the rows are the
    # scan's columns as they came (FoundRows, as BatchReader's), the same rows as by key.
    dynamo = settings(lean.url)
    ids = driver_ids(DRIVERS // 2, seed=seed)
    keys, positions = unique_keys(LAYOUT, {"driver_id": ids})
    assert positions is not None
    expected = BatchReader(DEFAULT_TABLE, LAYOUT, dynamo).read(
        LAYOUT.keys_for({"driver_id": ids}), ALL).rows
    result, plan = read_planned(BatchReader(DEFAULT_TABLE, LAYOUT, dynamo), keys, ALL,
                                mode="scan", positions=positions)
    assert plan.mode == "scan" and isinstance(result.rows, FoundRows)
    assert result.rows._rows is None  # no row made: the output takes the columns
    assert len(result.rows.slots) == DRIVERS // 2 < len(keys)
    assert list(result.rows) == list(expected)
    stats = result.stats
    assert (stats.keys, stats.unique_keys) == (len(ids), len(keys))
    assert (stats.found, stats.missing) == (sum(row is not None for row in expected),
                                            sum(row is None for row in expected))


def test_a_key_a_scan_matched_twice_keeps_its_last_row_as_the_join_by_key() -> None:
    scanned = ScanResult(["b", "a", "b"], [[1, 2, 3], ["x", "y", "z"]], ReadStats(found=2))
    assert scanned.found == {"b": (3, "z"), "a": (2, "y")}
    keys = ["a", "b", "c"]
    rows = _rows(keys, {key: index for index, key in enumerate(keys)}, scanned, [2, 1, 0, 1])
    assert rows == [None, (3, "z"), (2, "y"), (3, "z")]
    once = ScanResult(["b", "a"], [[1, 2], ["x", "y"]], ReadStats(found=2))
    rows = _rows(keys, {key: index for index, key in enumerate(keys)}, once, [2, 1, 0, 1])
    assert isinstance(rows, FoundRows) and rows == [None, (1, "x"), (2, "y"), (1, "x")]


def test_pages_scanned_matched_and_rcu_are_what_the_endpoint_counted(
        lean: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": driver_ids(500, seed=2)})
    lean.reset_stats()
    scanner = SegmentScanner(DEFAULT_TABLE, LAYOUT, settings(lean.url), page_limit=64)
    stats = scanner.scan(range(3), 3, ["city"], set(keys)).stats
    wire = lean.stats()
    assert stats.pages == wire["scan_pages"] == wire["scan"] == stats.requests
    assert stats.pages >= DRIVERS // 64  # pagination: LastEvaluatedKey followed to the end
    assert stats.items_scanned == wire["scanned_items"] == DRIVERS
    assert stats.items_matched == 500
    assert stats.consumed_rcu == pytest.approx(wire["consumed_rcu"])
    assert wire["batch_get_item"] == 0  # one DescribeTable, then only Scan


def test_segments_partition_the_table(lean: EndpointProcess) -> None:
    scanner = SegmentScanner(DEFAULT_TABLE, LAYOUT, settings(lean.url))
    parts = [set(scanner.scan([segment], 5, ["city"], None).found) for segment in range(5)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == DRIVERS
    assert all(parts)


def test_an_unknown_feature_is_refused_as_batch_get_refuses_it(lean: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": list(range(50))})
    scanner = SegmentScanner(DEFAULT_TABLE, LAYOUT, settings(lean.url))
    with pytest.raises(UnknownFeatureError, match="did you mean 'conv_rate'"):
        scanner.scan(range(2), 2, ["conv_rtae"], set(keys))
    found = scanner.scan(range(2), 2, ["city", "conv_rtae"], set(keys),
                         allow_missing_features=True).found
    assert len(found) == 50 and all(row[2] is None for row in found.values())


def test_a_throttle_storm_and_cut_answers_are_retried_to_the_same_rows(
        lean: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": driver_ids(700, seed=3)})
    expected = BatchReader(DEFAULT_TABLE, LAYOUT, settings(lean.url)).read(keys, ALL).rows
    plan = FaultPlan(scan=True, storm_s=0.3, storm_after=3, error_rate=0.15, drop_rate=0.15,
                     seed=4, first_hits=1)
    with FaultProxy(lean.url, plan) as proxy:
        scanner = SegmentScanner(DEFAULT_TABLE, LAYOUT, settings(proxy.url), page_limit=50)
        result = scanner.scan(range(4), 4, ALL, set(keys))
        counts = proxy.counts
    assert join(keys, result.found) == expected
    stats = result.stats
    assert stats.throttles == counts["throttled"] > 0
    assert stats.server_errors == counts["errors_500"] > 0
    assert stats.connection_errors == counts["dropped"] > 0
    assert stats.requests == counts["scan_requests"] == stats.pages + stats.retries


def test_a_storm_past_the_deadline_fails_naming_the_segments_and_the_cause(
        lean: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": list(range(100))})
    with FaultProxy(lean.url, FaultPlan(scan=True, throttle_rate=1.0)) as proxy:
        scanner = SegmentScanner(DEFAULT_TABLE, LAYOUT,
                                 settings(proxy.url, retry_deadline_s=0.3))
        with pytest.raises(RetryDeadlineExceeded) as failure:
            scanner.scan(range(3), 3, ALL, set(keys))
    message = str(failure.value)
    assert "3 of 3 Scan segments of table demo.driver_stats" in message
    assert "retry_deadline_s=0.3" in message and "DynamoDB kept throttling" in message
    assert message.endswith("No rows were written.")
    assert failure.value.keys_left == 3 and failure.value.stats is not None


def test_a_read_budget_paces_scan_pages(lean: EndpointProcess) -> None:
    budget = 20.0
    client_id = f"scan-budget-{uuid.uuid4().hex[:6]}"
    scanner = SegmentScanner(DEFAULT_TABLE, LAYOUT, settings(lean.url, max_rcu_per_s=budget),
                             client=client_as(lean.url, client_id), page_limit=100)
    result = scanner.scan(range(2), 4, ALL, None)  # half the table: ~33 RCU, ~1.6 s
    stats = result.stats
    assert stats.budget_rcu_per_s == budget and stats.budget_wait_s > 0
    usage = lean.capacity()["clients"][client_id]
    assert usage["rcu"] == pytest.approx(stats.consumed_rcu, abs=0.01)
    per_second = usage["per_second"]
    seconds = sorted(int(s) for s in per_second)
    series = [per_second.get(str(s), 0.0) for s in range(seconds[0], seconds[-1] + 1)]
    page = stats.consumed_rcu / stats.pages
    # Each page is charged after it is read: a window may hold one page over the budget.
    assert all(units <= 1.1 * budget + page for units in series[1:]), series
    assert len(series) >= 2, series


# --------------------------------------------------------------------------------------
# moto: its own segmenting (md5 of the hash key) and paging
# --------------------------------------------------------------------------------------

BASE_TS = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def moto_feast(ddb: Any) -> str:
    name = unique_name("scanfeast.") + ".drivers"
    create_feast_table(ddb, name)
    write_feast_rows(ddb, name, [({"driver_id": ("int64", d)}, BASE_TS + timedelta(seconds=d),
                                  {"rate": ("double_val", d / 3), "city": ("string_val",
                                                                          f"c{d % 7}")})
                                 for d in range(300)])
    return name


@pytest.fixture(scope="module")
def moto_plain(ddb: Any) -> str:
    return moto_table(ddb, "scanplain", [("user", "S"), ("day", "N")], [
        {"user": {"S": f"u{user}"}, "day": {"N": str(day * 10)},
         "event_ts": {"N": str(1_700_000_000 + user)},
         "spend": {"N": f"{user}.{day}5"}, "tier": {"S": f"t{user % 3}"}}
        for user in range(60) for day in range(4)])


def test_moto_feast_layout_scan_is_batch_get(moto_feast: str, endpoint_url: str) -> None:
    dynamo = settings(endpoint_url)
    keys = LAYOUT.keys_for({"driver_id": driver_ids(120, seed=5, universe=300)})
    expected = BatchReader(moto_feast, LAYOUT, dynamo).read(keys, ["city", "rate"]).rows
    scanner = SegmentScanner(moto_feast, LAYOUT, dynamo, page_limit=25)
    result = scanner.scan(range(3), 3, ["city", "rate"], set(keys))
    assert join(keys, result.found) == expected
    assert result.stats.items_scanned == 300 and result.stats.pages > 3


def test_moto_plain_layout_scan_is_batch_get(moto_plain: str, endpoint_url: str,
                                             ddb: Any) -> None:
    dynamo = settings(endpoint_url)
    layout = PlainLayout.from_description(ddb.describe_table(TableName=moto_plain)["Table"])
    rng = random.Random(6)
    users = [f"u{rng.randrange(70)}" for _ in range(150)]  # u60..u69 are unknown
    days = [rng.choice(["0", "10", "20.0", "30", "1E+1", "5"]) for _ in users]  # 5: no item
    keys = layout.keys_for({"user": users, "day": days})
    expected = BatchReader(moto_plain, layout, dynamo).read(keys, ["spend", "tier"]).rows
    scanner = SegmentScanner(moto_plain, layout, dynamo, page_limit=40)
    result = scanner.scan(range(2), 2, ["spend", "tier"], set(keys))
    rows = join(keys, result.found)
    assert rows == expected
    assert any(row is None for row in rows) and any(row is not None for row in rows)
