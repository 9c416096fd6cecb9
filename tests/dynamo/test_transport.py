"""The BatchGetItem transports: the fast one gives the same rows and stats as botocore's on
moto and on the lean endpoint, resends damaged responses, maps error answers as botocore
does, signs with SigV4 (session tokens, refreshed credentials), and keeps one verified,
keep-alive pool per process."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import ssl
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import botocore.config
import botocore.credentials
import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from featurepull.bench.endpoint import FEATURES, EndpointProcess, SyntheticTable, start_endpoint
from featurepull.config import DynamoSettings, Settings
from featurepull.dynamo import BatchReader, FeastLayout, PermanentReadError, PlainLayout
from featurepull.dynamo.feast_values import decode_value
from featurepull.dynamo.http import tls_context
from featurepull.dynamo.layouts import parse_event_ts
from featurepull.dynamo.stats import ReadStats
from featurepull.dynamo.transport import (
    BotocoreTransport,
    FastTransport,
    transport_for,
)
from tests.conftest import REGION
from tests.dynamo.conftest import FEATURES as DRIVER_FEATURES
from tests.dynamo.conftest import FeastTable
from tests.dynamo.test_plain_layout import TYPED_ATTRIBUTES, create_table, exactly, put
from tests.dynamo.test_reader import order_workload
from tests.faultproxy import FaultPlan, FaultProxy

LAYOUT = FeastLayout({"driver_id": "int64"})
TRANSPORTS = ("botocore", "fast")
ERR = "com.amazonaws.dynamodb.v20120810#"


def comparable(stats: ReadStats) -> dict[str, Any]:
    """Every counter of a read, without the timings."""
    out = stats.to_dict()
    for timing in ("seconds", "latency_p50_ms", "latency_p99_ms", "rows_per_s", "rcu_per_s",
                   "budget_wait_s"):
        out.pop(timing)
    return out


def read_both(table: str, layout: Any, keys: list[Any], features: list[str],
              **settings: Any) -> dict[str, Any]:
    """The result of the same read through each transport."""
    return {name: BatchReader(table, layout, DynamoSettings(transport=name, **settings),
                              seed=1).read(keys, features)
            for name in TRANSPORTS}


# ---------------------------------------------------------------------------------------
# Same rows, same stats
# ---------------------------------------------------------------------------------------


def test_same_rows_and_stats_on_moto(drivers_table: FeastTable) -> None:
    keys = LAYOUT.keys_for({"driver_id": order_workload(seed=5)[:6_000]})
    results = read_both(drivers_table.name, LAYOUT, keys, DRIVER_FEATURES,
                        region=REGION, endpoint_url=drivers_table.endpoint_url)
    slow, fast = results["botocore"], results["fast"]
    assert fast.rows == slow.rows
    assert comparable(fast.stats) == comparable(slow.stats)
    assert fast.stats.found > 0 and fast.stats.missing > 0 and fast.stats.consumed_rcu > 0


@pytest.fixture(scope="module")
def lean_endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=3_000, table="bench.driver_stats") as running:
        yield running


def test_same_rows_and_stats_on_the_lean_endpoint(lean_endpoint: EndpointProcess) -> None:
    ids = [*range(0, 3_000, 2), *range(5_000, 5_400), *range(0, 600)]
    keys = LAYOUT.keys_for({"driver_id": ids})
    results = read_both("bench.driver_stats", LAYOUT, keys, list(FEATURES),
                        region=REGION, endpoint_url=lean_endpoint.url, max_read_workers=8)
    slow, fast = results["botocore"], results["fast"]
    assert fast.rows == slow.rows
    assert comparable(fast.stats) == comparable(slow.stats)
    assert fast.stats.found == 1_500 + 600 and fast.stats.missing == 400


@pytest.fixture(scope="module")
def binary_typed_table(ddb: Any) -> str:
    """Binary hash keys, and every attribute type (B, BS, and B inside M and L among them)."""
    table = create_table(ddb, [("id", "HASH", "B")])
    for n in range(150):
        put(ddb, table, {"id": {"B": bytes([n, 0, 255])},
                         **{name: wire for name, (wire, _) in TYPED_ATTRIBUTES.items()}})
    return table


def test_binary_keys_and_every_attribute_type_decode_alike(
    binary_typed_table: str, endpoint_url: str
) -> None:
    layout = PlainLayout([("id", "B")])
    keys = layout.keys_for({"id": [bytes([n, 0, 255]) for n in range(0, 200, 3)]})
    features = list(TYPED_ATTRIBUTES)
    results = read_both(binary_typed_table, layout, keys, features, region=REGION,
                        endpoint_url=endpoint_url, batch_size=10)
    slow, fast = results["botocore"], results["fast"]
    assert exactly(fast.rows) == exactly(slow.rows)
    expected = tuple(python for _, python in TYPED_ATTRIBUTES.values())
    assert exactly(fast.rows[1][1:]) == exactly(expected)
    assert fast.rows[-1] is None  # id 198 was never written


def test_unprocessed_binary_keys_are_matched_back(binary_typed_table: str,
                                                  endpoint_url: str) -> None:
    # UnprocessedKeys come back base64 in the JSON: they must be decoded to find the keys.
    layout = PlainLayout([("id", "B")])
    keys = layout.keys_for({"id": [bytes([n, 0, 255]) for n in range(150)]})
    with FaultProxy(endpoint_url, FaultPlan(unprocessed_rate=0.5, shuffle=True, seed=2)) as proxy:
        settings = DynamoSettings(region=REGION, endpoint_url=proxy.url, batch_size=25,
                                  retry_base_delay_s=0.005, retry_max_delay_s=0.05)
        result = BatchReader(binary_typed_table, layout, settings).read(keys, ["s", "b"])
        assert result.stats.unprocessed_retries == proxy.counts["unprocessed_keys"] > 0
    assert result.rows == [(None, "héllo, wörld", b"\x00\xffbin")] * 150


# ---------------------------------------------------------------------------------------
# A scripted DynamoDB stand-in: records requests, answers with chosen faults
# ---------------------------------------------------------------------------------------

TABLE = "scripted.driver_stats"
SYNTHETIC = SyntheticTable(0)
# Drivers 0-299 have items, 300-9,999 none; 10,000-11,499 are there to find more than
# features.CHECK_ITEMS items in one read.
DRIVERS = {SYNTHETIC.entity_id(d): d for d in (*range(300), *range(10_000, 11_500))}


def _item_json(driver: int) -> dict[str, Any]:
    item = SYNTHETIC.item(driver)
    item["values"]["M"] = {name: {"B": base64.b64encode(value["B"]).decode()}
                           for name, value in item["values"]["M"].items()}
    return item


class ScriptedEndpoint(ThreadingHTTPServer):
    """DescribeTable for a Feast table, BatchGetItem from SyntheticTable items; each
    BatchGetItem answer takes the next fault off ``script`` (then answers normally):
    an error answer, a damaged body, no answer (``hang-up``), the second half of the keys left unprocessed
    (``unprocessed``), or the first item's ``event_ts`` garbled (``bad-item``; the last
    item's: ``bad-last-item``) or its
    ``values`` not a map (``not-feast``), an item not asked for (``stranger``), the first
    item twice, the copy's city another (``twice``), the first found key also left
    unprocessed (``also-unprocessed``), or 1,000
    RCU charged (``costly``), or no answer until the test ends (``held``). DescribeTable
    answers with ``describe``: the on-demand table (``""``), the table with 80 RCU/s
    provisioned (``provisioned``) or keyed by ``user_id`` (``keyed-by-user``), or ``missing``,
    ``denied``, ``no-code`` (an error without a code), ``hang-up``. Items put in ``items`` (by
    ``entity_id``, as the wire has them) are served too, as they are."""

    # Its handler threads end with it (server_close joins them): one left waiting on a
    # kept-alive connection would close its socket whenever the client's pool lets go of its
    # end, in the middle of a later test that counts this process's sockets.
    daemon_threads = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.connections: set[socket.socket] = set()
        self.script: list[str] = []
        self.items: dict[str, dict[str, Any]] = {}  # entity_id -> item JSON, served as it is
        self.describe = ""
        self.released = threading.Event()  # set when the test ends: held requests go on
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Stop listening, end every connection (a handler waiting for the next request on
        one reads its end) and wait for the handler threads."""
        self.released.set()
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        super().server_close()

    def batch_gets(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for h, b in self.requests if h.get("X-Amz-Target", "").endswith(
                ".BatchGetItem")]


def _requested_keys(body: bytes) -> list[dict[str, Any]] | None:
    """The keys of a well-formed BatchGetItem of TABLE (maps of ``entity_id`` alone), else
    None: the stand-in refuses a malformed request at once, as DynamoDB does."""
    try:
        keys = json.loads(body)["RequestItems"][TABLE]["Keys"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(keys, list) or not all(
            isinstance(k, dict) and set(k) == {"entity_id"} for k in keys):
        return None
    return keys


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedEndpoint

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = dict(self.headers.items())
        with self.server.lock:
            self.server.requests.append((headers, body))
            batch = headers.get("X-Amz-Target", "").endswith(".BatchGetItem")
            fault = self.server.script.pop(0) if batch and self.server.script else ""
        if fault == "held":
            self.server.released.wait()
        if not batch and self.server.describe != "hang-up":
            self._describe(self.server.describe)
            return
        if fault == "hang-up" or not batch:  # no answer at all: the connection is closed
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "throttle":
            self._answer(400, {"__type": ERR + "ProvisionedThroughputExceededException",
                               "message": "slow down"})
        elif fault == "500":
            self._answer(500, b"<html>upstream fell over</html>")
        elif fault == "denied":
            self._answer(400, {"__type": "com.amazon.coral.service#AccessDeniedException",
                               "Message": "User: tester is not authorized"})
        elif fault == "denied-key":  # a refusal that mentions a key, not the key schema
            self._answer(400, {"__type": "com.amazon.coral.service#AccessDeniedException",
                               "Message": "User: tester may not use the table's KMS key"})
        elif fault == "bad-key":
            self._answer(400, {"__type": ERR + "ValidationException",
                               "message": "The provided key element does not match the schema"})
        elif fault == "503":  # a code the reader does not know, on a 5xx: still the server's
            self._answer(503, {"__type": ERR + "SomethingNewException", "message": "later"})
        elif (keys := _requested_keys(body)) is None:  # as DynamoDB refuses a bad request
            self._answer(400, {"__type": ERR + "ValidationException",
                               "message": "1 validation error detected: RequestItems"})
        else:
            left = keys[len(keys) // 2:] if fault == "unprocessed" else []  # the second half
            extra = self.server.items
            found = [k["entity_id"]["S"] for k in keys[:len(keys) - len(left)]
                     if k["entity_id"]["S"] in DRIVERS or k["entity_id"]["S"] in extra]
            items = [copy.deepcopy(extra[e]) if e in extra else _item_json(DRIVERS[e])
                     for e in found]
            if fault == "bad-item" and items:  # the first item's event_ts is not a time
                items[0]["event_ts"] = {"S": "yesterday"}
            if fault == "bad-last-item" and items:  # the same of the last item
                items[-1]["event_ts"] = {"S": "yesterday"}
            if fault == "not-feast" and items:  # the first item's values are not a map
                items[0]["values"] = {"S": "x"}
            if fault == "stranger":  # and the item of driver 299, asked for or not
                items.append(_item_json(299))
            if fault == "twice" and items:  # the first item again, its city changed
                items.append(copy.deepcopy(items[0]))
                items[-1]["values"]["M"]["city"] = _item_json(299)["values"]["M"]["city"]
            if fault == "also-unprocessed" and found:  # the first found key left too
                left = [*left, {"entity_id": {"S": found[0]}}]
            self._answer(200, {"Responses": {TABLE: items},
                               "UnprocessedKeys": {TABLE: {"Keys": left}} if left else {},
                               "ConsumedCapacity": [{"TableName": TABLE, "CapacityUnits":
                                                     1000.0 if fault == "costly"
                                                     else len(found) / 2}]},
                         fault)

    def _describe(self, fault: str) -> None:
        if fault == "missing":
            self._answer(400, {"__type": ERR + "ResourceNotFoundException",
                               "message": "Requested resource not found"})
        elif fault == "no-code":  # an error with an empty code (DynamoDB always sends one)
            self._answer(400, {"__type": "", "message": "no code given"})
        elif fault == "denied":
            self._answer(400, {"__type": "com.amazon.coral.service#AccessDeniedException",
                               "Message": "User: tester may not describe it"})
        else:
            key = "user_id" if fault == "keyed-by-user" else "entity_id"
            self._answer(200, {"Table": {
                "TableName": TABLE, "TableStatus": "ACTIVE",
                "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": key, "AttributeType": "S"}],
                **({"ProvisionedThroughput": {"ReadCapacityUnits": 80, "WriteCapacityUnits": 1}}
                   if fault == "provisioned" else {}),
            }})

    def _answer(self, status: int, payload: Any, fault: str = "") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        crc = zlib.crc32(body)
        if fault == "garbled":  # complete, checksummed, and not JSON
            body = b"<html>a captive portal</html>"
            crc = zlib.crc32(body)
        self.send_response_only(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-crc32", str(crc + 1 if fault == "bad-crc" else crc))
        self.end_headers()
        if fault == "cut":  # promise the whole body, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def scripted() -> Iterator[ScriptedEndpoint]:
    with serving() as server:
        yield server


@contextlib.contextmanager
def serving() -> Iterator[ScriptedEndpoint]:
    """A ScriptedEndpoint answering on a thread until the block ends."""
    server = ScriptedEndpoint()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def expected_row(driver: int) -> tuple[Any, ...] | None:
    if driver >= 300:
        return None
    stored = SYNTHETIC.expected_features(driver)
    return (parse_event_ts(SYNTHETIC.event_ts(driver)), *(decode_value(stored[f])
                                                           for f in FEATURES))


def scripted_reader(server: ScriptedEndpoint, transport: str, client: Any = None,
                    **overrides: Any) -> BatchReader:
    values: dict[str, Any] = {"region": REGION, "endpoint_url": server.url,
                              "transport": transport, "max_read_workers": 1,
                              "retry_base_delay_s": 0.001, "retry_max_delay_s": 0.01}
    values.update(overrides)
    return BatchReader(TABLE, LAYOUT, DynamoSettings(**values), client=client, seed=1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_damaged_responses_and_error_answers_are_retried_alike(
    scripted: ScriptedEndpoint, transport: str
) -> None:
    scripted.script = ["garbled", "cut", "throttle", "500"]
    ids = list(range(250, 450))  # 200 keys: 50 found, 150 absent, two requests
    result = scripted_reader(scripted, transport).read(LAYOUT.keys_for({"driver_id": ids}),
                                                       list(FEATURES))
    assert result.rows == [expected_row(d) for d in ids]
    stats = result.stats
    assert (stats.connection_errors, stats.throttles, stats.server_errors) == (2, 1, 1)
    assert stats.retries == 4 and stats.requests == 6
    assert (stats.found, stats.missing, stats.consumed_rcu) == (50, 150, 25.0)


def test_a_body_failing_its_crc32_is_resent(scripted: ScriptedEndpoint) -> None:
    # botocore, with its own retries left to featurepull (one attempt), accepts such a body
    # as a success once the checksum retry is refused; the fast transport resends it.
    scripted.script = ["bad-crc", "bad-crc"]
    result = scripted_reader(scripted, "fast").read(LAYOUT.keys_for({"driver_id": [7, 8]}),
                                                    ["city"])
    assert result.stats.connection_errors == 2 and result.stats.requests == 3
    assert [row[1] if row else None for row in result.rows] == [
        decode_value(SYNTHETIC.expected_features(d)["city"]) for d in (7, 8)]


def test_refusals_read_the_same_through_both_transports(scripted: ScriptedEndpoint) -> None:
    messages = []
    for transport in TRANSPORTS:
        scripted.script = ["denied"]
        with pytest.raises(PermanentReadError) as refused:
            scripted_reader(scripted, transport).read(LAYOUT.keys_for({"driver_id": [1]}),
                                                      ["city"])
        messages.append(str(refused.value))
    assert messages[0] == messages[1]
    assert "AccessDeniedException: User: tester is not authorized" in messages[1]
    assert TABLE in messages[1]


# ---------------------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------------------


def _authorization(headers: dict[str, str]) -> dict[str, str]:
    scheme, _, rest = headers["Authorization"].partition(" ")
    assert scheme == "AWS4-HMAC-SHA256"
    return dict(part.strip().split("=", 1) for part in rest.split(","))


def _assert_signed(server: ScriptedEndpoint, headers: dict[str, str], body: bytes,
                   credentials: botocore.credentials.Credentials, region: str) -> None:
    """The recorded request carries the signature botocore computes for it (same headers
    as received, same body)."""
    auth = _authorization(headers)
    signed = auth["SignedHeaders"].split(";")
    received = {k.lower(): v for k, v in headers.items()}
    request = AWSRequest(method="POST", url=f"{server.url}/", data=body,
                         headers={name: received[name] for name in signed})
    request.context["timestamp"] = received["x-amz-date"]
    signer = SigV4Auth(credentials, "dynamodb", region)
    canonical = signer.canonical_request(request)
    assert auth["Signature"] == signer.signature(signer.string_to_sign(request, canonical),
                                                 request)


def test_requests_are_sigv4_signed_for_the_region_with_the_session_token(
    scripted: ScriptedEndpoint,
) -> None:
    client = boto3.client("dynamodb", region_name="eu-west-2", endpoint_url=scripted.url,
                          aws_access_key_id="AKIDFAST", aws_secret_access_key="s3cr3t",
                          aws_session_token="the-session-token")
    scripted_reader(scripted, "fast", client).read(LAYOUT.keys_for({"driver_id": [1, 2]}),
                                                   ["city"])
    [(headers, body)] = scripted.batch_gets()
    auth = _authorization(headers)
    day = datetime.now(UTC).strftime("%Y%m%d")
    assert auth["Credential"] in {f"AKIDFAST/{d}/eu-west-2/dynamodb/aws4_request"
                                  for d in (day, (datetime.now(UTC) - timedelta(days=1))
                                            .strftime("%Y%m%d"))}
    assert {"host", "x-amz-date", "x-amz-target", "x-amz-security-token",
            "content-type"} <= set(auth["SignedHeaders"].split(";"))
    assert headers["X-Amz-Security-Token"] == "the-session-token"
    assert headers["X-Amz-Target"] == "DynamoDB_20120810.BatchGetItem"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    _assert_signed(scripted, headers, body, botocore.credentials.Credentials(
        "AKIDFAST", "s3cr3t", "the-session-token"), "eu-west-2")


def test_no_security_token_header_without_a_session_token(scripted: ScriptedEndpoint) -> None:
    client = boto3.client("dynamodb", region_name="ap-south-1", endpoint_url=scripted.url,
                          aws_access_key_id="AKIDPLAIN", aws_secret_access_key="s3cr3t")
    scripted_reader(scripted, "fast", client).read(LAYOUT.keys_for({"driver_id": [1]}),
                                                   ["city"])
    [(headers, body)] = scripted.batch_gets()
    assert "X-Amz-Security-Token" not in headers
    assert "/ap-south-1/dynamodb/aws4_request" in _authorization(headers)["Credential"]
    _assert_signed(scripted, headers, body,
                   botocore.credentials.Credentials("AKIDPLAIN", "s3cr3t"), "ap-south-1")


def test_refreshed_credentials_are_used_as_boto3_refreshes_them(
    scripted: ScriptedEndpoint,
) -> None:
    issued: list[str] = []

    def refresh() -> dict[str, str]:
        issued.append(f"AKIDROTATED{len(issued)}")
        # Always about to expire: botocore refreshes them on every use.
        expiry = datetime.now(UTC) + timedelta(seconds=30)
        return {"access_key": issued[-1], "secret_key": "rotated", "token": f"tok{len(issued)}",
                "expiry_time": expiry.isoformat()}

    credentials = botocore.credentials.RefreshableCredentials.create_from_metadata(
        metadata=refresh(), refresh_using=refresh, method="test-rotation")
    session = botocore.session.get_session()
    session._credentials = credentials
    client = boto3.session.Session(botocore_session=session).client(
        "dynamodb", region_name=REGION, endpoint_url=scripted.url)
    reader = scripted_reader(scripted, "fast", client, batch_size=1)
    reader.read(LAYOUT.keys_for({"driver_id": [1, 2, 3]}), ["city"])
    used = [_authorization(h)["Credential"].split("/")[0] for h, _ in scripted.batch_gets()]
    tokens = [h["X-Amz-Security-Token"] for h, _ in scripted.batch_gets()]
    assert len(used) == 3 and len(set(used)) == 3 and set(used) <= set(issued)
    assert [int(t.removeprefix("tok")) for t in tokens] == [
        int(u.removeprefix("AKIDROTATED")) + 1 for u in used]


# ---------------------------------------------------------------------------------------
# Endpoint, pool, fallback
# ---------------------------------------------------------------------------------------


def test_aws_endpoint_is_https_with_certificate_verification() -> None:
    client = boto3.client("dynamodb", region_name="eu-central-1",
                          aws_access_key_id="a", aws_secret_access_key="b")
    transport = FastTransport(client, DynamoSettings(connect_timeout=1.5, read_timeout=12.5))
    assert transport.url == "https://dynamodb.eu-central-1.amazonaws.com/"
    assert transport.headers["Host"] == "dynamodb.eu-central-1.amazonaws.com"
    pool = transport.pool
    assert (pool.scheme, pool.host, pool.port) == ("https", "dynamodb.eu-central-1.amazonaws.com",
                                                   443)
    assert pool.ssl is not None and pool.ssl.verify_mode == ssl.CERT_REQUIRED
    assert pool.ssl.check_hostname
    assert (pool.connect_timeout, pool.read_timeout) == (1.5, 12.5)
    unverified = boto3.client("dynamodb", region_name="eu-central-1", verify=False,
                              aws_access_key_id="a", aws_secret_access_key="b")
    context = FastTransport(unverified, DynamoSettings()).pool.ssl
    assert context is not None and context.verify_mode == ssl.CERT_NONE


def test_one_tls_context_per_process_and_verify_setting() -> None:
    assert tls_context(True) is tls_context(True)
    assert tls_context(False) is not tls_context(True)


def test_transport_setting_and_proxy_fallback(endpoint_url: str) -> None:
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint_url)
    assert isinstance(transport_for(client, DynamoSettings()), FastTransport)
    assert isinstance(transport_for(client, DynamoSettings(transport="botocore")),
                      BotocoreTransport)
    proxied = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint_url,
                           config=botocore.config.Config(
                               proxies={"http": "http://proxy.invalid:3128"}))
    assert isinstance(transport_for(proxied, DynamoSettings()), BotocoreTransport)


def test_transport_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__TRANSPORT", "botocore")
    assert Settings().dynamodb.transport == "botocore"
    monkeypatch.delenv("FEATUREPULL_DYNAMODB__TRANSPORT")
    assert Settings().dynamodb.transport == "fast"
    with pytest.raises(ValueError, match="transport"):
        DynamoSettings(transport="curl")
