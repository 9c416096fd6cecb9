"""The bench endpoint's cheap paths answer as its plain ones do: request bodies read by
orjson give what ``json.loads`` gives, BatchGetItem finds items through its id set in the
order asked, and answers waiting out the latency go out in order, also on a connection
that sends several requests at once or hangs up while one waits."""

from __future__ import annotations

import base64
import json
import random
import socket
from typing import Any

import pytest

from featurepull.bench.capacity import Capacity
from featurepull.bench.endpoint import (
    DEFAULT_TABLE,
    FEATURES,
    DynamoTable,
    SyntheticTable,
    _json_request,
    start_endpoint,
)
from featurepull.bench.wire_keys import split_keys

DRIVERS = 500
SEED = 3
TARGET = "DynamoDB_20120810.BatchGetItem"


def _number(rng: random.Random) -> str:
    """A JSON number text, edge values included (big ints, long mantissas, exponents)."""
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.choice([0, -0, 1, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64,
                               -(2**63) - 1, 10**30, -(10**19)]))
    if kind == 1:
        return "-0" if rng.random() < 0.5 else "-0.0"
    if kind == 2:
        return str(rng.randrange(-10**rng.randrange(1, 25), 10**rng.randrange(1, 25)))
    if kind == 3:
        return repr(rng.uniform(-1e6, 1e6))
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 25)))
    return f"{rng.choice(['', '-'])}{digits[0]}.{digits[1:] or '0'}e{rng.randrange(-330, 330)}"


def _text(rng: random.Random) -> str:
    pieces = ["a", "é", "\\u00e9", "\\ud83d\\ude00", "\\ud800", "\\\"", "\\n", " ", "7",
              "0123456789012345678901", "entity_id", "\\u0000"]
    return '"' + "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 6))) + '"'


def _value(rng: random.Random, depth: int = 0) -> str:
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return _number(rng)
    if kind == 1:
        return _text(rng)
    if kind == 2:
        return rng.choice(["true", "false", "null", "NaN", "Infinity", "-Infinity"])
    if kind in (3, 4):
        return rng.choice(["1", '"S"', "[]", "{}"])
    if kind in (5, 6):
        items = [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
        return "[" + rng.choice([",", ", ", " ,\n"]).join(items) + "]"
    names = [_text(rng) for _ in range(rng.randrange(0, 4))]
    names += names[:rng.randrange(0, 2)]  # a name twice: the last value counts
    members = [f"{name}:{_value(rng, depth + 1)}" for name in names]
    return "{" + ",".join(members) + "}"


def _outcome(read: Any, body: bytes) -> tuple[str, Any]:
    """What reading ``body`` gives: the objects, spelled with their types, or the error."""
    try:
        return "ok", _typed(read(body))
    except ValueError as exc:
        return "error", (type(exc), str(exc))


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", [(key, _typed(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(item) for item in value])
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, repr(value))


def test_request_bodies_read_as_json_loads_reads_them() -> None:
    rng = random.Random(19)
    cheap = 0
    for _ in range(3_000):
        text = _value(rng)
        body = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:  # encodings and damage json.loads handles its own way
            body = rng.choice([b"\xef\xbb\xbf" + body, text.encode("utf-16"), body[:-1],
                               body + b" x", b" \n" + body + b"\t", body.replace(b"a", b"\xff")])
        assert _outcome(_json_request, body) == _outcome(json.loads, body), body
        cheap += "9" * 19 not in body.decode("latin-1")
    assert cheap > 1_000  # most bodies did take the orjson path


def _plain_answer(synthetic: SyntheticTable, drivers: dict[str, int], ids: list[str],
                  features: list[str] | None) -> list[dict[str, Any]]:
    """The items a BatchGetItem of ``ids`` returns, in the order asked, from the generator."""
    items = []
    for entity_id in ids:
        if entity_id not in drivers:
            continue
        item = synthetic.item(drivers[entity_id])
        item["values"]["M"] = {name: {"B": base64.b64encode(value["B"]).decode()}
                               for name, value in item["values"]["M"].items()
                               if features is None or name in features}
        if features is not None:
            item["values"]["M"] = {name: item["values"]["M"][name] for name in FEATURES
                                   if name in features}
            if not item["values"]["M"]:
                del item["values"]
        items.append(item)
    return items


def test_batch_get_finds_items_in_the_order_asked() -> None:
    rng = random.Random(7)
    synthetic = SyntheticTable(DRIVERS, SEED)
    table = DynamoTable(DEFAULT_TABLE, synthetic.wire_records(), seed=SEED)
    drivers = {synthetic.entity_id(d): d for d in range(DRIVERS)}
    for _ in range(300):
        asked = rng.sample(range(2 * DRIVERS), rng.randrange(1, 101))  # half are absent
        ids = [synthetic.entity_id(d) if d < DRIVERS else f"{d:032x}" for d in asked]
        spec: dict[str, Any] = {"Keys": [{"entity_id": {"S": i}} for i in ids]}
        features = None
        if rng.random() < 0.5:
            features = rng.sample([*FEATURES, "absent"], rng.randrange(1, 4))
            names = {"#v": "values", **{f"#f{n}": f for n, f in enumerate(features)}}
            spec["ProjectionExpression"] = ", ".join(
                ["entity_id", "event_ts", *(f"#v.#f{n}" for n in range(len(features)))])
            spec["ExpressionAttributeNames"] = names
        duplicate = rng.random() < 0.1
        if duplicate:
            spec["Keys"].append(rng.choice(spec["Keys"]))
        status, body = table.handle(TARGET, json.dumps({"RequestItems": {DEFAULT_TABLE: spec}})
                                    .encode())
        answer = json.loads(body)
        if duplicate:
            assert (status, answer["message"]) == (400, "Provided list of item keys contains "
                                                         "duplicates")
            continue
        assert status == 200
        assert answer == {"Responses": {DEFAULT_TABLE: _plain_answer(synthetic, drivers, ids,
                                                                     features)},
                          "UnprocessedKeys": {}}


def _http_post(body: bytes, close: bool = False) -> bytes:
    head = (f"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: {TARGET}\r\n"
            f"{'Connection: close' + chr(13) + chr(10) if close else ''}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _read_answer(sock: socket.socket, buffer: bytearray) -> bytes:
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    buffer[:] = rest[length:]
    return rest[:length]


@pytest.mark.parametrize("latency_ms", [0, 20])
def test_pipelined_requests_are_answered_in_order(latency_ms: int) -> None:
    synthetic = SyntheticTable(DRIVERS, SEED)
    bodies = [json.dumps({"RequestItems": {DEFAULT_TABLE: {"Keys": [
        {"entity_id": {"S": synthetic.entity_id(d)}}]}}}).encode() for d in range(6)]
    with start_endpoint(drivers=DRIVERS, seed=SEED, latency_ms=latency_ms) as endpoint:
        host, port = endpoint.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as left, \
                socket.create_connection((host, int(port))) as gone, \
                socket.create_connection((host, int(port))) as right:
            gone.sendall(_http_post(bodies[0]))  # then hangs up while its answer waits
            gone.close()
            left.sendall(b"".join(_http_post(b) for b in bodies[:3]))
            right.sendall(b"".join(_http_post(b) for b in bodies[3:]))
            buffers = bytearray(), bytearray()
            answers = [_read_answer(left, buffers[0]) for _ in range(3)]
            answers += [_read_answer(right, buffers[1]) for _ in range(3)]
        for driver, answer in enumerate(answers):
            items = json.loads(answer)["Responses"][DEFAULT_TABLE]
            assert [item["entity_id"]["S"] for item in items] == [synthetic.entity_id(driver)]
        stats = endpoint.stats()
        assert (stats["batch_get_item"], stats["in_flight"]) == (7, 0)


def _member(name: str, value: Any) -> str:
    return f"{json.dumps(name)}:{json.dumps(value, separators=(',', ':'))}"


def _batch_body(rng: random.Random, synthetic: SyntheticTable) -> bytes:
    """A BatchGetItem body as the reader writes one (compact, keys last or first), or one
    of many odd ones: odd ids or key shapes, duplicates, too many keys, other tables,
    projections DynamoDB refuses, a second ``Keys`` member, escapes, spaces."""
    drivers = rng.sample(range(2 * DRIVERS), rng.choice([1, 5, 100, 100, 101]))
    ids = [synthetic.entity_id(d) if d < DRIVERS else f"{d:032x}" for d in drivers]
    if rng.random() < 0.15:
        ids[rng.randrange(len(ids))] = rng.choice(
            ["", "id-1", 'a"b', "é", "\x00", "a\\b", "0}},{", "ABC123", "x" * 40])
    keys: list[Any] = [{"entity_id": {"S": i}} for i in ids]
    if rng.random() < 0.05:
        keys[0] = rng.choice([{"entity_id": {"S": 5}}, {"entity_id": {"N": "1"}},
                              {"entity_id": {"S": "a"}, "x": {"S": "b"}}, "k"])
    if rng.random() < 0.05:
        keys.append(rng.choice(keys))
    members = [_member("Keys", keys)]
    if rng.random() < 0.6:
        names = {"#k": "entity_id", "#t": "event_ts", "#v": "values", "#f0": "city"}
        if rng.random() < 0.1:
            names["#unused"] = "x"
        expression = rng.choice(["#k, #t, #v.#f0", "#k,#v.#f0", "values.city"])
        members += [_member("ProjectionExpression", expression),
                    _member("ExpressionAttributeNames", names)]
    if rng.random() < 0.5:
        members.append(_member("ConsistentRead", rng.choice([True, False, 1])))
    if rng.random() < 0.05:
        members.append(_member("Keys", keys[:1]))  # the last one counts
    rng.shuffle(members)
    table = DEFAULT_TABLE if rng.random() < 0.95 else "other.table"
    tables = [f"{json.dumps(table)}:{{{','.join(members)}}}"]
    if rng.random() < 0.03:
        tables.append(_member("other.table", {"Keys": []}))
    outer = [f'"RequestItems":{{{",".join(tables)}}}']
    if rng.random() < 0.7:
        outer.append(_member("ReturnConsumedCapacity", rng.choice(["TOTAL", "NONE", "INDEXES"])))
    rng.shuffle(outer)
    text = "{" + ",".join(outer) + "}"
    if rng.random() < 0.3:  # as botocore writes it
        text = json.dumps(json.loads(text))
    if rng.random() < 0.05:
        text = text.replace('"TOTAL"', '"TOT\\u0041L"')
    return text.encode()


def test_batch_get_bodies_read_in_pieces_answer_as_read_whole() -> None:
    """Two tables with the same faults (throttling, UnprocessedKeys, a provisioned capacity
    on a stopped clock) and the same callers: one is sent each body as written (the reader's
    and botocore's plain keys are read in pieces), the other the same request indented by
    json.dumps (always read whole). Every answer and every counter is the same."""
    rng = random.Random(11)
    synthetic = SyntheticTable(DRIVERS, SEED)
    records = synthetic.wire_records()

    def table() -> DynamoTable:
        capacity = Capacity(rcu=3_000.0, clock=lambda: 0.0, wall=lambda: 0.0)
        return DynamoTable(DEFAULT_TABLE, records, unprocessed_rate=0.1, throttle_rate=0.05,
                           seed=SEED, capacity=capacity)

    compact, spaced = table(), table()
    in_pieces = 0
    for _ in range(600):
        body = _batch_body(rng, synthetic)
        in_pieces += split_keys(body) is not None
        caller = rng.choice(["AKIDONE", "AKIDTWO"])
        respaced = json.dumps(json.loads(body), indent=1).encode()
        assert split_keys(respaced) is None
        assert compact.handle(TARGET, body, caller) == spaced.handle(TARGET, respaced, caller)
    assert compact.stats() == spaced.stats()
    assert compact.capacity.stats() == spaced.capacity.stats()
    stats = compact.stats()
    assert stats["throttled"] > 0 and stats["unprocessed_keys"] > 0 and stats["errors"] > 0
    assert in_pieces > 300


def test_split_keys_gives_back_the_body() -> None:
    rng = random.Random(12)
    synthetic = SyntheticTable(DRIVERS, SEED)
    for _ in range(600):
        body = _batch_body(rng, synthetic)
        split = split_keys(body)
        if split is not None:
            before, after, ids = split
            keys = [{"entity_id": {"S": i}} for i in ids]
            array = body[len(before):len(body) - len(after)]
            assert before + array + after == body
            assert array.decode() in (json.dumps(keys), json.dumps(keys, separators=(",", ":")))
            joined = "".join(ids)  # an id may be empty, as JSON allows
            assert joined.isascii() and joined.isalnum()


@pytest.mark.parametrize("body", [
    b'{"RequestItems":{"demo.driver_stats":{"Keys":[{"entity_id":{"S":"ab"}}]}',
    b'{"RequestItems":{"demo.driver_stats":{"Keys":[{"entity_id":{"S":"ab"}}],}}}',
    b'{"RequestItems":{"demo.driver_stats":{"Keys":[{"entity_id":{"S":"ab"}}]}}}}',
    b'["Keys":[{"entity_id":{"S":"ab"}}]]',
])
def test_a_broken_body_with_plain_keys_is_refused_as_before(body: bytes) -> None:
    table = DynamoTable(DEFAULT_TABLE, SyntheticTable(10, SEED).wire_records())
    status, answer = table.handle(TARGET, body)
    assert (status, json.loads(answer)["__type"]) == (
        400, "com.amazonaws.dynamodb.v20120810#SerializationException")


def test_keys_text_inside_a_member_name_is_not_taken_for_the_keys() -> None:
    # The plain array is the value of a member named 'a"Keys'; "Keys" itself is the very
    # string that stands for the array while the rest is read: refused, as read whole.
    body = (b'{"RequestItems":{"demo.driver_stats":{"a\\"Keys":[{"entity_id":{"S":"ab"}}],'
            b'"Keys":"\\u0000"}}}')
    assert split_keys(body) is not None
    table = DynamoTable(DEFAULT_TABLE, SyntheticTable(10, SEED).wire_records())
    status, answer = table.handle(TARGET, body)
    assert (status, json.loads(answer)["message"]) == (
        400, "1 validation error detected: Value at 'requestItems.demo.driver_stats.member."
             "keys' failed to satisfy constraint: Member must have length greater than or "
             "equal to 1")
