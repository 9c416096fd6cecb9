"""The bench endpoint's provisioned mode, in process: DescribeTable reports the capacity,
keys beyond the bucket come back in UnprocessedKeys, a request served nothing is refused,
and each client's consumption is recorded by the second."""

from __future__ import annotations

import json
from typing import Any

from featurepull.bench.capacity import Capacity, client_of
from featurepull.bench.endpoint import DynamoTable, SyntheticTable

TABLE = "cap.driver_stats"
TARGET = "DynamoDB_20120810."


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _table(capacity: Capacity) -> DynamoTable:
    return DynamoTable(TABLE, SyntheticTable(300).wire_records(), capacity=capacity)


def _batch(table: DynamoTable, drivers: range, client: str) -> tuple[int, dict[str, Any]]:
    synthetic = SyntheticTable(0)
    keys = [{"entity_id": {"S": synthetic.entity_id(d)}} for d in drivers]
    body = json.dumps({"RequestItems": {TABLE: {"Keys": keys}},
                       "ReturnConsumedCapacity": "TOTAL"}).encode()
    status, answer = table.handle(TARGET + "BatchGetItem", body, client)
    return status, json.loads(answer)


def test_describe_table_reports_provisioned_and_on_demand_capacity() -> None:
    def describe(capacity: Capacity) -> dict[str, Any]:
        status, body = _table(capacity).handle(TARGET + "DescribeTable",
                                               json.dumps({"TableName": TABLE}).encode())
        assert status == 200
        return dict(json.loads(body)["Table"])

    provisioned = describe(Capacity(rcu=2000))
    assert provisioned["ProvisionedThroughput"]["ReadCapacityUnits"] == 2000
    assert provisioned["BillingModeSummary"]["BillingMode"] == "PROVISIONED"
    on_demand = describe(Capacity(on_demand_max=8000))
    assert on_demand["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert on_demand["OnDemandThroughput"]["MaxReadRequestUnits"] == 8000
    assert "OnDemandThroughput" not in describe(Capacity())


def test_keys_beyond_the_bucket_are_left_unprocessed_then_requests_are_refused() -> None:
    clock, wall = Clock(), Clock()
    table = _table(Capacity(rcu=100, burst_s=1.0, clock=clock, wall=wall))
    status, answer = _batch(table, range(0, 100), "reader")  # 50 RCU of the 100 in the bucket
    assert status == 200 and not answer["UnprocessedKeys"]
    assert answer["ConsumedCapacity"][0]["CapacityUnits"] == 50.0
    status, answer = _batch(table, range(100, 200), "reader")
    assert status == 200 and not answer["UnprocessedKeys"]
    status, answer = _batch(table, range(200, 300), "live")  # the bucket is empty
    assert status == 400 and answer["__type"].endswith("ProvisionedThroughputExceededException")
    clock.now += 0.25  # 25 RCU refilled: 50 keys
    wall.now += 1
    status, answer = _batch(table, range(200, 300), "live")
    assert status == 200
    assert len(answer["Responses"][TABLE]) == 50
    assert len(answer["UnprocessedKeys"][TABLE]["Keys"]) == 50
    assert answer["ConsumedCapacity"][0]["CapacityUnits"] == 25.0
    clients = table.capacity.stats()["clients"]
    assert clients["reader"] == {"requests": 2, "throttled": 0, "rcu": 100.0,
                                 "per_second": {"100": 100.0}}
    assert clients["live"] == {"requests": 2, "throttled": 2, "rcu": 25.0,
                               "per_second": {"100": 0.0, "101": 25.0}}


def test_on_demand_serves_everything_and_still_records_clients() -> None:
    table = _table(Capacity())
    for _ in range(5):
        status, answer = _batch(table, range(0, 100), "reader")
        assert status == 200 and not answer["UnprocessedKeys"]
    assert table.capacity.stats()["clients"]["reader"]["rcu"] == 250.0


def test_the_client_is_the_access_key_id_that_signed_the_request() -> None:
    header = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/dynamodb/"
              "aws4_request, SignedHeaders=host, Signature=abc")
    assert client_of(header) == "AKIDEXAMPLE"
    assert client_of("") == "anonymous"
