"""The fault proxy itself, against the real moto server: what passes through untouched, what
each BatchGetItem fault looks like to a plain boto3 client, and that the counts add up."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ChecksumError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
)

from tests.conftest import REGION, moto_table
from tests.faultproxy import COUNT_NAMES, FaultPlan, FaultProxy

N_ITEMS = 50
PROJECTION = {"ProjectionExpression": "#k, n", "ExpressionAttributeNames": {"#k": "pk"}}
THROTTLE_CODES = {"ProvisionedThroughputExceededException", "ThrottlingException",
                  "RequestLimitExceeded"}


def _key(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{i:03d}"}}


def _create_table(ddb: Any, n_items: int) -> str:
    return moto_table(ddb, "faultproxy", [("pk", "S")], [
        {**_key(i), "n": {"N": str(i)}, "blob": {"B": bytes([i, 0, 255])},
         "tag": {"S": f"tag-{i}"}} for i in range(n_items)])


@pytest.fixture(scope="module")
def table(ddb: Any) -> str:
    return _create_table(ddb, N_ITEMS)


@pytest.fixture(scope="module")
def small_table(ddb: Any) -> str:
    return _create_table(ddb, 3)


@pytest.fixture
def proxy(endpoint_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(endpoint_url) as proxy:
        yield proxy


def _client(url: str, mode: str = "standard") -> Any:
    # One attempt, so botocore's own retries don't hide the faults; the mode is pinned so
    # AWS_RETRY_MODE in the environment can't change what these tests see.
    config = Config(retries={"mode": mode, "total_max_attempts": 1},
                    connect_timeout=5, read_timeout=10)
    return boto3.client("dynamodb", endpoint_url=url, region_name=REGION, config=config)


@pytest.fixture
def client(proxy: FaultProxy) -> Any:
    return _client(proxy.url)


def _pks(rows: list[dict[str, Any]]) -> list[str]:
    return [row["pk"]["S"] for row in rows]


def _raw_bodies(client: Any, operation: str) -> list[tuple[bytes, str | None]]:
    """Record the raw body and x-amz-crc32 of every `operation` response the client gets."""
    seen: list[tuple[bytes, str | None]] = []

    def record(http_response: Any, **_: Any) -> None:
        seen.append((http_response.content, http_response.headers.get("x-amz-crc32")))

    client.meta.events.register(f"after-call.dynamodb.{operation}", record)
    return seen


def _assert_checksums(seen: list[tuple[bytes, str | None]]) -> None:
    """Every rewritten or synthesized body carries its own x-amz-crc32. (With one attempt,
    standard-mode botocore would swallow a mismatch silently, so check it here.)"""
    assert seen
    for body, crc in seen:
        assert crc is not None and int(crc) == zlib.crc32(body) & 0xFFFFFFFF


def test_passthrough_is_byte_identical(
    proxy: FaultProxy, client: Any, ddb: Any, table: str
) -> None:
    # Every fault on: none of it may touch anything that is not a BatchGetItem.
    proxy.plan = FaultPlan(unprocessed_rate=1.0, throttle_rate=1.0, error_rate=1.0,
                           drop_rate=1.0, shuffle=True, latency_s=1.0)
    item = {"pk": {"S": "put-through-proxy"}, "blob": {"B": b"\x00\xff\x10"}, "n": {"N": "1.5"}}
    via_proxy, direct = _raw_bodies(client, "PutItem"), _raw_bodies(ddb, "PutItem")
    client.put_item(TableName=table, Item=item)
    ddb.put_item(TableName=table, Item=item)
    assert via_proxy == direct
    assert ddb.get_item(TableName=table, Key={"pk": item["pk"]}, ConsistentRead=True)[
        "Item"] == item

    via_proxy, direct = _raw_bodies(client, "GetItem"), _raw_bodies(ddb, "GetItem")
    for key in (_key(7), {"pk": item["pk"]}, {"pk": {"S": "missing"}}):
        client.get_item(TableName=table, Key=key)
        ddb.get_item(TableName=table, Key=key)
    assert via_proxy == direct
    assert all(crc is not None for _, crc in via_proxy)
    assert client.describe_table(TableName=table)["Table"]["TableName"] == table
    # Only counted: a DescribeTable fails only under FaultPlan(describe_errors=N).
    assert proxy.counts == {**dict.fromkeys(COUNT_NAMES, 0), "describe_requests": 1}


def test_all_keys_unprocessed_keeps_request_parameters(
    proxy: FaultProxy, client: Any, table: str
) -> None:
    proxy.plan = FaultPlan(unprocessed_rate=1.0)
    raw = _raw_bodies(client, "BatchGetItem")
    keys = [_key(i) for i in range(10)]
    resp = client.batch_get_item(
        RequestItems={table: {"Keys": keys, "ConsistentRead": True, **PROJECTION}})
    assert resp["Responses"] == {table: []}
    assert resp["UnprocessedKeys"] == {
        table: {"Keys": keys, "ConsistentRead": True, **PROJECTION}}
    assert proxy.counts["batch_requests"] == 1
    assert proxy.counts["keys_requested"] == 10
    assert proxy.counts["unprocessed_keys"] == 10
    _assert_checksums(raw)


def test_partial_unprocessed_partitions_the_keys(
    proxy: FaultProxy, client: Any, table: str, small_table: str
) -> None:
    big = [_key(i) for i in range(N_ITEMS)]
    small = [_key(0)]
    wanted = {(table, pk) for pk in _pks(big)} | {(small_table, "k000")}
    emptied_a_table = False
    raw = _raw_bodies(client, "BatchGetItem")
    for seed in range(10):
        proxy.plan = FaultPlan(unprocessed_rate=0.5, seed=seed)
        proxy.reset_counts()
        resp = client.batch_get_item(RequestItems={
            small_table: {"Keys": small, **PROJECTION}, table: {"Keys": big, **PROJECTION}})
        got = {(t, pk) for t, rows in resp["Responses"].items() for pk in _pks(rows)}
        left = {(t, pk) for t, spec in resp["UnprocessedKeys"].items()
                for pk in _pks(spec["Keys"])}
        assert got.isdisjoint(left) and got | left == wanted
        assert proxy.counts["unprocessed_keys"] == len(left) > 0
        assert all(set(row) == {"pk", "n"} for rows in resp["Responses"].values()
                   for row in rows), "the projection must reach upstream"
        emptied_a_table |= resp["Responses"][small_table] == []

        # The UnprocessedKeys are a valid request as they are: asking again gets the rest.
        proxy.plan = FaultPlan()
        again = client.batch_get_item(RequestItems=resp["UnprocessedKeys"])
        assert {(t, pk) for t, rows in again["Responses"].items() for pk in _pks(rows)} == left
        assert again["UnprocessedKeys"] == {}
    # The small table lost its only key in some request while the big one still went upstream.
    assert emptied_a_table
    _assert_checksums(raw)


def test_throttle_raises_client_error_with_throttling_codes(
    proxy: FaultProxy, client: Any, table: str
) -> None:
    proxy.plan = FaultPlan(throttle_rate=1.0)
    raw = _raw_bodies(client, "BatchGetItem")
    codes = []
    for _ in range(5):
        with pytest.raises(ClientError) as info:
            client.batch_get_item(RequestItems={table: {"Keys": [_key(1), _key(2)]}})
        error = info.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        # botocore raises the modeled subclass, e.g. client.exceptions.ThrottlingException.
        assert type(info.value) is getattr(client.exceptions, error["Error"]["Code"])
        codes.append(error["Error"]["Code"])
    assert set(codes) == THROTTLE_CODES
    assert codes.count("ProvisionedThroughputExceededException") == 3
    assert proxy.counts["throttled"] == proxy.counts["batch_requests"] == 5
    assert proxy.counts["keys_requested"] == 10
    _assert_checksums(raw)


def test_error_rate_answers_500(proxy: FaultProxy, client: Any, table: str) -> None:
    proxy.plan = FaultPlan(error_rate=1.0)
    raw = _raw_bodies(client, "BatchGetItem")
    with pytest.raises(client.exceptions.InternalServerError) as info:
        client.batch_get_item(RequestItems={table: {"Keys": [_key(1)]}})
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert info.value.response["Error"]["Code"] == "InternalServerError"
    assert proxy.counts["errors_500"] == proxy.counts["batch_requests"] == 1
    _assert_checksums(raw)


def test_dropped_response(
    proxy: FaultProxy, client: Any, table: str, capfd: pytest.CaptureFixture[str]
) -> None:
    request = {table: {"Keys": [_key(i) for i in range(10)]}}
    proxy.plan = FaultPlan(drop_rate=1.0)
    # Surprise: botocore reads with enforce_content_length=False, so a body cut after the
    # headers is no transport error. In standard/adaptive mode only the x-amz-crc32 check
    # notices; once attempts run out botocore returns the truncated body as a *successful*
    # result with neither Responses nor UnprocessedKeys. A reader must treat that as a failure.
    resp = client.batch_get_item(RequestItems=request)
    assert set(resp) == {"ResponseMetadata"}
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ResponseMetadata"]["MaxAttemptsReached"] is True
    # The legacy retry handler raises on the same checksum mismatch instead.
    with pytest.raises(ChecksumError):
        _client(proxy.url, mode="legacy").batch_get_item(RequestItems=request)
    # Cut with a TCP reset instead, urllib3's ProtocolError surfaces as ConnectionClosedError.
    proxy.plan = FaultPlan(drop_rate=1.0, drop_reset=True)
    with pytest.raises(ConnectionClosedError):
        client.batch_get_item(RequestItems=request)
    assert proxy.counts["dropped"] == proxy.counts["batch_requests"] == 3

    proxy.plan = FaultPlan()  # the same client recovers: the pool drops the dead connection
    assert len(client.batch_get_item(RequestItems=request)["Responses"][table]) == 10
    assert "Traceback" not in capfd.readouterr().err


def test_shuffle_reorders_deterministically(
    proxy: FaultProxy, client: Any, ddb: Any, table: str
) -> None:
    keys = [_key(i) for i in range(N_ITEMS)]
    upstream = _pks(ddb.batch_get_item(RequestItems={table: {"Keys": keys}})["Responses"][table])

    def shuffled_order() -> list[str]:
        proxy.plan = FaultPlan(shuffle=True, seed=7)  # a new plan re-seeds the proxy
        resp = client.batch_get_item(RequestItems={table: {"Keys": keys}})
        return _pks(resp["Responses"][table])

    raw = _raw_bodies(client, "BatchGetItem")
    first = shuffled_order()
    assert first != upstream and sorted(first) == sorted(upstream)
    assert shuffled_order() == first
    assert proxy.counts["shuffled"] == 2

    proxy.plan = FaultPlan(shuffle=True, unprocessed_rate=0.5, seed=7)
    left = client.batch_get_item(RequestItems={table: {"Keys": keys}})["UnprocessedKeys"]
    left_pks = _pks(left[table]["Keys"])
    assert left_pks != sorted(left_pks)  # requested in key order, answered out of it
    _assert_checksums(raw)


def test_latency_and_reset_counts(proxy: FaultProxy, client: Any, table: str) -> None:
    proxy.plan = FaultPlan(latency_s=0.3)
    started = time.monotonic()
    client.batch_get_item(RequestItems={table: {"Keys": [_key(1)]}})
    assert time.monotonic() - started >= 0.3
    assert proxy.counts["batch_requests"] == 1
    proxy.reset_counts()
    assert proxy.counts == dict.fromkeys(COUNT_NAMES, 0)


def test_counts_add_up_under_concurrency(proxy: FaultProxy, client: Any, table: str) -> None:
    proxy.plan = FaultPlan(throttle_rate=0.2, error_rate=0.2, unprocessed_rate=0.3, seed=11,
                           first_hits=1)
    seen = {"throttled": 0, "errors_500": 0, "unprocessed_keys": 0, "ok": 0}
    lock = threading.Lock()

    def worker(offset: int) -> None:
        for n in range(10):
            keys = [_key((offset * 10 + n + i) % N_ITEMS) for i in range(10)]
            try:
                resp = client.batch_get_item(RequestItems={table: {"Keys": keys}})
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                with lock:
                    seen["throttled" if code in THROTTLE_CODES else "errors_500"] += 1
                continue
            left = resp["UnprocessedKeys"].get(table, {}).get("Keys", [])
            assert len(resp["Responses"][table]) + len(left) == 10
            with lock:
                seen["ok"] += 1
                seen["unprocessed_keys"] += len(left)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = proxy.counts
    assert counts["batch_requests"] == 40 and counts["keys_requested"] == 400
    assert seen["ok"] + seen["throttled"] + seen["errors_500"] == 40
    for name in ("throttled", "errors_500", "unprocessed_keys"):
        assert counts[name] == seen[name] > 0, name


def test_first_hits_are_certain_then_the_rate_draws(
    proxy: FaultProxy, client: Any, table: str
) -> None:
    # Rates so low that a seeded draw (seed 0) never hits in these few requests.
    proxy.plan = FaultPlan(error_rate=0.001, first_hits=2)
    answers = []
    for _ in range(4):
        try:
            client.batch_get_item(RequestItems={table: {"Keys": [_key(1)]}})
            answers.append(200)
        except client.exceptions.InternalServerError:
            answers.append(500)
    assert answers == [500, 500, 200, 200]
    assert proxy.counts["errors_500"] == 2

    proxy.plan = FaultPlan(unprocessed_rate=0.001, first_hits=3)  # a new plan counts anew
    keys = [_key(i) for i in range(10)]
    resp = client.batch_get_item(RequestItems={table: {"Keys": keys}})
    assert resp["UnprocessedKeys"][table]["Keys"] == keys[:3]
    assert sorted(_pks(resp["Responses"][table])) == _pks(keys[3:])


def test_plan_rejects_bad_rates() -> None:
    bad_plans: list[dict[str, Any]] = [
        {"throttle_rate": 1.5}, {"unprocessed_rate": -0.1}, {"latency_s": -1.0},
        {"first_hits": -1}]
    for bad in bad_plans:
        with pytest.raises(ValueError):
            FaultPlan(**bad)


def test_stop_closes_the_listener_and_pooled_connections(endpoint_url: str, table: str) -> None:
    proxy = FaultProxy(endpoint_url).start()
    client = _client(proxy.url)
    client.describe_table(TableName=table)  # leaves a keep-alive connection in the pool
    proxy.stop()
    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        client.describe_table(TableName=table)
    with pytest.raises(RuntimeError):
        _ = proxy.url
