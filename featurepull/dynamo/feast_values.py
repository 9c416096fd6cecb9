"""Decoding Feast's serialized ``feast.types.Value`` protobufs into Python values.

The message classes are built at runtime from a descriptor that mirrors Feast's
``protos/feast/types/Value.proto`` (Feast 0.67) field for field, in a private descriptor
pool: no generated code to keep in sync, and no clash with Feast's own classes if both are
imported. ``tests/dynamo/test_feast_values_kinds.py`` walks Feast's own descriptor, so a kind
Feast adds fails the tests until it is mirrored here.

Every kind decodes to a value the output sinks can write (None, bool, int, float, str, bytes,
datetime, and lists and dicts of those); docs/feast-values.md has the table. A kind this
mirror does not know (a newer Feast), or a value that cannot be decoded (malformed bytes, an
unknown time zone), raises :class:`FeastValueError`: never a silent None.

:func:`decode_value` reads the common one-field scalar encodings (double, float, int64, int32,
bool, string, unix_timestamp, null, nothing) straight from the bytes and hands everything else
(lists, sets, maps, bytes, uuids, extra or repeated fields, anything malformed) to protobuf;
``tests/dynamo/test_feast_values_fast.py`` checks both give the same values.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from featurepull.errors import InputError

_F = descriptor_pb2.FieldDescriptorProto
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The element type of each list/set message (all are `repeated <T> val = 1;`).
_LISTS = {
    "BytesList": _F.TYPE_BYTES, "StringList": _F.TYPE_STRING, "Int32List": _F.TYPE_INT32,
    "Int64List": _F.TYPE_INT64, "DoubleList": _F.TYPE_DOUBLE, "FloatList": _F.TYPE_FLOAT,
    "BoolList": _F.TYPE_BOOL, "BytesSet": _F.TYPE_BYTES, "StringSet": _F.TYPE_STRING,
    "Int32Set": _F.TYPE_INT32, "Int64Set": _F.TYPE_INT64, "DoubleSet": _F.TYPE_DOUBLE,
    "FloatSet": _F.TYPE_FLOAT, "BoolSet": _F.TYPE_BOOL,
}
_VALUE_FIELDS: list[tuple[str, int, Any, str | None]] = [
    ("bytes_val", 1, _F.TYPE_BYTES, None),
    ("string_val", 2, _F.TYPE_STRING, None),
    ("int32_val", 3, _F.TYPE_INT32, None),
    ("int64_val", 4, _F.TYPE_INT64, None),
    ("double_val", 5, _F.TYPE_DOUBLE, None),
    ("float_val", 6, _F.TYPE_FLOAT, None),
    ("bool_val", 7, _F.TYPE_BOOL, None),
    ("unix_timestamp_val", 8, _F.TYPE_INT64, None),
    ("bytes_list_val", 11, _F.TYPE_MESSAGE, "BytesList"),
    ("string_list_val", 12, _F.TYPE_MESSAGE, "StringList"),
    ("int32_list_val", 13, _F.TYPE_MESSAGE, "Int32List"),
    ("int64_list_val", 14, _F.TYPE_MESSAGE, "Int64List"),
    ("double_list_val", 15, _F.TYPE_MESSAGE, "DoubleList"),
    ("float_list_val", 16, _F.TYPE_MESSAGE, "FloatList"),
    ("bool_list_val", 17, _F.TYPE_MESSAGE, "BoolList"),
    ("unix_timestamp_list_val", 18, _F.TYPE_MESSAGE, "Int64List"),
    ("null_val", 19, _F.TYPE_ENUM, "Null"),
    ("map_val", 20, _F.TYPE_MESSAGE, "Map"),
    ("map_list_val", 21, _F.TYPE_MESSAGE, "MapList"),
    ("bytes_set_val", 22, _F.TYPE_MESSAGE, "BytesSet"),
    ("string_set_val", 23, _F.TYPE_MESSAGE, "StringSet"),
    ("int32_set_val", 24, _F.TYPE_MESSAGE, "Int32Set"),
    ("int64_set_val", 25, _F.TYPE_MESSAGE, "Int64Set"),
    ("double_set_val", 26, _F.TYPE_MESSAGE, "DoubleSet"),
    ("float_set_val", 27, _F.TYPE_MESSAGE, "FloatSet"),
    ("bool_set_val", 28, _F.TYPE_MESSAGE, "BoolSet"),
    ("unix_timestamp_set_val", 29, _F.TYPE_MESSAGE, "Int64Set"),
    ("json_val", 32, _F.TYPE_STRING, None),
    ("json_list_val", 33, _F.TYPE_MESSAGE, "StringList"),
    ("struct_val", 34, _F.TYPE_MESSAGE, "Map"),
    ("struct_list_val", 35, _F.TYPE_MESSAGE, "MapList"),
    ("uuid_val", 36, _F.TYPE_STRING, None),
    ("time_uuid_val", 37, _F.TYPE_STRING, None),
    ("uuid_list_val", 38, _F.TYPE_MESSAGE, "StringList"),
    ("time_uuid_list_val", 39, _F.TYPE_MESSAGE, "StringList"),
    ("uuid_set_val", 40, _F.TYPE_MESSAGE, "StringSet"),
    ("time_uuid_set_val", 41, _F.TYPE_MESSAGE, "StringSet"),
    ("list_val", 42, _F.TYPE_MESSAGE, "RepeatedValue"),
    ("set_val", 43, _F.TYPE_MESSAGE, "RepeatedValue"),
    ("decimal_val", 44, _F.TYPE_STRING, None),
    ("decimal_list_val", 45, _F.TYPE_MESSAGE, "StringList"),
    ("decimal_set_val", 46, _F.TYPE_MESSAGE, "StringSet"),
    ("scalar_map_val", 47, _F.TYPE_MESSAGE, "ScalarMap"),
    ("zoned_timestamp_val", 48, _F.TYPE_MESSAGE, "ZonedTimestamp"),
]
# MapKey.key oneof, the key of a scalar_map_val entry.
_MAP_KEY_FIELDS: list[tuple[str, int, Any]] = [
    ("int32_key", 1, _F.TYPE_INT32), ("int64_key", 2, _F.TYPE_INT64),
    ("float_key", 3, _F.TYPE_FLOAT), ("double_key", 4, _F.TYPE_DOUBLE),
    ("bool_key", 5, _F.TYPE_BOOL), ("unix_timestamp_key", 6, _F.TYPE_INT64),
    ("bytes_key", 7, _F.TYPE_BYTES), ("uuid_key", 8, _F.TYPE_STRING),
    ("time_uuid_key", 9, _F.TYPE_STRING), ("decimal_key", 10, _F.TYPE_STRING),
]


class FeastValueError(InputError, ValueError):
    """A stored value featurepull cannot decode faithfully; the message names the kind."""


def _field(name: str, number: int, ftype: Any, type_name: str | None = None,
           repeated: bool = False, oneof: int | None = None
           ) -> descriptor_pb2.FieldDescriptorProto:
    field = _F(name=name, number=number, type=ftype,
               label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = f".feast.types.{type_name}"
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="featurepull/feast_types_value.proto", package="feast.types", syntax="proto3"
    )
    fdp.enum_type.add(name="Null").value.add(name="NULL", number=0)
    value = fdp.message_type.add(name="Value")
    value.oneof_decl.add(name="val")
    for name, number, ftype, type_name in _VALUE_FIELDS:
        value.field.append(_field(name, number, ftype, type_name, oneof=0))
    for list_name, elem_type in _LISTS.items():
        list_msg = fdp.message_type.add(name=list_name)
        list_msg.field.append(_field("val", 1, elem_type, repeated=True))
    map_msg = fdp.message_type.add(name="Map")
    entry = map_msg.nested_type.add(name="ValEntry")
    entry.options.map_entry = True
    entry.field.append(_field("key", 1, _F.TYPE_STRING))
    entry.field.append(_field("value", 2, _F.TYPE_MESSAGE, "Value"))
    map_msg.field.append(_field("val", 1, _F.TYPE_MESSAGE, "Map.ValEntry", repeated=True))
    fdp.message_type.add(name="MapList").field.append(
        _field("val", 1, _F.TYPE_MESSAGE, "Map", repeated=True)
    )
    fdp.message_type.add(name="RepeatedValue").field.append(
        _field("val", 1, _F.TYPE_MESSAGE, "Value", repeated=True)
    )
    zoned = fdp.message_type.add(name="ZonedTimestamp")
    zoned.field.append(_field("unix_timestamp", 1, _F.TYPE_INT64))
    zoned.field.append(_field("zone", 2, _F.TYPE_STRING))
    map_key = fdp.message_type.add(name="MapKey")
    map_key.oneof_decl.add(name="key")
    for name, number, ftype in _MAP_KEY_FIELDS:
        map_key.field.append(_field(name, number, ftype, oneof=0))
    scalar_entry = fdp.message_type.add(name="ScalarMapEntry")
    scalar_entry.field.append(_field("key", 1, _F.TYPE_MESSAGE, "MapKey"))
    scalar_entry.field.append(_field("value", 2, _F.TYPE_MESSAGE, "Value"))
    fdp.message_type.add(name="ScalarMap").field.append(
        _field("val", 1, _F.TYPE_MESSAGE, "ScalarMapEntry", repeated=True)
    )
    return fdp


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file_descriptor())
ValueProto: Any = message_factory.GetMessageClass(_pool.FindMessageTypeByName("feast.types.Value"))


def timestamp_from_seconds(seconds: int) -> datetime:
    """An aware UTC datetime for Unix seconds (also before 1970 and past 2038)."""
    try:
        return datetime.fromtimestamp(seconds, UTC)  # a third of the time of the sum below
    except (OverflowError, OSError, ValueError):  # outside what the platform's C time takes
        pass
    try:
        return EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"Unix timestamp {seconds} (seconds) is outside the dates a "
                         "datetime can hold (years 1 to 9999)") from None


def _map_to_dict(msg: Any) -> dict[str, Any]:
    return {key: _from_proto(value) for key, value in msg.val.items()}


# A fixed offset as Feast writes a zone without an IANA name: "UTC", "+05:30", "UTC-07:00".
_OFFSET = re.compile(r"(?:UTC|GMT)?([+-])(\d{2}):?(\d{2})")


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    """The tzinfo of a ZonedTimestamp's zone, read as Feast reads it (empty is UTC)."""
    if name in ("", "UTC", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name.strip() in ("UTC", "GMT"):
            return UTC
        match = _OFFSET.fullmatch(name.strip())
        if match is None:
            # Feast itself falls back to UTC with a warning; that would shift the wall time.
            raise FeastValueError(
                f"zoned_timestamp_val has zone {name!r}, which is neither an IANA time zone "
                "nor a UTC offset like +05:30 (or the tzdata package is missing)"
            ) from None
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-offset if sign == "-" else offset)


def _zoned(msg: Any) -> datetime:
    stamp = msg.zoned_timestamp_val
    return timestamp_from_seconds(stamp.unix_timestamp).astimezone(_zone(stamp.zone))


def _map_key(key: Any) -> Any:
    kind = key.WhichOneof("key")
    if kind is None:
        _check_unknown(key, "scalar_map_val key")
        return None
    value = getattr(key, kind)
    return timestamp_from_seconds(value) if kind == "unix_timestamp_key" else value


def _scalar_map(msg: Any) -> list[dict[str, Any]]:
    # Keys may be ints, bytes or datetimes, which no sink takes as dict keys: a list of
    # entries keeps each key's type and the stored order.
    return [{"key": _map_key(entry.key), "value": _from_proto(entry.value)}
            for entry in msg.scalar_map_val.val]


def _scalar(kind: str) -> Callable[[Any], Any]:
    return attrgetter(kind)  # in C: this runs for nearly every value read


def _listed(kind: str) -> Callable[[Any], Any]:
    return lambda msg: list(getattr(msg, kind).val)


def _timestamps(kind: str) -> Callable[[Any], Any]:
    return lambda msg: [timestamp_from_seconds(v) for v in getattr(msg, kind).val]


def _nested(kind: str) -> Callable[[Any], Any]:
    return lambda msg: [_from_proto(value) for value in getattr(msg, kind).val]


def _map(kind: str) -> Callable[[Any], Any]:
    return lambda msg: _map_to_dict(getattr(msg, kind))


def _map_list(kind: str) -> Callable[[Any], Any]:
    return lambda msg: [_map_to_dict(m) for m in getattr(msg, kind).val]


def _unknown(msg: Any) -> None:
    _check_unknown(msg, "Value")
    return None


def _check_unknown(msg: Any, what: str) -> None:
    """Nothing set is None, but a field this mirror does not know is a newer Feast kind."""
    if msg.ByteSize():
        unknown = UnknownFieldSet(msg)
        numbers = sorted({unknown[i].field_number for i in range(len(unknown))})
        raise FeastValueError(
            f"a Feast {what} of a kind featurepull does not know (field "
            f"{', '.join(map(str, numbers))}), written by a newer Feast; upgrade featurepull"
        )


# Kinds whose values are protobuf messages, by how they become Python values.
_MESSAGE_KINDS: dict[str, Callable[[str], Callable[[Any], Any]]] = {
    "unix_timestamp_list_val": _timestamps, "unix_timestamp_set_val": _timestamps,
    "map_val": _map, "struct_val": _map, "map_list_val": _map_list,
    "struct_list_val": _map_list, "list_val": _nested, "set_val": _nested,
}
_CONVERT: dict[str | None, Callable[[Any], Any]] = {None: _unknown}
for _name, _num, _ftype, _tname in _VALUE_FIELDS:
    _CONVERT[_name] = (_MESSAGE_KINDS.get(_name, _listed)(_name) if _ftype == _F.TYPE_MESSAGE
                       else _scalar(_name))
_CONVERT["null_val"] = lambda msg: None
_CONVERT["unix_timestamp_val"] = lambda msg: timestamp_from_seconds(msg.unix_timestamp_val)
_CONVERT["scalar_map_val"] = _scalar_map
_CONVERT["zoned_timestamp_val"] = _zoned


def _from_proto(msg: Any) -> Any:
    return _CONVERT[msg.WhichOneof("val")](msg)


_parse = ValueProto.FromString
_unpack_double = struct.Struct("<d").unpack_from
_unpack_float = struct.Struct("<f").unpack_from
_U32 = (1 << 32) - 1
_I32_SIGN = 1 << 31


def _short_varint(data: bytes) -> int:
    """The value of the varint after the tag byte when it is 2 to 5 bytes long and ends
    exactly at the end of ``data`` (every int64 up to 2^35, every timestamp 1978-3058), else
    -1: longer ones (negative ints) and anything malformed are left to protobuf, which reads
    them faster than a loop in Python would."""
    size = len(data)
    if size == 6:
        _, b0, b1, b2, b3, b4 = data
        if b0 & b1 & b2 & b3 & 0x80 and b4 < 0x80:
            return ((b0 & 0x7F) | (b1 & 0x7F) << 7 | (b2 & 0x7F) << 14 | (b3 & 0x7F) << 21
                    | b4 << 28)
    elif size == 3:
        _, b0, b1 = data
        if b0 & 0x80 and b1 < 0x80:
            return (b0 & 0x7F) | b1 << 7
    elif size == 4:
        _, b0, b1, b2 = data
        if b0 & b1 & 0x80 and b2 < 0x80:
            return (b0 & 0x7F) | (b1 & 0x7F) << 7 | b2 << 14
    elif size == 5:
        _, b0, b1, b2, b3 = data
        if b0 & b1 & b2 & 0x80 and b3 < 0x80:
            return (b0 & 0x7F) | (b1 & 0x7F) << 7 | (b2 & 0x7F) << 14 | b3 << 21
    return -1


def _decode_proto(data: bytes) -> Any:
    try:
        msg = _parse(data)
    except DecodeError as exc:  # not a ValueError: the reader would not name the item
        raise FeastValueError(f"not a serialized Feast Value ({exc}): {data[:40]!r}") from None
    return _CONVERT[msg.WhichOneof("val")](msg)


def decode_value(data: bytes) -> Any:
    """The Python value of one serialized Feast ``Value``."""
    # Runs for nearly every value read: the frequent one-field encodings are read here, at
    # a fraction of the cost of a message; anything else (or odd) goes to protobuf.
    size = len(data)
    if not size:
        return None  # no field set
    tag = data[0]
    if tag == 0x29:  # double_val: fixed64
        if size == 9:
            return _unpack_double(data, 1)[0]
    elif tag == 0x35:  # float_val: fixed32, widened to a Python float as protobuf does
        if size == 5:
            return _unpack_float(data, 1)[0]
    elif tag == 0x20 or tag == 0x40:  # int64_val, unix_timestamp_val: varint
        value = data[1] if size == 2 else _short_varint(data)
        if value >= 0 and (size > 2 or value < 0x80):
            return value if tag == 0x20 else timestamp_from_seconds(value)
    elif tag == 0x12:  # string_val: length, then UTF-8 to the end
        if size <= 129:  # then the length fits one byte
            if size > 1 and data[1] == size - 2:
                try:
                    return data[2:].decode()
                except UnicodeDecodeError:
                    pass  # protobuf raises its own error
        else:
            length, start = _length_prefix(data)
            if length == size - start:
                try:
                    return data[start:].decode()
                except UnicodeDecodeError:
                    pass
    elif tag == 0x18:  # int32_val: varint, its low 32 bits as a signed int
        value = data[1] if size == 2 else _short_varint(data)
        if value >= 0 and (size > 2 or value < 0x80):
            value &= _U32
            return value - (1 << 32) if value & _I32_SIGN else value
    elif tag == 0x38:  # bool_val: varint, any non-zero value is true
        value = data[1] if size == 2 else _short_varint(data)
        if value >= 0 and (size > 2 or value < 0x80):
            return value != 0
    elif tag == 0x98 and size == 3 and data[1] == 0x01 and data[2] == 0x00:  # null_val NULL
        return None
    return _decode_proto(data)


# (tag, size) of the fixed-width scalar encodings -> struct code of the value after the tag.
_FIXED = {(0x29, 9): "d", (0x35, 5): "f"}
_column_structs: dict[tuple[str, int], struct.Struct] = {}
# Tag of a one-varint Value -> its field: int32_val, int64_val, bool_val, unix_timestamp_val.
_VARINT_KINDS = {0x18: "int32_val", 0x20: "int64_val", 0x38: "bool_val",
                 0x40: "unix_timestamp_val"}


def _varint_columns_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """One message whose repeated fields have the numbers and types of Value's one-varint
    scalars: the Values of a column, joined, parse as it in one C call."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="featurepull/varint_columns.proto", package="featurepull", syntax="proto3")
    column = fdp.message_type.add(name="VarintColumns")
    for name, number, ftype, _ in _VALUE_FIELDS:
        if name in _VARINT_KINDS.values():
            column.field.append(_field(name, number, ftype, repeated=True))
    return fdp


_pool.Add(_varint_columns_descriptor())
_parse_varint_columns = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("featurepull.VarintColumns")).FromString


def decode_values(values: Sequence[bytes]) -> list[Any]:
    """``[decode_value(v) for v in values]``, faster for a column (one feature across one
    answer's items) of doubles or floats, all unpacked by one struct call, or of ints,
    bools or Unix timestamps of one size, all parsed by one protobuf call."""
    count = len(values)
    if count > 1:
        lengths = set(map(len, values))
        if len(lengths) == 1:
            size = lengths.pop()
            if size:
                joined = b"".join(values)
                if joined[::size] == joined[:1] * count:  # every tag the same
                    column = _fixed_column(joined, size, count)
                    if column is None:
                        column = _varint_column(joined, size)
                    if column is not None:
                        return column
    return [decode_value(value) for value in values]


def _fixed_column(joined: bytes, size: int, count: int) -> list[Any] | None:
    code = _FIXED.get((joined[0], size))
    if code is None:
        return None
    unpack = _column_structs.get((code, count))
    if unpack is None:
        unpack = struct.Struct("<" + f"x{code}" * count)
        if len(_column_structs) < 256:
            _column_structs[(code, count)] = unpack
    return list(unpack.unpack(joined))


def _varint_column(joined: bytes, size: int) -> list[Any] | None:
    """Values of ``size`` bytes that are each their tag and one varint of 1 to 5 bytes
    (what :func:`decode_value` reads itself), parsed together; None for anything else."""
    kind = _VARINT_KINDS.get(joined[0])
    if kind is None or not 2 <= size <= 6:
        return None
    # Each value's varint ends at its last byte: the high bit set on every byte before it
    # but the tag (whose high bit is clear), so the parse cannot run from one into the next.
    shape = _VARINT_SHAPES[size]
    if joined.translate(_HIGH_BITS) != shape * (len(joined) // size):
        return None
    parsed = list(getattr(_parse_varint_columns(joined), kind))
    return list(map(timestamp_from_seconds, parsed)) if joined[0] == 0x40 else parsed


_HIGH_BITS = bytes(byte & 0x80 for byte in range(256))
_VARINT_SHAPES = {size: b"\x00" + b"\x80" * (size - 2) + b"\x00" for size in range(2, 7)}


def _length_prefix(data: bytes) -> tuple[int, int]:
    """The varint length at offset 1 of a length-delimited field and where its data starts;
    (-1, 0) if it is not a well-formed varint of at most 5 bytes."""
    result = shift = 0
    for pos in range(1, min(len(data), 6)):
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7
    return -1, 0
