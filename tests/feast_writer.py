"""An independent writer that lays out a DynamoDB table exactly the way Feast's DynamoDB
online store does, so featurepull's reader can be checked against it.

This module deliberately imports nothing from ``featurepull`` and does not use the
``protobuf`` library: ``feast.types.Value`` is encoded by hand from the wire-format spec.
If the reader and this writer shared code, a round trip would prove nothing.

Layout reproduced (Feast ``online_stores/dynamodb.py`` and ``key_encoding_utils.py``):

* table ``{project}.{feature_view}``, hash key ``entity_id`` (S), on-demand billing;
* item ``{"entity_id": S, "event_ts": S, "values": M {feature: B <serialized Value>}}``;
* ``entity_id = mmh3.hash_bytes(serialize_entity_key(key)).hex()``, a non-ASCII join-key
  name's length packed in UTF-8 bytes as current Feast does (``name_length="bytes"``), or in
  characters as older Feast did (``"chars"``);
* ``event_ts = str(make_tzaware(ts))``.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import mmh3

# --------------------------------------------------------------------------------------
# Protobuf wire format, by hand
# --------------------------------------------------------------------------------------

_VARINT = 0
_FIXED64 = 1
_LEN = 2
_FIXED32 = 5

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _varint(n: int) -> bytes:
    """Base-128 varint of a non-negative integer below 2**64."""
    if not 0 <= n < 2**64:
        raise ValueError(f"varint out of range: {n}")
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _check_int(value: object, lo: int, hi: int, what: str) -> int:
    # bool is an int subclass; refuse it so a mistyped test row fails loudly.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} needs an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} out of range: {value}")
    return value


def _int_varint(value: int) -> bytes:
    # proto int32/int64 are NOT zigzag: negatives are the 64-bit two's complement, which
    # is always 10 bytes (int32 is sign-extended to 64 bits on the wire too).
    return _varint(value & 0xFFFFFFFFFFFFFFFF)


def _double(value: object) -> bytes:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"double/float needs a number, got {type(value).__name__}")
    return struct.pack("<d", float(value))


def _float(value: object) -> bytes:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"double/float needs a number, got {type(value).__name__}")
    # struct raises OverflowError for finite values beyond float32, as protobuf rejects them.
    return struct.pack("<f", float(value))


def _bool(value: object) -> bytes:
    if not isinstance(value, bool):
        raise TypeError(f"bool needs a bool, got {type(value).__name__}")
    return _varint(int(value))


def _str_bytes(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"string needs a str, got {type(value).__name__}")
    return value.encode("utf-8")


def _raw_bytes(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"bytes needs bytes, got {type(value).__name__}")
    return bytes(value)


def _len_field(field: int, payload: bytes) -> bytes:
    return _tag(field, _LEN) + _varint(len(payload)) + payload


# Scalar element encoders: kind of the element -> (wire type, payload encoder).
_SCALARS: dict[str, tuple[int, Any]] = {
    "bytes": (_LEN, _raw_bytes),
    "string": (_LEN, _str_bytes),
    "int32": (_VARINT, lambda v: _int_varint(_check_int(v, _INT32_MIN, _INT32_MAX, "int32"))),
    "int64": (_VARINT, lambda v: _int_varint(_check_int(v, _INT64_MIN, _INT64_MAX, "int64"))),
    "double": (_FIXED64, _double),
    "float": (_FIXED32, _float),
    "bool": (_VARINT, _bool),
}

# Value.val oneof: kind -> (field number, element type). Timestamps are int64 seconds;
# json, uuid, time_uuid and decimal are plain strings.
_SCALAR_FIELDS: dict[str, tuple[int, str]] = {
    "bytes_val": (1, "bytes"),
    "string_val": (2, "string"),
    "int32_val": (3, "int32"),
    "int64_val": (4, "int64"),
    "double_val": (5, "double"),
    "float_val": (6, "float"),
    "bool_val": (7, "bool"),
    "unix_timestamp_val": (8, "int64"),
    "json_val": (32, "string"),
    "uuid_val": (36, "string"),
    "time_uuid_val": (37, "string"),
    "decimal_val": (44, "string"),
}

# Repeated kinds: every *List / *Set message is ``repeated <T> val = 1``.
_REPEATED_FIELDS: dict[str, tuple[int, str]] = {
    "bytes_list_val": (11, "bytes"),
    "string_list_val": (12, "string"),
    "int32_list_val": (13, "int32"),
    "int64_list_val": (14, "int64"),
    "double_list_val": (15, "double"),
    "float_list_val": (16, "float"),
    "bool_list_val": (17, "bool"),
    "unix_timestamp_list_val": (18, "int64"),
    "bytes_set_val": (22, "bytes"),
    "string_set_val": (23, "string"),
    "int32_set_val": (24, "int32"),
    "int64_set_val": (25, "int64"),
    "double_set_val": (26, "double"),
    "float_set_val": (27, "float"),
    "bool_set_val": (28, "bool"),
    "unix_timestamp_set_val": (29, "int64"),
    "json_list_val": (33, "string"),
    "uuid_list_val": (38, "string"),
    "time_uuid_list_val": (39, "string"),
    "uuid_set_val": (40, "string"),
    "time_uuid_set_val": (41, "string"),
    "decimal_list_val": (45, "string"),
    "decimal_set_val": (46, "string"),
}

_NULL_FIELD = 19
# Map is ``map<string, Value> val = 1``, MapList ``repeated Map val = 1``.
_MAP_FIELDS = {"map_val": 20, "struct_val": 34}
_MAP_LIST_FIELDS = {"map_list_val": 21, "struct_list_val": 35}
# RepeatedValue is ``repeated Value val = 1``.
_NESTED_FIELDS = {"list_val": 42, "set_val": 43}
_SCALAR_MAP_FIELD = 47  # ScalarMap { repeated ScalarMapEntry { MapKey key = 1; Value value = 2 } }
_ZONED_FIELD = 48  # ZonedTimestamp { int64 unix_timestamp = 1; string zone = 2; }
# MapKey.key oneof: key kind -> (field number, element type).
_MAP_KEY_FIELDS: dict[str, tuple[int, str]] = {
    "int32_key": (1, "int32"), "int64_key": (2, "int64"), "float_key": (3, "float"),
    "double_key": (4, "double"), "bool_key": (5, "bool"), "unix_timestamp_key": (6, "int64"),
    "bytes_key": (7, "bytes"), "uuid_key": (8, "string"), "time_uuid_key": (9, "string"),
    "decimal_key": (10, "string"),
}

KINDS: frozenset[str] = frozenset(
    [*_SCALAR_FIELDS, *_REPEATED_FIELDS, "null_val", *_MAP_FIELDS, *_MAP_LIST_FIELDS,
     *_NESTED_FIELDS, "scalar_map_val", "zoned_timestamp_val"]
)
"""Every ``feast.types.Value`` oneof field name this writer can encode."""


def _scalar_payload(elem: str, value: object) -> bytes:
    """Wire payload of one scalar element (length prefix included for bytes/string)."""
    wire, enc = _SCALARS[elem]
    data: bytes = enc(value)
    if wire == _LEN:
        return _varint(len(data)) + data
    return data


def _list_message(elem: str, values: object) -> bytes:
    """Body of a ``repeated <elem> val = 1`` message."""
    if isinstance(values, str | bytes | bytearray) or not isinstance(values, Iterable):
        raise TypeError(f"list kind needs a list of {elem}, got {type(values).__name__}")
    items = list(values)
    wire, _ = _SCALARS[elem]
    if wire == _LEN:
        # strings and bytes are never packed: one tagged record per element.
        return b"".join(_tag(1, _LEN) + _scalar_payload(elem, v) for v in items)
    if not items:
        # proto3 omits an empty packed field entirely, leaving an empty message.
        return b""
    # proto3 packs repeated numeric scalars by default: one LEN record of raw payloads.
    return _len_field(1, b"".join(_scalar_payload(elem, v) for v in items))


def _map_message(entries: object) -> bytes:
    """Body of ``message Map { map<string, Value> val = 1; }``."""
    if not isinstance(entries, Mapping):
        raise TypeError(f"map_val needs a dict, got {type(entries).__name__}")
    out = bytearray()
    for key, (kind, value) in entries.items():
        # A map field is a repeated entry message {key = 1; value = 2}. Protobuf writes both
        # entry fields even when they hold defaults, so this does too.
        entry = _len_field(1, _str_bytes(key)) + _len_field(2, encode_value(kind, value))
        out += _len_field(1, entry)
    return bytes(out)


def _scalar_map_message(entries: object) -> bytes:
    """Body of ScalarMap: one ScalarMapEntry record per ``((key_kind, key), (kind, value))``."""
    if not isinstance(entries, Sequence):
        raise TypeError(f"scalar_map_val needs a list of pairs, got {type(entries).__name__}")
    out = bytearray()
    for (key_kind, key), (kind, value) in entries:
        field, elem = _MAP_KEY_FIELDS[key_kind]
        map_key = _tag(field, _SCALARS[elem][0]) + _scalar_payload(elem, key)
        out += _len_field(1, _len_field(1, map_key) + _len_field(2, encode_value(kind, value)))
    return bytes(out)


def _zoned_message(value: object) -> bytes:
    """Body of ZonedTimestamp for ``(seconds, zone)``; proto3 leaves out 0 and ""."""
    if not isinstance(value, tuple):
        raise TypeError(f"zoned_timestamp_val needs (seconds, zone), got {type(value).__name__}")
    seconds, zone = value
    body = _tag(1, _VARINT) + _scalar_payload("int64", seconds) if seconds else b""
    return body + (_len_field(2, _str_bytes(zone)) if zone else b"")


def encode_value(kind: str, value: object) -> bytes:
    """Serialize a ``feast.types.Value`` whose oneof ``val`` is ``kind`` holding ``value``.

    ``map_val``/``struct_val`` take ``dict[str, (kind, value)]``; ``map_list_val``/
    ``struct_list_val`` a list of those; ``list_val``/``set_val`` a list of ``(kind, value)``;
    ``scalar_map_val`` a list of ``((key_kind, key), (kind, value))``;
    ``zoned_timestamp_val`` ``(seconds, zone)``; ``null_val`` ignores ``value``. A set oneof
    member is always written, even at default.
    """
    if kind in _SCALAR_FIELDS:
        field, elem = _SCALAR_FIELDS[kind]
        wire, _ = _SCALARS[elem]
        return _tag(field, wire) + _scalar_payload(elem, value)
    if kind in _REPEATED_FIELDS:
        field, elem = _REPEATED_FIELDS[kind]
        return _len_field(field, _list_message(elem, value))
    if kind == "null_val":
        # enum Null { NULL = 0 }: the only value is 0, still written because it is set.
        return _tag(_NULL_FIELD, _VARINT) + _varint(0)
    if kind in _MAP_FIELDS:
        return _len_field(_MAP_FIELDS[kind], _map_message(value))
    if kind in _MAP_LIST_FIELDS:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise TypeError(f"{kind} needs a list of dicts, got {type(value).__name__}")
        body = b"".join(_len_field(1, _map_message(m)) for m in value)
        return _len_field(_MAP_LIST_FIELDS[kind], body)
    if kind in _NESTED_FIELDS:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise TypeError(f"{kind} needs a list of (kind, value), got {type(value).__name__}")
        body = b"".join(_len_field(1, encode_value(k, v)) for k, v in value)
        return _len_field(_NESTED_FIELDS[kind], body)
    if kind == "scalar_map_val":
        return _len_field(_SCALAR_MAP_FIELD, _scalar_map_message(value))
    if kind == "zoned_timestamp_val":
        return _len_field(_ZONED_FIELD, _zoned_message(value))
    raise ValueError(f"unknown Value kind: {kind!r}")


# --------------------------------------------------------------------------------------
# Entity keys
# --------------------------------------------------------------------------------------

# feast.types.ValueType enum numbers used in the entity-key serialization.
_KEY_TYPES: dict[str, int] = {
    "bytes": 1,
    "string": 2,
    "int32": 3,
    "int64": 4,
    "unix_timestamp": 8,
}
_VALUE_TYPE_STRING = 2


def _key_value_bytes(type_name: str, value: object) -> bytes:
    if type_name == "string":
        return _str_bytes(value)
    if type_name == "bytes":
        return _raw_bytes(value)
    if type_name == "int32":
        return struct.pack("<i", _check_int(value, _INT32_MIN, _INT32_MAX, "int32"))
    if type_name in ("int64", "unix_timestamp"):
        return struct.pack("<q", _check_int(value, _INT64_MIN, _INT64_MAX, type_name))
    raise ValueError(f"entity key type not supported by Feast: {type_name!r}")


NAME_LENGTHS = ("bytes", "chars")


def serialize_entity_key(join_keys: Mapping[str, tuple[str, object]], version: int = 3,
                         name_length: str = "bytes") -> bytes:
    """Feast's ``serialize_entity_key`` for ``{join_key: (type, value)}``, version 2 or 3;
    version 3 packs each name's length in UTF-8 bytes (``name_length="bytes"``, Feast now)
    or in characters (``"chars"``, older Feast: ``len()`` of the str)."""
    if name_length not in NAME_LENGTHS:
        raise ValueError(f"name_length is one of {NAME_LENGTHS}, not {name_length!r}")
    if version not in (2, 3):
        raise ValueError(f"unsupported entity key serialization version: {version}")
    if not join_keys:
        raise ValueError("an entity key needs at least one join key")
    # Feast sorts (join_key, value) pairs, i.e. by join key name in code-point order.
    ordered = sorted(join_keys.items(), key=lambda kv: kv[0])
    out = bytearray()
    if version >= 3:
        out += struct.pack("<I", len(ordered))
    for name, _ in ordered:
        out += struct.pack("<I", _VALUE_TYPE_STRING)
        encoded = name.encode("utf8")
        if version >= 3:
            # Older Feast packed len() of the str (characters), not of its UTF-8 bytes, so a
            # non-ASCII name got a "wrong" length; current Feast packs the bytes'.
            out += struct.pack("<I", len(encoded) if name_length == "bytes" else len(name))
        out += encoded
    for _, (type_name, value) in ordered:
        val = _key_value_bytes(type_name, value)
        out += struct.pack("<I", _KEY_TYPES[type_name])
        out += struct.pack("<I", len(val))
        out += val
    return bytes(out)


def entity_id(join_keys: Mapping[str, tuple[str, object]], version: int = 3,
              name_length: str = "bytes") -> str:
    """The ``entity_id`` hash key: hex MurmurHash3 x64-128 (seed 0) of the serialized key."""
    return mmh3.hash_bytes(serialize_entity_key(join_keys, version, name_length)).hex()


# --------------------------------------------------------------------------------------
# DynamoDB table and items
# --------------------------------------------------------------------------------------

Row = tuple[Mapping[str, tuple[str, object]], datetime, Mapping[str, tuple[str, object]]]
"""``(join_keys, event_ts, {feature_name: (kind, value)})``."""

_BATCH = 25  # BatchWriteItem's hard per-request limit


def _make_tzaware(ts: datetime) -> datetime:
    # Feast's utils.make_tzaware: naive means UTC; aware timestamps keep their own offset.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def create_feast_table(client: Any, table_name: str) -> None:
    """Create ``table_name`` with Feast's key schema and wait until it exists."""
    client.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "entity_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "entity_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=table_name)


def feast_item(
    join_keys: Mapping[str, tuple[str, object]],
    event_ts: datetime,
    features: Mapping[str, tuple[str, object]],
    version: int = 3,
    name_length: str = "bytes",
) -> dict[str, Any]:
    """One item in low-level client (typed attribute) form, as Feast stores it."""
    return {
        "entity_id": {"S": entity_id(join_keys, version, name_length)},
        "event_ts": {"S": str(_make_tzaware(event_ts))},
        "values": {
            "M": {name: {"B": encode_value(kind, v)} for name, (kind, v) in features.items()}
        },
    }


def write_feast_rows(client: Any, table_name: str, rows: Iterable[Row], version: int = 3,
                     name_length: str = "bytes") -> None:
    """Put ``rows`` with ``batch_write_item`` in chunks of 25, re-sending UnprocessedItems.

    Rows sharing an entity key collapse to the last one, as Feast's
    ``batch_writer(overwrite_by_pkeys=["entity_id"])`` does (and BatchWriteItem refuses
    duplicate keys in one request anyway).
    """
    items: dict[str, dict[str, Any]] = {}
    for join_keys, event_ts, features in rows:
        item = feast_item(join_keys, event_ts, features, version, name_length)
        items[item["entity_id"]["S"]] = item
    pending = list(items.values())
    for start in range(0, len(pending), _BATCH):
        requests: list[dict[str, Any]] = [
            {"PutRequest": {"Item": item}} for item in pending[start : start + _BATCH]
        ]
        delay = 0.05
        while requests:
            resp = client.batch_write_item(RequestItems={table_name: requests})
            requests = resp.get("UnprocessedItems", {}).get(table_name, [])
            if requests:
                # Unprocessed items mean throttling; back off before re-sending them.
                time.sleep(delay)
                delay = min(delay * 2, 1.0)


# --------------------------------------------------------------------------------------
# What a reader should return
# --------------------------------------------------------------------------------------


def _float32(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def _expected_scalar(elem: str, value: Any, timestamp: bool) -> Any:
    if timestamp:
        return datetime.fromtimestamp(value, UTC)
    if elem == "bytes":
        return bytes(value)
    if elem == "float":
        return _float32(float(value))
    if elem == "double":
        return float(value)
    return value


def _expected_zone(zone: str) -> tzinfo:
    """Feast reads an empty zone as UTC and "+05:30"-like zones as fixed offsets."""
    if not zone:
        return UTC
    if zone[0] in "+-":
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[-2:]))
        return timezone(-offset if zone[0] == "-" else offset)
    return ZoneInfo(zone)


def expected_python(kind: str, value: Any) -> Any:
    """The Python value a reader should decode ``encode_value(kind, value)`` into."""
    if kind in _SCALAR_FIELDS:
        _, elem = _SCALAR_FIELDS[kind]
        return _expected_scalar(elem, value, kind == "unix_timestamp_val")
    if kind in _REPEATED_FIELDS:
        _, elem = _REPEATED_FIELDS[kind]
        is_ts = kind.startswith("unix_timestamp_")
        return [_expected_scalar(elem, v, is_ts) for v in value]
    if kind == "null_val":
        return None
    if kind in _MAP_FIELDS:
        return {k: expected_python(vk, vv) for k, (vk, vv) in value.items()}
    if kind in _MAP_LIST_FIELDS:
        return [expected_python("map_val", m) for m in value]
    if kind in _NESTED_FIELDS:
        return [expected_python(k, v) for k, v in value]
    if kind == "scalar_map_val":
        # featurepull keeps the entries as a list: its keys need not be strings.
        return [{"key": _expected_scalar(_MAP_KEY_FIELDS[kk][1], key, kk == "unix_timestamp_key"),
                 "value": expected_python(k, v)} for (kk, key), (k, v) in value]
    if kind == "zoned_timestamp_val":
        seconds, zone = value
        return datetime.fromtimestamp(seconds, _expected_zone(zone))
    raise ValueError(f"unknown Value kind: {kind!r}")


def expected_event_ts(dt: datetime) -> datetime:
    """The aware datetime a reader should parse back from the stored ``event_ts`` string."""
    return datetime.fromisoformat(str(_make_tzaware(dt)))


def same_python(a: Any, b: Any) -> bool:
    """Equality for expected values that also treats NaN as equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_python(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_python(a[k], b[k]) for k in a)
    if isinstance(a, datetime) and isinstance(b, datetime) and a.utcoffset() != b.utcoffset():
        return False  # equal instants in different zones
    return type(a) is type(b) and a == b
