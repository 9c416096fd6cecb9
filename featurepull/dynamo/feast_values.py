"""Decoding Feast's serialized ``feast.types.Value`` protobufs into Python values.

The message classes are built at runtime from a descriptor that mirrors Feast's
``protos/feast/types/Value.proto`` (Feast 0.67) field for field, in a private descriptor
pool (:mod:`featurepull.dynamo._feast_value_proto`, imported at the first value only protobuf
reads): no generated code to keep in sync, and no clash with Feast's own classes if both are
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

import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from featurepull.errors import InputError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FeastValueError(InputError, ValueError):
    """A stored value featurepull cannot decode faithfully; the message names the kind."""


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


def __getattr__(name: str) -> Any:
    # ValueProto (the Value message class, for writers of test data) lives with protobuf.
    if name == "ValueProto":
        from featurepull.dynamo._feast_value_proto import ValueProto

        return ValueProto
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from featurepull.dynamo._feast_value_proto import parse  # protobuf: first use only

    return parse(data)


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
    from featurepull.dynamo._feast_value_proto import parse_varint_columns  # first use only

    parsed = list(getattr(parse_varint_columns(joined), kind))
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
