"""Known-answer vectors pinning the independent Feast writer (tests/feast_writer.py).

The expected bytes here are written out by hand from the protobuf wire-format spec and
Feast's key_encoding_utils, not computed by the code under test.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import mmh3
import pytest

from tests.conftest import unique_name
from tests.feast_writer import (
    KINDS,
    create_feast_table,
    encode_value,
    entity_id,
    expected_event_ts,
    expected_python,
    serialize_entity_key,
    write_feast_rows,
)

# --- Value encoding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        # tag = field << 3 | wire type; fields >= 16 need a two-byte tag varint
        ("int64_val", 1, b"\x20\x01"),
        ("int64_val", 0, b"\x20\x00"),  # a set oneof member is written even at default
        ("int64_val", 300, b"\x20\xac\x02"),
        ("int64_val", -1, b"\x20" + b"\xff" * 9 + b"\x01"),  # two's complement, not zigzag
        ("int64_val", 2**63 - 1, b"\x20" + b"\xff" * 8 + b"\x7f"),
        ("int32_val", -2, b"\x18" + b"\xfe" + b"\xff" * 8 + b"\x01"),  # sign-extended to 64
        ("unix_timestamp_val", 1714564800, b"\x40\xc0\xdd\xc8\xb1\x06"),
        ("string_val", "ab", b"\x12\x02ab"),
        ("string_val", "", b"\x12\x00"),
        ("string_val", "é", b"\x12\x02\xc3\xa9"),  # length counts UTF-8 bytes
        ("bytes_val", b"\x00\xff", b"\x0a\x02\x00\xff"),
        ("double_val", 1.5, b"\x29" + struct.pack("<d", 1.5)),
        ("float_val", 1.5, b"\x35" + struct.pack("<f", 1.5)),
        ("bool_val", True, b"\x38\x01"),
        ("bool_val", False, b"\x38\x00"),
        ("null_val", None, b"\x98\x01\x00"),
        ("uuid_val", "u", b"\xa2\x02\x01u"),  # field 36: tag 290
        ("time_uuid_val", "t", b"\xaa\x02\x01t"),
        ("json_val", "{}", b"\x82\x02\x02{}"),  # field 32: tag 258
        ("decimal_val", "1.5", b"\xe2\x02\x031.5"),  # field 44: tag 354
        ("struct_val", {}, b"\x92\x02\x00"),  # field 34, an empty Map
        # field 48: ZonedTimestamp {1: varint seconds, 2: zone}; proto3 leaves out 0 and ""
        ("zoned_timestamp_val", (1, "UTC"), b"\x82\x03\x07\x08\x01\x12\x03UTC"),
        ("zoned_timestamp_val", (0, ""), b"\x82\x03\x00"),
        # field 42: RepeatedValue {1: Value}
        ("list_val", [("int64_val", 1)], b"\xd2\x02\x04\x0a\x02\x20\x01"),
        # field 47: ScalarMap {1: entry {1: MapKey {2: int64_key}, 2: Value}}
        ("scalar_map_val", [(("int64_key", 2), ("bool_val", True))],
         b"\xfa\x02\x0a\x0a\x08\x0a\x02\x10\x02\x12\x02\x38\x01"),
        # packed int64 list: Value.14 LEN -> Int64List.1 LEN (packed) -> varints
        ("int64_list_val", [1, 300, -1], b"\x72\x0f\x0a\x0d\x01\xac\x02" + b"\xff" * 9 + b"\x01"),
        ("int64_list_val", [], b"\x72\x00"),  # empty packed field is omitted
        ("int32_set_val", [5], b"\xc2\x01\x03\x0a\x01\x05"),
        (
            "float_list_val",
            [1.0, 2.0],
            b"\x82\x01\x0a\x0a\x08" + struct.pack("<f", 1.0) + struct.pack("<f", 2.0),
        ),
        ("double_set_val", [0.5], b"\xd2\x01\x0a\x0a\x08" + struct.pack("<d", 0.5)),
        ("bool_list_val", [True, False], b"\x8a\x01\x04\x0a\x02\x01\x00"),
        ("unix_timestamp_list_val", [0], b"\x92\x01\x03\x0a\x01\x00"),
        # strings/bytes are never packed: one tagged record each
        ("string_list_val", ["a", "bc"], b"\x62\x07\x0a\x01a\x0a\x02bc"),
        ("bytes_set_val", [b"", b"\x01"], b"\xb2\x01\x05\x0a\x00\x0a\x01\x01"),
        ("uuid_list_val", ["x"], b"\xb2\x02\x03\x0a\x01x"),  # field 38
        ("time_uuid_list_val", [], b"\xba\x02\x00"),  # field 39
    ],
)
def test_encode_value_known_answers(kind: str, value: Any, expected: bytes) -> None:
    assert encode_value(kind, value) == expected


def test_encode_map_val() -> None:
    # Map.val is repeated entry {key = 1: string, value = 2: Value}
    entry = b"\x0a\x01a" + b"\x12\x02" + b"\x20\x07"  # key "a", value int64_val 7
    assert encode_value("map_val", {"a": ("int64_val", 7)}) == (
        b"\xa2\x01" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    )
    assert encode_value("map_val", {}) == b"\xa2\x01\x00"


def test_encode_nested_map_and_map_list() -> None:
    inner = encode_value("map_val", {"n": ("null_val", None)})
    assert inner == b"\xa2\x01\x0a\x0a\x08\x0a\x01n\x12\x03\x98\x01\x00"
    outer = encode_value("map_val", {"m": ("map_val", {"n": ("null_val", None)})})
    entry = b"\x0a\x01m\x12" + bytes([len(inner)]) + inner
    assert outer == b"\xa2\x01" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry

    one = b"\x0a\x07\x0a\x01a\x12\x02\x38\x01"  # Map body with {"a": bool_val True}
    assert encode_value("map_list_val", [{"a": ("bool_val", True)}, {}]) == (
        b"\xaa\x01" + bytes([2 + len(one) + 2]) + b"\x0a" + bytes([len(one)]) + one + b"\x0a\x00"
    )


def test_encode_value_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_value("int64_val", 2**63)
    with pytest.raises(ValueError):
        encode_value("int32_val", 2**31)
    with pytest.raises(TypeError):
        encode_value("int64_val", True)
    with pytest.raises(TypeError):
        encode_value("string_list_val", "abc")
    with pytest.raises(ValueError):
        encode_value("nope_val", 1)


def test_every_kind_encodes() -> None:
    assert len(KINDS) == 44  # every field of Feast 0.67's Value.val oneof
    for kind in KINDS:
        assert encode_value(kind, _sample(kind))


def _sample(kind: str) -> Any:
    if kind in ("map_val", "struct_val"):
        return {"k": ("int64_val", 1)}
    if kind in ("map_list_val", "struct_list_val"):
        return [{"k": ("int64_val", 1)}]
    if kind in ("list_val", "set_val"):
        return [("int64_list_val", [1])]
    if kind == "scalar_map_val":
        return [(("int32_key", 1), ("int64_val", 1))]
    if kind == "zoned_timestamp_val":
        return (1, "UTC")
    if kind == "null_val":
        return None
    elem = kind.removesuffix("_val").removesuffix("_list").removesuffix("_set")
    scalar: Any = {
        "bytes": b"x",
        "string": "x",
        "uuid": "x",
        "time_uuid": "x",
        "json": "{}",
        "decimal": "1.5",
        "int32": 1,
        "int64": 1,
        "unix_timestamp": 1,
        "double": 1.0,
        "float": 1.0,
        "bool": True,
    }[elem]
    return [scalar] if kind.endswith(("_list_val", "_set_val")) else scalar


# --- Entity keys ---------------------------------------------------------------------


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


def test_entity_key_v3_single() -> None:
    expected = (
        _u32(1) + _u32(2) + _u32(9) + b"driver_id" + _u32(4) + _u32(8) + struct.pack("<q", 1001)
    )
    key = {"driver_id": ("int64", 1001)}
    assert serialize_entity_key(key) == expected
    assert serialize_entity_key(key, version=3) == expected
    assert entity_id(key) == mmh3.hash_bytes(expected).hex()
    assert len(entity_id(key)) == 32


def test_entity_key_v2_single() -> None:
    expected = _u32(2) + b"driver_id" + _u32(4) + _u32(8) + struct.pack("<q", 1001)
    assert serialize_entity_key({"driver_id": ("int64", 1001)}, version=2) == expected


def test_entity_key_compound_sorted_by_name() -> None:
    # Given out of order; Feast sorts by join key name, keys first then values.
    key = {
        "zone": ("string", "eu"),
        "account": ("int32", -7),
        "blob": ("bytes", b"\x00\x01"),
        "day": ("unix_timestamp", 1714564800),
    }
    names = _u32(2) + _u32(7) + b"account" + _u32(2) + _u32(4) + b"blob"
    names += _u32(2) + _u32(3) + b"day" + _u32(2) + _u32(4) + b"zone"
    values = _u32(3) + _u32(4) + struct.pack("<i", -7)
    values += _u32(1) + _u32(2) + b"\x00\x01"
    values += _u32(8) + _u32(8) + struct.pack("<q", 1714564800)
    values += _u32(2) + _u32(2) + b"eu"
    assert serialize_entity_key(key) == _u32(4) + names + values

    v2_names = _u32(2) + b"account" + _u32(2) + b"blob" + _u32(2) + b"day" + _u32(2) + b"zone"
    assert serialize_entity_key(key, version=2) == v2_names + values
    assert entity_id(key) != entity_id(key, version=2)


def test_entity_key_non_ascii_name_length_in_either_convention() -> None:
    # Older Feast: len(k) of the str (2 characters) though "né" is 3 UTF-8 bytes; current
    # Feast (the default): the 3 bytes.
    tail = b"n\xc3\xa9" + _u32(2) + _u32(1) + b"x"
    chars = serialize_entity_key({"né": ("string", "x")}, name_length="chars")
    assert chars == _u32(1) + _u32(2) + _u32(2) + tail
    assert serialize_entity_key({"né": ("string", "x")}) == _u32(1) + _u32(2) + _u32(3) + tail
    with pytest.raises(ValueError, match="name_length"):
        serialize_entity_key({"né": ("string", "x")}, name_length="utf8")


@pytest.mark.parametrize("version", [2, 3])
def test_entity_key_bytes_is_what_current_feast_writes(version: int) -> None:
    """The default convention against Feast's own serialization (the one place this module's
    output is checked against Feast's code rather than the wire spec)."""
    from feast.infra.key_encoding_utils import serialize_entity_key as feast_serialize
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = {"運転手": ("int32", -3), "città": ("string", "Zürich"), "driver_id": ("int64", 5)}
    proto = EntityKey(join_keys=["città", "driver_id", "運転手"], entity_values=[
        Value(string_val="Zürich"), Value(int64_val=5), Value(int32_val=-3)])
    feast = feast_serialize(proto, entity_key_serialization_version=version)
    assert serialize_entity_key(key, version) == feast
    assert entity_id(key, version) == mmh3.hash_bytes(feast).hex()


def test_entity_key_value_length_uses_utf8_bytes() -> None:
    expected = _u32(1) + _u32(2) + _u32(1) + b"k" + _u32(2) + _u32(2) + b"\xc3\xa9"
    assert serialize_entity_key({"k": ("string", "é")}) == expected


# --- Expected Python values ----------------------------------------------------------


def test_expected_python_contract() -> None:
    assert expected_python("float_val", 0.1) == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert expected_python("float_val", 0.1) != 0.1
    assert expected_python("double_val", 0.1) == 0.1
    assert expected_python("unix_timestamp_val", 0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert expected_python("int64_set_val", [3, 1, 2]) == [3, 1, 2]  # stored order kept
    assert expected_python("null_val", None) is None
    assert expected_python("map_list_val", [{"a": ("unix_timestamp_list_val", [60])}]) == [
        {"a": [datetime(1970, 1, 1, 0, 1, tzinfo=UTC)]}
    ]


def test_expected_event_ts() -> None:
    dt = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert str(dt) == "2024-05-01 12:00:00.123456+00:00"
    assert expected_event_ts(dt) == dt
    plus2 = datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert expected_event_ts(plus2).utcoffset() == timedelta(hours=2)


# --- DynamoDB round trip of the raw items --------------------------------------------


def test_write_feast_rows_layout(ddb: Any) -> None:
    table = f"{unique_name('proj')}.driver_stats"
    create_feast_table(ddb, table)
    desc = ddb.describe_table(TableName=table)["Table"]
    assert desc["KeySchema"] == [{"AttributeName": "entity_id", "KeyType": "HASH"}]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    ts = datetime(2024, 5, 1, 12, tzinfo=UTC)
    rows = [({"driver_id": ("int64", i)}, ts, {"rate": ("double_val", i / 2)}) for i in range(60)]
    # a later row for the same entity replaces the earlier one, as in Feast
    rows.append(({"driver_id": ("int64", 3)}, ts, {"rate": ("null_val", None)}))
    write_feast_rows(ddb, table, rows)

    items = ddb.scan(TableName=table)["Items"]
    assert len(items) == 60
    by_id = {it["entity_id"]["S"]: it for it in items}
    item = by_id[entity_id({"driver_id": ("int64", 7)})]
    assert item["event_ts"] == {"S": "2024-05-01 12:00:00+00:00"}
    assert item["values"]["M"]["rate"]["B"] == encode_value("double_val", 3.5)
    replaced = by_id[entity_id({"driver_id": ("int64", 3)})]
    assert replaced["values"]["M"]["rate"]["B"] == b"\x98\x01\x00"


class _FlakyClient:
    """Fake client: hands back the last item of every first attempt as unprocessed."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.stored: dict[str, Any] = {}

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        self.calls.append(len(requests))
        keep, unprocessed = (requests[:-1], requests[-1:]) if len(requests) > 1 else (requests, [])
        for req in keep:
            item = req["PutRequest"]["Item"]
            self.stored[item["entity_id"]["S"]] = item
        return {"UnprocessedItems": {table: unprocessed} if unprocessed else {}}


def test_write_feast_rows_chunks_and_resends_unprocessed() -> None:
    client = _FlakyClient()
    ts = datetime(2024, 5, 1, tzinfo=UTC)
    rows = [({"id": ("string", str(i))}, ts, {"f": ("int64_val", i)}) for i in range(30)]
    write_feast_rows(client, "p.fv", rows)
    assert client.calls == [25, 1, 5, 1]
    assert len(client.stored) == 30
