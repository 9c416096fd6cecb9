"""Decoding Feast's serialized ``feast.types.Value`` protobufs into Python values.

The message classes are built at runtime from a descriptor that mirrors Feast's
``protos/feast/types/Value.proto`` field for field, in a private descriptor pool: no
generated code to keep in sync, and no clash with Feast's own classes if both are imported.

Python values: bytes→bytes; string, uuid, time_uuid→str; int32/int64→int; double/float→float;
bool→bool; unix_timestamp (seconds)→aware UTC datetime; lists and sets→list in stored order;
null (or no value set)→None; map→dict; map list→list of dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
    ("uuid_val", 30, _F.TYPE_STRING, None),
    ("time_uuid_val", 31, _F.TYPE_STRING, None),
    ("uuid_list_val", 32, _F.TYPE_MESSAGE, "StringList"),
    ("time_uuid_list_val", 33, _F.TYPE_MESSAGE, "StringList"),
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
    return fdp


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file_descriptor())
ValueProto: Any = message_factory.GetMessageClass(_pool.FindMessageTypeByName("feast.types.Value"))


def timestamp_from_seconds(seconds: int) -> datetime:
    """An aware UTC datetime for Unix seconds (also before 1970 and past 2038)."""
    try:
        return datetime.fromtimestamp(seconds, UTC)  # a third of the time of the sum below
    except (OverflowError, OSError, ValueError):  # outside what the platform's C time takes
        return _EPOCH + timedelta(seconds=seconds)


def _map_to_dict(msg: Any) -> dict[str, Any]:
    return {key: _from_proto(value) for key, value in msg.val.items()}


def _scalar(kind: str) -> Callable[[Any], Any]:
    return attrgetter(kind)  # in C: this runs for nearly every value read


def _listed(kind: str) -> Callable[[Any], Any]:
    return lambda msg: list(getattr(msg, kind).val)


_CONVERT: dict[str | None, Callable[[Any], Any]] = {None: lambda msg: None}
for _name, _num, _ftype, _tname in _VALUE_FIELDS:
    _CONVERT[_name] = _listed(_name) if _ftype == _F.TYPE_MESSAGE else _scalar(_name)
_CONVERT["null_val"] = lambda msg: None
_CONVERT["unix_timestamp_val"] = lambda msg: timestamp_from_seconds(msg.unix_timestamp_val)
for _ts_kind in ("unix_timestamp_list_val", "unix_timestamp_set_val"):
    _CONVERT[_ts_kind] = (
        lambda kind: lambda msg: [timestamp_from_seconds(v) for v in getattr(msg, kind).val]
    )(_ts_kind)
_CONVERT["map_val"] = lambda msg: _map_to_dict(msg.map_val)
_CONVERT["map_list_val"] = lambda msg: [_map_to_dict(m) for m in msg.map_list_val.val]


def _from_proto(msg: Any) -> Any:
    return _CONVERT[msg.WhichOneof("val")](msg)


_parse = ValueProto.FromString


def decode_value(data: bytes) -> Any:
    """The Python value of one serialized Feast ``Value``."""
    msg = _parse(data)  # _from_proto inlined: a read decodes millions of these
    return _CONVERT[msg.WhichOneof("val")](msg)
