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
from binascii import a2b_base64
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import itemgetter
from typing import Any

from featurepull.arrow_columns import time_column
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


# (tag, size) of the fixed-width scalar encodings -> struct format of the tag and value.
_FIXED = {(0x29, 9): "xd", (0x35, 5): "xf"}
_column_structs: dict[tuple[str, int, int], struct.Struct] = {}
# Tag of a one-varint Value -> its field: int32_val, int64_val, bool_val, unix_timestamp_val.
_VARINT_KINDS = {0x18: "int32_val", 0x20: "int64_val", 0x38: "bool_val",
                 0x40: "unix_timestamp_val"}
_first_byte = itemgetter(0)
_second_byte = itemgetter(1)
_after_two = itemgetter(slice(2, None))
_STRING_TAG = 0x12
_MAX_VARINT_VALUE = 11  # the tag, then a varint of at most 10 bytes
# Columns shorter than this are decoded text by text, and values of several sizes value by
# value: below it the checks cost more than they save (answers of ~10 items: 10% found).
MIN_JOINED = 32


def decode_values(values: Sequence[bytes]) -> list[Any]:
    """``[decode_value(v) for v in values]``, faster for a column (one feature across one
    answer's items) whose values are all one kind in its common encoding: doubles or
    floats (one struct call), ints, bools or Unix timestamps (one protobuf call), strings
    of up to 127 bytes (C calls only). Anything else, or anything odd, goes value by value."""
    count = len(values)
    if count >= MIN_JOINED:
        try:
            sizes = bytes(map(len, values))
        except ValueError:  # a value of 256 bytes or more
            sizes = b""
        if sizes and min(sizes) >= 2:
            size = sizes[0]
            column = _one_size_column(b"".join(values), 0, size, size, count) \
                if sizes.count(size) == count else _mixed_size_column(values, sizes, count)
            if column is not None:
                return column
    elif count > 1:
        lengths = set(map(len, values))
        size = lengths.pop()
        if size >= 2 and not lengths:
            column = _one_size_column(b"".join(values), 0, size, size, count)
            if column is not None:
                return column
    return [decode_value(value) for value in values]


def _one_size_column(data: bytes, pad: int, size: int, stride: int, count: int
                     ) -> list[Any] | None:
    """The values of a column whose ``count`` values are each ``size`` bytes, followed by
    ``pad`` bytes to ignore (``stride`` bytes apart), in ``data``; None unless they share
    one tag and are all of a kind read here."""
    tag = data[0]
    if data[::stride] != data[:1] * count:
        return None
    item = _FIXED.get((tag, size))
    if item is not None:
        return list(_column_struct(item, pad, count).unpack(data))
    if tag == _STRING_TAG and 2 <= size <= 129:
        if data[1::stride] != bytes((size - 2,)) * count:
            return None
        return _texts(_column_struct(f"xx{size - 2}s", pad, count).unpack(data))
    if tag in _VARINT_KINDS and size <= _MAX_VARINT_VALUE:
        if pad:  # the values without the bytes between them
            data = b"".join(_column_struct(f"{size}s", pad, count).unpack(data))
        return _varint_column(data, _VARINT_SHAPES[size] * count, tag, count)
    return None


def _mixed_size_column(values: Sequence[bytes], sizes: bytes, count: int) -> list[Any] | None:
    """Values of several sizes, each at least 2 bytes: one-varint kinds or strings of up
    to 127 bytes, all of one tag; None for anything else."""
    tags = bytes(map(_first_byte, values))
    tag = tags[0]
    if tags.count(tag) != count:
        return None
    if tag in _VARINT_KINDS and max(sizes) <= _MAX_VARINT_VALUE:
        shape = b"".join(map(_VARINT_SHAPES.__getitem__, sizes))
        return _varint_column(b"".join(values), shape, tag, count)
    if tag == _STRING_TAG and max(sizes) <= 129:
        # Each length byte is the rest of its value: the text runs to the value's end.
        if bytes(map(_second_byte, values)) != sizes.translate(_LESS_TWO):
            return None
        return _texts(map(_after_two, values))
    return None


def _texts(parts: Iterable[bytes]) -> list[str] | None:
    """Each part decoded as UTF-8; None if one is not (protobuf raises its own error)."""
    try:
        return list(map(bytes.decode, parts))
    except UnicodeDecodeError:
        return None


def _column_struct(item: str, pad: int, count: int) -> struct.Struct:
    """A little-endian struct of ``count`` times the format ``item`` and ``pad`` bytes to
    skip (cached)."""
    key = (item, pad, count)
    unpack = _column_structs.get(key)
    if unpack is None:
        unpack = struct.Struct("<" + (item + "x" * pad) * count)
        if len(_column_structs) < 256:
            _column_structs[key] = unpack
    return unpack


def _varint_column(joined: bytes, shape: bytes, tag: int, count: int) -> list[Any] | None:
    """Values that are each ``tag`` and one varint ending at the value's end, parsed
    together; ``shape`` is the high bits such values have. None for anything else."""
    # The high bit set on every byte of a varint but its last, and clear on the tag (all
    # one-varint tags are below 0x80): the parse cannot run from one value into the next.
    if joined.translate(_HIGH_BITS) != shape:
        return None
    from featurepull.dynamo._feast_value_proto import parse_varint_columns  # first use only

    parsed = list(getattr(parse_varint_columns(joined), _VARINT_KINDS[tag]))
    if len(parsed) != count:
        return None
    return timestamps_from_seconds(parsed) if tag == 0x40 else parsed


def decode_base64_values(texts: Sequence[str]) -> list[Any]:
    """``decode_values([a2b_base64(t) for t in texts])``: a column of B values as the
    wire has them. Texts of one width are decoded as one text (with separators, which the
    decoder skips) and read where they lie when their kind is one of one size."""
    column = _one_width_column(texts) if len(texts) >= MIN_JOINED else None
    return column if column is not None else decode_values(list(map(a2b_base64, texts)))


def _one_width_column(texts: Sequence[str]) -> list[Any] | None:
    count = len(texts)
    try:
        joined = ",".join(texts)
    except TypeError:  # not all text: the exact path says what
        return None
    width = len(texts[0])
    # Separators where texts of this width put them, none past them, and (below) every
    # other character decoded: each text is `width` base64 characters.
    if width % 4 or not width or joined[width::width + 1] != "," * (count - 1):
        return None
    pad = width - len(texts[0].rstrip("="))
    if pad:
        # Padding ends a decode: each text's (and only its) trailing "=" read as "A" gives
        # its bytes and then `pad` bytes more, skipped below.
        pads = "=" * count
        if pad > 2 or joined.count("=") != pad * count or joined[width - 1::width + 1] != pads \
                or (pad == 2 and joined[width - 2::width + 1] != pads):
            return None
        joined = joined.replace("=", "A")
    try:
        data = a2b_base64(joined)
    except ValueError:  # binascii.Error; not ASCII
        return None
    stride = width // 4 * 3
    # Anything the decoder skipped (a character outside base64's alphabet) makes it shorter.
    if len(data) != stride * count:
        return None
    return _one_size_column(data, pad, stride - pad, stride, count)


def timestamps_from_seconds(seconds: list[int]) -> list[datetime]:
    """``[timestamp_from_seconds(s) for s in seconds]``, in C calls where every one is
    within what the platform's C time takes; the seconds kept beside them (a
     ``TimeColumn``), for the Arrow output to cast all at once."""
    try:
        stamps = map(datetime.fromtimestamp, seconds, repeat(UTC, len(seconds)))
        return time_column(stamps, seconds, "seconds")
    except (OverflowError, OSError, ValueError):
        return time_column(map(timestamp_from_seconds, seconds), seconds, "seconds")


_HIGH_BITS = bytes(byte & 0x80 for byte in range(256))
# By a value's size: the high bits of a tag and a varint that ends at the value's end.
_VARINT_SHAPES = tuple(b"\x00" + b"\x80" * (size - 2) + b"\x00" if size >= 2 else b"\xff"
                       for size in range(_MAX_VARINT_VALUE + 1))
_LESS_TWO = bytes((size - 2) % 256 for size in range(256))


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
