"""The bench endpoint speaks DynamoDB like moto does: the same items, seeded into moto from
the endpoint's own generator, read through BatchReader from both, give identical rows — also
when the endpoint throttles and leaves keys unprocessed."""

from __future__ import annotations

import http.client
import json
import math
import random
import selectors
import socket
import time
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import pytest

from featurepull.bench.endpoint import (
    FEATURES,
    DynamoTable,
    EndpointProcess,
    SyntheticTable,
    _PreciseSelector,
    start_endpoint,
)
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout, TableError, decode_value
from featurepull.dynamo.layouts import parse_event_ts
from tests.conftest import REGION, unique_name

DRIVERS = 3_000
SEED = 0
LAYOUT = FeastLayout({"driver_id": "int64"})
# Different order, and one feature no item has: it must come back null from both.
SUBSET = ["last_trip_at", "city", "not_stored", "conv_rate"]


@pytest.fixture(scope="module")
def synthetic() -> SyntheticTable:
    return SyntheticTable(DRIVERS, SEED)


@pytest.fixture(scope="module")
def table_name() -> str:
    return f"{unique_name('bench')}.driver_stats"


@pytest.fixture(scope="module")
def moto_table(ddb: Any, table_name: str, synthetic: SyntheticTable) -> str:
    ddb.create_table(
        TableName=table_name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "entity_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "entity_id", "AttributeType": "S"}],
    )
    puts = [{"PutRequest": {"Item": item}} for item in synthetic.items()]
    for start in range(0, len(puts), 25):
        pending = puts[start:start + 25]
        while pending:
            answer = ddb.batch_write_item(RequestItems={table_name: pending})
            pending = answer.get("UnprocessedItems", {}).get(table_name, [])
    return table_name


@pytest.fixture(scope="module")
def endpoint(table_name: str) -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=DRIVERS, seed=SEED, table=table_name) as running:
        yield running


@pytest.fixture(scope="module")
def workload() -> list[int]:
    """5,000 driver ids: present and absent (>= DRIVERS), with repeats, shuffled."""
    rng = random.Random(3)
    base = rng.sample(range(DRIVERS), 2_500) + list(range(DRIVERS, DRIVERS + 700))
    ids = base + rng.choices(base, k=1_800)
    rng.shuffle(ids)
    return ids


def settings(url: str, **overrides: Any) -> DynamoSettings:
    return DynamoSettings(region=REGION, endpoint_url=url, retry_base_delay_s=0.005,
                          retry_max_delay_s=0.1, max_read_workers=8, **overrides)


def read(table: str, url: str, ids: list[int], features: list[str]) -> Any:
    reader = BatchReader(table, LAYOUT, settings(url))
    # SUBSET's "not_stored" is on no item: read as null by both, not refused.
    return reader.read(LAYOUT.keys_for({"driver_id": ids}), features,
                       allow_missing_features=True)


def client(url: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=url, region_name=REGION)


@pytest.fixture(scope="module")
def moto_rows(moto_table: str, endpoint_url: str, workload: list[int]) -> Any:
    return read(moto_table, endpoint_url, workload, list(FEATURES)).rows


def test_rows_match_moto_with_all_features(
    moto_rows: Any, endpoint: EndpointProcess, table_name: str, workload: list[int],
    synthetic: SyntheticTable,
) -> None:
    result = read(table_name, endpoint.url, workload, list(FEATURES))
    assert result.rows == moto_rows
    assert result.stats.found == sum(d < DRIVERS for d in workload)
    driver = workload[0] if workload[0] < DRIVERS else 17
    stored = synthetic.expected_features(driver)
    assert result.rows[workload.index(driver)] == (
        parse_event_ts(synthetic.event_ts(driver)), *(decode_value(stored[f]) for f in FEATURES))


def test_rows_match_moto_with_a_reordered_subset(
    moto_table: str, endpoint_url: str, endpoint: EndpointProcess, workload: list[int]
) -> None:
    ours = read(moto_table, endpoint.url, workload, SUBSET)
    theirs = read(moto_table, endpoint_url, workload, SUBSET)
    assert ours.rows == theirs.rows
    assert all(row is None or row[3] is None for row in ours.rows)  # "not_stored"


def test_whole_items_are_byte_identical(
    moto_table: str, endpoint_url: str, endpoint: EndpointProcess, synthetic: SyntheticTable
) -> None:
    drivers = [0, 1, 2_999, 5_000]
    keys = [{"entity_id": {"S": synthetic.entity_id(d)}} for d in drivers]
    answers = [client(url).batch_get_item(RequestItems={moto_table: {"Keys": keys}})
               for url in (endpoint_url, endpoint.url)]
    by_id = [{item["entity_id"]["S"]: item for item in answer["Responses"][moto_table]}
             for answer in answers]
    assert by_id[0] == by_id[1] == {synthetic.entity_id(d): synthetic.item(d) for d in drivers[:3]}
    assert answers[1]["UnprocessedKeys"] == {}


def test_plain_projection_and_consumed_capacity(
    endpoint: EndpointProcess, table_name: str, synthetic: SyntheticTable
) -> None:
    ddb = client(endpoint.url)
    keys = [{"entity_id": {"S": synthetic.entity_id(d)}} for d in range(10)]
    answer = ddb.batch_get_item(
        RequestItems={table_name: {"Keys": keys, "ProjectionExpression": "entity_id, #v.city",
                                   "ExpressionAttributeNames": {"#v": "values"}}},
        ReturnConsumedCapacity="TOTAL")
    for item in answer["Responses"][table_name]:
        assert set(item) == {"entity_id", "values"} and set(item["values"]["M"]) == {"city"}
    assert answer["ConsumedCapacity"] == [{"TableName": table_name, "CapacityUnits": 5.0}]
    strong = ddb.batch_get_item(RequestItems={table_name: {"Keys": keys, "ConsistentRead": True}},
                                ReturnConsumedCapacity="TOTAL")
    assert strong["ConsumedCapacity"][0]["CapacityUnits"] == 10.0
    assert "ConsumedCapacity" not in ddb.batch_get_item(RequestItems={table_name: {"Keys": keys}})
    with pytest.raises(botocore.exceptions.ClientError, match="reserved keyword: values"):
        ddb.batch_get_item(RequestItems={table_name: {"Keys": keys,
                                                      "ProjectionExpression": "values.city"}})


@pytest.mark.parametrize(("count", "repeat", "message"), [
    (101, False, "Too many items requested for the BatchGetItem call"),
    (3, True, "Provided list of item keys contains duplicates"),
])
def test_refuses_what_dynamodb_refuses(endpoint: EndpointProcess, table_name: str,
                                       count: int, repeat: bool, message: str) -> None:
    keys = [{"entity_id": {"S": f"id-{0 if repeat else i}"}} for i in range(count)]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client(endpoint.url).batch_get_item(RequestItems={table_name: {"Keys": keys}})
    assert caught.value.response["Error"] == {"Code": "ValidationException", "Message": message}


def test_unknown_operation_and_table(endpoint: EndpointProcess) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client(endpoint.url).list_tables()
    assert caught.value.response["Error"]["Code"] == "UnknownOperationException"
    reader = BatchReader("nope.driver_stats", LAYOUT, settings(endpoint.url))
    with pytest.raises(TableError, match=r"table nope\.driver_stats \(.*\) does not exist"):
        reader.read(LAYOUT.keys_for({"driver_id": [1]}), ["city"])


def test_throttling_and_unprocessed_keys_give_the_same_rows(
    moto_rows: Any, table_name: str, workload: list[int]
) -> None:
    with start_endpoint(drivers=DRIVERS, seed=SEED, table=table_name,
                        unprocessed_rate=0.3, throttle_rate=0.2) as faulty:
        result = read(table_name, faulty.url, workload, list(FEATURES))
        stats = faulty.stats()
    assert result.rows == moto_rows
    assert stats["throttled"] > 0 and stats["unprocessed_keys"] > 0
    assert result.stats.throttles == stats["throttled"]
    assert result.stats.unprocessed_retries == stats["unprocessed_keys"]


def test_keep_alive_content_length_and_crc32(endpoint: EndpointProcess, table_name: str,
                                             synthetic: SyntheticTable) -> None:
    url = urlsplit(endpoint.url)
    before = endpoint.stats()
    body = json.dumps({"RequestItems": {table_name: {
        "Keys": [{"entity_id": {"S": synthetic.entity_id(d)}} for d in range(5)]}}}).encode()
    headers = {"X-Amz-Target": "DynamoDB_20120810.BatchGetItem",
               "Content-Type": "application/x-amz-json-1.0"}
    connection = http.client.HTTPConnection(url.hostname or "", url.port)
    try:
        for _ in range(3):
            connection.request("POST", "/", body, headers)
            response = connection.getresponse()
            data = response.read()
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == len(data)
            assert int(response.headers["x-amz-crc32"]) == zlib.crc32(data)
            assert len(json.loads(data)["Responses"][table_name]) == 5
    finally:
        connection.close()
    after = endpoint.stats()
    assert after["connections"] - before["connections"] == 2  # ours, and the /stats call
    assert after["batch_get_item"] - before["batch_get_item"] == 3
    assert after["keys"] - before["keys"] == 15


def test_counts_what_tests_check_on_the_wire(table_name: str, synthetic: SyntheticTable) -> None:
    # Its own endpoint, with latency so that reads overlap: in flight, ConsistentRead and
    # the SigV4 region as the endpoint saw them, and DELETE /stats to start again.
    with start_endpoint(drivers=1_000, seed=SEED, table=table_name, latency_ms=30) as slow:
        ids = LAYOUT.keys_for({"driver_id": list(range(1_000))})
        reads = DynamoSettings(region=REGION, endpoint_url=slow.url, max_read_workers=3,
                               consistent_reads=True)
        BatchReader(table_name, LAYOUT, reads).read(ids, ["city"])
        stats = slow.stats()
        assert (stats["batch_get_item"], stats["consistent_reads"]) == (10, 10)
        assert (stats["max_in_flight"], stats["in_flight"]) == (3, 0)
        assert stats["regions"] == {REGION: stats["requests"]}
        slow.reset_stats()
        other = boto3.client("dynamodb", endpoint_url=slow.url, region_name="ap-south-2")
        other.batch_get_item(RequestItems={table_name: {
            "Keys": [{"entity_id": {"S": synthetic.entity_id(1)}}]}})
        stats = slow.stats()
        assert (stats["batch_get_item"], stats["consistent_reads"]) == (1, 0)
        assert (stats["max_in_flight"], stats["regions"]) == (1, {"ap-south-2": 1})


def scan_all(ddb: Any, table: str, total: int, **extra: Any) -> tuple[dict[str, Any], list[Any]]:
    """Every item of every segment, by entity_id, and each page's answer."""
    items: dict[str, Any] = {}
    pages = []
    for segment in range(total):
        paginator = ddb.get_paginator("scan")
        for page in paginator.paginate(TableName=table, Segment=segment, TotalSegments=total,
                                       ReturnConsumedCapacity="TOTAL", **extra):
            pages.append(page)
            for item in page["Items"]:
                assert item["entity_id"]["S"] not in items  # in one segment only
                items[item["entity_id"]["S"]] = item
    return items, pages


def test_scan_segments_and_pages_hold_the_items_moto_holds(
        endpoint: EndpointProcess, endpoint_url: str, moto_table: str, table_name: str) -> None:
    # moto reads every item of the table for each page: few pages keep it quick.
    ours, pages = scan_all(client(endpoint.url), table_name, 2, Limit=1_000)
    theirs, _ = scan_all(client(endpoint_url), moto_table, 2, Limit=1_000)
    assert ours == theirs and len(ours) == DRIVERS
    assert all(len(page["Items"]) <= 1_000 for page in pages) and len(pages) >= 4
    described = client(endpoint.url).describe_table(TableName=table_name)["Table"]
    assert described["ItemCount"] == DRIVERS
    per_item = described["TableSizeBytes"] / DRIVERS  # ~175 bytes: charged by started 4 KB
    for page in pages:
        read = len(page["Items"]) * per_item
        assert page["ConsumedCapacity"]["CapacityUnits"] == pytest.approx(
            max(0.5, 0.5 * math.ceil(read / 4096)), abs=0.5)
        assert page["ScannedCount"] == page["Count"] == len(page["Items"])


def test_a_scan_page_reads_at_most_1_mb_charged_by_started_4_kb() -> None:
    table = DynamoTable("t", SyntheticTable(7_000, SEED).wire_records())  # ~1.2 MB
    pages, after, charged = [], None, 0.0
    while True:
        request = {"TableName": "t", "ReturnConsumedCapacity": "TOTAL",
                   **({"ExclusiveStartKey": after} if after else {})}
        page = json.loads(table.scan(request))
        pages.append(page["Count"])
        charged += page["ConsumedCapacity"]["CapacityUnits"]
        after = page.get("LastEvaluatedKey")
        if after is None:
            break
    # Described after the scan: the endpoint's size is then exact (every item was sized).
    total = json.loads(table.describe_table({"TableName": "t"}))["Table"]["TableSizeBytes"]
    assert total > 1024 * 1024
    assert sum(pages) == 7_000 and len(pages) == 2
    assert pages[0] * total / 7_000 <= 1024 * 1024 < (pages[0] + 2) * total / 7_000
    assert charged == pytest.approx(0.5 * math.ceil(total / 4096), abs=0.5)


@pytest.mark.parametrize("request_", [{"Segment": 1}, {"TotalSegments": 2},
                                      {"Segment": 2, "TotalSegments": 2}])
def test_scan_refuses_segments_as_moto_does(endpoint: EndpointProcess, endpoint_url: str,
                                            moto_table: str, table_name: str,
                                            request_: dict[str, int]) -> None:
    errors = []
    for url, table in ((endpoint.url, table_name), (endpoint_url, moto_table)):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            client(url).scan(TableName=table, **request_)
        errors.append(caught.value.response["Error"])
    assert errors[0] == errors[1] and errors[0]["Code"] == "ValidationException"


def test_a_tables_records_are_read_only_once_it_is_built() -> None:
    # Its set of ids is built once: a record added later would be answered as absent.
    table = DynamoTable("t", SyntheticTable(3, SEED).wire_records())
    record = next(iter(table.records.values()))
    with pytest.raises(TypeError, match="does not support item assignment"):
        table.records["added"] = record  # type: ignore[index]
    assert len(table.records) == 3


def test_the_endpoints_loop_waits_a_timeout_out_whole_and_still_sees_its_sockets() -> None:
    # Its latency timers wait in select() on the epoll descriptor (to the microsecond, not
    # epoll's whole milliseconds): never shorter than asked, so an answer is never early.
    selector = _PreciseSelector()
    ready, writer = socket.socketpair()
    try:
        selector.register(ready, selectors.EVENT_READ, "answer")
        for timeout in (0.0003, 0.0021):
            started = time.monotonic()
            assert selector.select(timeout) == []
            assert time.monotonic() - started >= timeout
        writer.send(b"x")
        for timeout in (5.0, 0.0003, 0, None):
            assert [(key.data, events) for key, events in selector.select(timeout)] == [
                ("answer", selectors.EVENT_READ)]
    finally:
        selector.close()
        ready.close()
        writer.close()
