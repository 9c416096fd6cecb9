"""The protobuf side of decoding Feast ``Value``s: a mirror of Feast's
``protos/feast/types/Value.proto`` (Feast 0.67) built at runtime in a private descriptor pool,
and each kind's message turned into its Python value.

Only what :func:`featurepull.dynamo.feast_values.decode_value` does not read from the bytes
itself (lists, sets, maps, bytes, uuids, extra or repeated fields, anything malformed) comes
here, so a read of plain scalars never imports protobuf (~100 M instructions of a console
pull's start).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from featurepull.dynamo.feast_values import _VARINT_KINDS, FeastValueError, timestamp_from_seconds

__all__ = ["ValueProto", "parse", "parse_varint_columns"]

_F = descriptor_pb2.FieldDescriptorProto

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
parse_varint_columns: Callable[[bytes], Any] = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("featurepull.VarintColumns")).FromString


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
    zone = _zone(stamp.zone)
    try:
        instant = timestamp_from_seconds(stamp.unix_timestamp)
    except ValueError as exc:
        raise FeastValueError(f"zoned_timestamp_val: {exc}") from None
    try:
        return instant.astimezone(zone)
    except OverflowError:  # within years 1 to 9999 in UTC, not in its zone
        raise FeastValueError(
            f"zoned_timestamp_val {instant.isoformat(sep=' ')} in zone {stamp.zone!r} is "
            "a local time outside the years 1 to 9999, which no datetime holds") from None


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


def parse(data: bytes) -> Any:
    """The Python value of one serialized Feast ``Value``, through protobuf."""
    try:
        msg = _parse(data)
    except DecodeError as exc:  # not a ValueError: the reader would not name the item
        raise FeastValueError(f"not a serialized Feast Value ({exc}): {data[:40]!r}") from None
    return _CONVERT[msg.WhichOneof("val")](msg)
