"""BatchReader against the lean endpoint, in this process, with faults injected on the wire
(tests/faultproxy.py): the exact rows, the exact stats (checked against what the endpoint and
the proxy counted), the retry log lines, the deadline message, hold-back under throttling.
A few hundred keys each, so the mutation runs (scripts/mutation.sh) can afford them."""

from __future__ import annotations

import gc
import logging
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess, SyntheticTable, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import (
    BatchReader,
    FeastLayout,
    PermanentReadError,
    PlainLayout,
    RetryDeadlineExceeded,
)
from featurepull.dynamo.errors import ReadError, TableError, UnknownFeatureError
from featurepull.dynamo.feast_values import decode_value
from featurepull.dynamo.layouts import parse_event_ts
from featurepull.dynamo.reader import cyclic_gc_paused
from tests.conftest import REGION, unique_name
from tests.dynamo.test_transport import TABLE as SCRIPTED_TABLE
from tests.dynamo.test_transport import (  # noqa: F401
    ScriptedEndpoint,
    expected_row,
    scripted,
    scripted_reader,
)
from tests.faultproxy import FaultPlan, FaultProxy

LAYOUT = FeastLayout({"driver_id": "int64"})
TABLE = "wire.driver_stats"
DRIVERS = 500
TRANSPORTS = ("fast", "botocore")
SYNTHETIC = SyntheticTable(0)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=DRIVERS, table=TABLE, latency_ms=2) as running:
        yield running


@pytest.fixture
def proxy(endpoint: EndpointProcess) -> Iterator[FaultProxy]:
    with FaultProxy(endpoint.url) as running:
        yield running


def reader(url: str, **settings: Any) -> BatchReader:
    options: dict[str, Any] = {"region": REGION, "endpoint_url": url,
                               "retry_base_delay_s": 0.005, "retry_max_delay_s": 0.05}
    return BatchReader(TABLE, LAYOUT, DynamoSettings(**{**options, **settings}), seed=1)


def expected(ids: list[int], features: list[str]) -> list[Any]:
    rows: list[Any] = []
    for driver in ids:
        if driver >= DRIVERS:
            rows.append(None)
            continue
        stored = SYNTHETIC.expected_features(driver)
        rows.append((parse_event_ts(SYNTHETIC.event_ts(driver)),
                     *(decode_value(stored[name]) for name in features)))
    return rows


IDS = [7, 3, 7, 600, 499, 0, 3, 601, *range(100, 260), 0]
UNIQUE = len(set(IDS))  # 166
FOUND_ROWS = sum(1 for driver in IDS if driver < DRIVERS)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rows_in_input_order_and_what_went_on_the_wire(endpoint: EndpointProcess,
                                                       transport: str) -> None:
    features = ["city", "conv_rate", "avg_daily_trips"]
    endpoint.reset_stats()
    result = reader(endpoint.url, transport=transport, batch_size=25, max_read_workers=3,
                    consistent_reads=True).read(LAYOUT.keys_for({"driver_id": IDS}), features)
    assert result.rows == expected(IDS, features)
    wire = endpoint.stats()
    requests = math.ceil(UNIQUE / 25)
    assert (wire["batch_get_item"], wire["keys"], wire["consistent_reads"]) == (
        requests, UNIQUE, requests)
    assert wire["requests"] == requests + 1  # and one DescribeTable
    stats = result.stats
    assert (stats.keys, stats.unique_keys, stats.found, stats.missing) == (
        len(IDS), UNIQUE, FOUND_ROWS, len(IDS) - FOUND_ROWS)
    assert (stats.requests, stats.retries, stats.throttles, stats.server_errors,
            stats.connection_errors, stats.unprocessed_retries, stats.unprocessed_requests) == (
        requests, 0, 0, 0, 0, 0, 0)
    assert stats.consumed_rcu == UNIQUE * 1.0  # consistent: one unit per key asked for
    assert len(stats.latencies_ms) == requests
    # In milliseconds: each answer took the endpoint's 2 ms at least, and none took longer
    # than the whole read.
    assert 2.0 <= min(stats.latencies_ms) <= max(stats.latencies_ms) <= stats.seconds * 1000
    assert (stats.budget_rcu_per_s, stats.budget_wait_s) == (0.0, 0.0)
    assert stats.concurrency_max == 3
    assert stats.seconds > 0


def test_eventually_consistent_reads_cost_half(endpoint: EndpointProcess) -> None:
    endpoint.reset_stats()
    result = reader(endpoint.url).read(LAYOUT.keys_for({"driver_id": IDS}), ["city"])
    assert endpoint.stats()["consistent_reads"] == 0
    assert result.stats.consumed_rcu == UNIQUE * 0.5
    assert result.rows == expected(IDS, ["city"])


def test_progress_counts_each_key_once_with_the_collector_paused(
        endpoint: EndpointProcess) -> None:
    reports: list[tuple[int, bool]] = []
    assert gc.isenabled()
    result = reader(endpoint.url, batch_size=10, max_read_workers=2).read(
        LAYOUT.keys_for({"driver_id": IDS}), ["city"],
        progress=lambda n: reports.append((n, gc.isenabled())))
    assert gc.isenabled()
    assert sum(n for n, _ in reports) == UNIQUE
    assert all(0 < n <= 10 and not enabled for n, enabled in reports)
    assert result.stats.found == FOUND_ROWS


def test_the_collector_resumes_without_walking_what_was_made_meanwhile(
        endpoint: EndpointProcess) -> None:
    # A caller that reads and makes its rows with the collector paused, as `pull` does: more
    # new containers than gen 0's threshold. Resumed as it was, the collector would walk them
    # all at the next allocation (~30 ms at 100,000 rows); they go to the oldest generation.
    ids = list(range(DRIVERS + 100))
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    assert gc.isenabled()
    gc.collect()  # gen 0's count at 0: the few allocations before the pause start none
    gc.callbacks.append(seen)  # no collection runs while paused
    try:
        with cyclic_gc_paused():
            result = reader(endpoint.url).read(LAYOUT.keys_for({"driver_id": ids}), ["city"])
            rows = list(result.rows)
            made = [[row] for row in rows]
        after = [[n] for n in range(10)]  # the next allocations
    finally:
        gc.callbacks.remove(seen)
    assert gc.isenabled() and gc.get_freeze_count() == 0  # nothing stays frozen
    assert collections == []
    assert rows == expected(ids, ["city"])
    assert [row for [row] in made] == rows and len(after) == 10


def test_a_read_leaves_a_disabled_collector_disabled(endpoint: EndpointProcess) -> None:
    gc.disable()
    try:
        reader(endpoint.url).read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_no_keys_no_requests(endpoint: EndpointProcess) -> None:
    endpoint.reset_stats()
    result = reader(endpoint.url).read([], ["city"])
    assert result.rows == []
    assert (result.stats.keys, result.stats.requests, result.stats.found,
            result.stats.missing) == (0, 0, 0, 0)
    assert endpoint.stats()["batch_get_item"] == 0


def test_the_table_is_described_once_per_reader(endpoint: EndpointProcess) -> None:
    endpoint.reset_stats()
    one = reader(endpoint.url)
    for ids in ([1, 2, 3], [4, 5]):
        assert one.read(LAYOUT.keys_for({"driver_id": ids}), ["city"]).rows == expected(
            ids, ["city"])
    wire = endpoint.stats()
    assert wire["requests"] - wire["batch_get_item"] == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_fault_is_counted_and_retried(proxy: FaultProxy, transport: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    proxy.plan = FaultPlan(unprocessed_rate=0.2, throttle_rate=0.2, error_rate=0.15, seed=3,
                           first_hits=1)
    ids = list(range(0, 600, 2))  # 250 found, 50 unknown
    caplog.set_level(logging.INFO, logger="featurepull.dynamo.reader")
    result = reader(proxy.url, transport=transport, batch_size=20, max_read_workers=4).read(
        LAYOUT.keys_for({"driver_id": ids}), ["city", "acc_rate"])
    assert result.rows == expected(ids, ["city", "acc_rate"])
    counts, stats = proxy.counts, result.stats
    assert counts["throttled"] > 0 and counts["errors_500"] > 0 and counts[
        "unprocessed_keys"] > 0
    assert (stats.requests, stats.throttles, stats.server_errors, stats.connection_errors,
            stats.unprocessed_retries) == (
        counts["batch_requests"], counts["throttled"], counts["errors_500"], 0,
        counts["unprocessed_keys"])
    assert stats.retries == stats.throttles + stats.server_errors
    assert 0 < stats.unprocessed_requests <= stats.unprocessed_retries
    # Throttles and unprocessed keys halve the requests in flight (AIMD), from 4.
    assert stats.concurrency_max == 4 and stats.concurrency_min < 4
    assert (stats.found, stats.missing) == (250, 50)
    assert len(stats.latencies_ms) == stats.requests
    lines = [(r.getMessage(), r.retry, r.table) for r in caplog.records  # type: ignore[attr-defined]
             if r.name == "featurepull.dynamo.reader"]
    assert {kind for _, kind, _ in lines} == {"throttle", "server", "unprocessed"}
    assert len(lines) == 3  # one line per burst of each kind, and this read is one burst
    by_kind = {kind: message for message, kind, _ in lines}
    assert by_kind["throttle"] == (
        f"BatchGetItem on {TABLE} throttled (ProvisionedThroughputExceededException): "
        "backing off and holding back new requests")
    assert by_kind["server"] == (
        f"BatchGetItem on {TABLE} failed on the server (InternalServerError): retrying")
    assert re.fullmatch(rf"BatchGetItem on {re.escape(TABLE)} left keys unprocessed "
                        r"\(\d+ of \d+ keys\): asking for them again", by_kind["unprocessed"])
    assert {table for _, _, table in lines} == {TABLE}
    details = {r.retry: r.detail for r in caplog.records  # type: ignore[attr-defined]
               if r.name == "featurepull.dynamo.reader"}
    assert (details["throttle"], details["server"]) == (
        "ProvisionedThroughputExceededException", "InternalServerError")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_lost_connections_are_resent(proxy: FaultProxy, transport: str,
                                     caplog: pytest.LogCaptureFixture) -> None:
    proxy.plan = FaultPlan(drop_rate=0.3, drop_reset=True, seed=4, first_hits=1)
    ids = list(range(200))
    caplog.set_level(logging.INFO, logger="featurepull.dynamo.reader")
    result = reader(proxy.url, transport=transport, batch_size=20, max_read_workers=2).read(
        LAYOUT.keys_for({"driver_id": ids}), ["city"])
    assert result.rows == expected(ids, ["city"])
    dropped = proxy.counts["dropped"]
    assert dropped > 0
    assert (result.stats.connection_errors, result.stats.retries) == (dropped, dropped)
    lines = [r.getMessage() for r in caplog.records if r.name == "featurepull.dynamo.reader"]
    assert len(lines) == 1
    assert lines[0].startswith(f"BatchGetItem on {TABLE} lost its connection or response (")
    assert lines[0].endswith("): retrying")


def test_the_deadline_names_what_kept_the_keys(proxy: FaultProxy) -> None:
    # The first two requests are answered, then every request is throttled.
    proxy.plan = FaultPlan(storm_s=60.0, storm_after=2)
    ids = list(range(100))
    started = time.monotonic()
    with pytest.raises(RetryDeadlineExceeded) as caught:
        reader(proxy.url, batch_size=10, max_read_workers=1, retry_deadline_s=0.3).read(
            LAYOUT.keys_for({"driver_id": ids}), ["city"])
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.keys_left == 80
    assert error.stats is not None
    assert error.stats.throttles == proxy.counts["throttled"] > 0
    assert error.stats.requests == proxy.counts["batch_requests"]
    message = str(error)
    match = re.fullmatch(
        rf"80 of 100 keys of table {re.escape(TABLE)} \(region {REGION}, endpoint "
        rf"{re.escape(proxy.url)}\) were still unanswered after retrying for (\d+\.\d)s "
        r"\(retry_deadline_s=0\.3\): (.*) No rows were written\.", message, flags=re.S)
    assert match, message
    assert 0.3 <= float(match.group(1)) <= elapsed + 0.05  # the time it waited, rounded
    assert f"{error.stats.throttles} throttle" in match.group(2)


def test_a_throttled_request_holds_back_new_requests(proxy: FaultProxy) -> None:
    # Every request is throttled for the first 0.5 s. Held back, the reader sends a few
    # requests per backoff; without holding back it would send every unsent batch at once.
    proxy.plan = FaultPlan(storm_s=0.5)
    ids = list(range(400))
    result = reader(proxy.url, batch_size=10, max_read_workers=4, retry_base_delay_s=0.1,
                    retry_max_delay_s=0.2, adaptive_concurrency=False).read(
        LAYOUT.keys_for({"driver_id": ids}), ["city"])
    assert result.rows == expected(ids, ["city"])
    assert 0 < proxy.counts["throttled"] < 40


def test_a_feature_no_item_holds_is_refused_with_what_they_hold(
        endpoint: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": list(range(50))})
    endpoint.reset_stats()
    with pytest.raises(UnknownFeatureError) as caught:
        reader(endpoint.url, consistent_reads=True).read(keys, ["city", "no_such_feature"])
    wire = endpoint.stats()  # the request for what the items hold reads consistently too
    assert wire["consistent_reads"] == wire["batch_get_item"] > 1
    assert caught.value.missing == ["no_such_feature"]
    assert caught.value.held == sorted(FEATURES)
    assert str(caught.value) == (
        f"feature 'no_such_feature' is held by none of the 50 items found in table {TABLE} "
        f"(region {REGION}, endpoint {endpoint.url}); they hold in their values map: "
        "acc_rate, avg_daily_trips, city, conv_rate, last_trip_at. Check --features; if it "
        "is sparse (absent from most items), pass --allow-missing-features to read it as "
        "null where missing. No rows were written.")
    rows = reader(endpoint.url).read(keys, ["city", "no_such_feature"],
                                     allow_missing_features=True).rows
    assert rows == [(*row, None) for row in expected(list(range(50)), ["city"])]


def test_a_table_that_does_not_exist(endpoint: EndpointProcess) -> None:
    missing = BatchReader("wire.nothing", LAYOUT, DynamoSettings(endpoint_url=endpoint.url))
    with pytest.raises(TableError) as caught:
        missing.read(LAYOUT.keys_for({"driver_id": [1]}), ["city"])
    # No region set: the client's (from AWS_DEFAULT_REGION) is named.
    assert str(caught.value) == (
        f"table wire.nothing (region {REGION}, endpoint {endpoint.url}) does not exist; "
        "check --table, --project, the table name template and the region")


@pytest.mark.parametrize(("features", "message"), [
    ([], "no features requested: pass --features a,b,c"),
    (["city", ""], "feature names must be non-empty strings, got ''"),
    (["city", 3], "feature names must be non-empty strings, got 3"),
    (["city", "conv_rate", "city"], "feature 'city' is requested twice; name it once"),
])
def test_bad_feature_lists(features: list[Any], message: str) -> None:
    nowhere = BatchReader(TABLE, LAYOUT, DynamoSettings(endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(ValueError) as caught:
        nowhere.read(LAYOUT.keys_for({"driver_id": [1]}), features)
    assert str(caught.value) == message


def test_a_read_budget_holds_requests_back(endpoint: EndpointProcess) -> None:
    # 20 requests of 10 keys at 0.5 RCU: 100 RCU against 500 RCU/s, a burst of 0.05 s.
    endpoint.reset_stats()
    ids = list(range(200))
    result = reader(endpoint.url, batch_size=10, max_read_workers=4, max_rcu_per_s=500).read(
        LAYOUT.keys_for({"driver_id": ids}), ["city"])
    assert result.rows == expected(ids, ["city"])
    assert result.stats.budget_rcu_per_s == 500.0
    assert result.stats.budget_wait_s > 0
    assert (result.stats.requests, endpoint.stats()["batch_get_item"]) == (20, 20)
    assert result.stats.consumed_rcu == 100.0


def test_an_item_that_does_not_decode_is_named_by_key_and_entity_row(
        ddb: Any, endpoint_url: str) -> None:
    table = unique_name("decode")
    ddb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"},
                   {"AttributeName": "sort", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"},
                              {"AttributeName": "sort", "AttributeType": "S"}])
    ddb.put_item(TableName=table, Item={"id": {"N": "1"}, "sort": {"S": "a"},
                                        "event_ts": {"S": "yesterday"}, "x": {"N": "1"}})
    ddb.put_item(TableName=table, Item={"id": {"N": "2"}, "sort": {"S": "b"},
                                        "event_ts": {"S": "2026-01-02T03:04:05+00:00"},
                                        "x": {"N": "2"}})
    layout = PlainLayout([("id", "N"), ("sort", "S")])
    keys = layout.keys_for({"id": [2, 2, 1], "sort": ["b", "b", "a"]})
    plain = BatchReader(table, layout, DynamoSettings(region=REGION, endpoint_url=endpoint_url))
    with pytest.raises(ReadError) as caught:
        plain.read(keys, ["x"], row_offset=10)
    assert str(caught.value).startswith(
        f"table {table} (region {REGION}, endpoint {endpoint_url}): the item of key 1, a "
        "(entity row 13): attribute 'event_ts' holds 'yesterday', which is not a date-time")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_5xx_with_an_unknown_code_is_retried_as_the_servers(
        scripted: ScriptedEndpoint, transport: str) -> None:  # noqa: F811
    scripted.script = ["503"]
    ids = [1, 2, 400]
    result = scripted_reader(scripted, transport).read(LAYOUT.keys_for({"driver_id": ids}),
                                                       list(FEATURES))
    assert result.rows == [expected_row(d) for d in ids]
    assert (result.stats.server_errors, result.stats.retries, result.stats.requests) == (1, 1, 2)


@pytest.mark.parametrize(("fault", "refusal"), [
    ("bad-key", "ValidationException: The provided key element does not match the schema "
                "(does the table's key schema match --layout feast?)"),
    ("denied", "AccessDeniedException: User: tester is not authorized"),
    # Only a ValidationException about a key asks about the key schema.
    ("denied-key", "AccessDeniedException: User: tester may not use the table's KMS key"),
])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_request_ends_the_read_naming_the_refusal(
        scripted: ScriptedEndpoint, transport: str, fault: str,  # noqa: F811
        refusal: str) -> None:
    scripted.script = [fault]
    with pytest.raises(PermanentReadError) as caught:
        scripted_reader(scripted, transport).read(LAYOUT.keys_for({"driver_id": [1]}),
                                                  ["city"])
    assert str(caught.value) == (f"table {SCRIPTED_TABLE} (region {REGION}, endpoint "
                                 f"{scripted.url}) refused BatchGetItem: {refusal}")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_5xx_without_a_code_is_named_by_its_status_code(
        scripted: ScriptedEndpoint, transport: str,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    scripted.script = ["500"]
    caplog.set_level(logging.INFO, logger="featurepull.dynamo.reader")
    result = scripted_reader(scripted, transport).read(LAYOUT.keys_for({"driver_id": [1]}),
                                                       ["city"])
    assert result.stats.server_errors == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "featurepull.dynamo.reader"]
    # botocore (and the fast transport, alike) makes the status the error's code.
    assert lines == [f"BatchGetItem on {SCRIPTED_TABLE} failed on the server (500): retrying"]


def test_keys_always_left_unprocessed_run_out_of_time(proxy: FaultProxy) -> None:
    proxy.plan = FaultPlan(unprocessed_rate=1.0)
    with pytest.raises(RetryDeadlineExceeded) as caught:
        reader(proxy.url, max_read_workers=1, adaptive_concurrency=False, retry_deadline_s=0.3,
               retry_base_delay_s=0.02, retry_max_delay_s=0.1).read(
            LAYOUT.keys_for({"driver_id": [1, 2, 3]}), ["city"])
    stats = caught.value.stats
    assert stats is not None and caught.value.keys_left == 3
    assert stats.requests == stats.unprocessed_requests == proxy.counts["batch_requests"]
    assert stats.requests > 1
    assert stats.unprocessed_retries == 3 * stats.requests
    assert "unprocessed" in str(caught.value)


def test_the_collector_resumes_leaving_the_callers_frozen_objects_frozen(
        endpoint: EndpointProcess) -> None:
    # A program that froze its objects (a server before it forks) keeps them frozen: the
    # pause does not unfreeze what it did not freeze.
    assert gc.get_freeze_count() == 0
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        with cyclic_gc_paused():
            result = reader(endpoint.url).read(LAYOUT.keys_for({"driver_id": IDS}), ["city"])
        # Unfrozen, the count is 0; frozen objects freed meanwhile (by reference counting)
        # leave it a little below what was frozen.
        assert gc.isenabled() and gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()
    assert result.stats.found == FOUND_ROWS
