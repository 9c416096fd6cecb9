"""Feast entity keys: join-key values → Feast's entity key serialization → MurmurHash3
x64-128 hex, the ``entity_id`` Feast's DynamoDB online store writes.

Versions 2 and 3 of Feast's format are supported; 3 is Feast's default. Join keys are sorted
by name before encoding, as Feast does, so the caller's column order does not matter.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import mmh3

from featurepull.arrow_columns import is_arrow
from featurepull.dynamo.errors import EntityKeyError

# Feast ValueType enum numbers of the join-key types it can serialize.
_STRING, _BYTES, _INT32, _INT64, _UNIX_TIMESTAMP = 2, 1, 3, 4, 8
KEY_TYPES = ("int64", "int32", "string", "bytes", "unix_timestamp")
_INT32_RANGE = (-(2**31), 2**31 - 1)
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
_INT64_RANGE = (-(2**63), 2**63 - 1)

_PACK_U32 = struct.Struct("<I").pack
_PACK_I32 = struct.Struct("<i").pack
_PACK_I64 = struct.Struct("<q").pack


def _as_int(value: Any, bounds: tuple[int, int], type_name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"a bool is not an {type_name}")
    if isinstance(value, float):
        if not value.is_integer():
            raise TypeError(f"{value!r} is not an integer")
        value = int(value)
    elif isinstance(value, str):
        # int() also takes "1_00" (as 100) and non-ASCII digits; DynamoDB and Feast do not.
        if not _INT_TEXT.fullmatch(value):
            raise TypeError(f"{value!r} is not an integer (ASCII digits with an optional "
                            "sign: no underscores, points or exponents)")
        value = int(value)
    elif not isinstance(value, int):
        raise TypeError(f"{type(value).__name__} {value!r} is not an integer")
    number = int(value)
    if not bounds[0] <= number <= bounds[1]:
        raise TypeError(f"{number} is outside the {type_name} range")
    return number


def _enc_int64(value: Any) -> bytes:
    return _PACK_U32(_INT64) + _PACK_U32(8) + _PACK_I64(_as_int(value, _INT64_RANGE, "int64"))


def _enc_int32(value: Any) -> bytes:
    return _PACK_U32(_INT32) + _PACK_U32(4) + _PACK_I32(_as_int(value, _INT32_RANGE, "int32"))


def _enc_ts(value: Any) -> bytes:
    seconds = _as_int(value, _INT64_RANGE, "unix timestamp")
    return _PACK_U32(_UNIX_TIMESTAMP) + _PACK_U32(8) + _PACK_I64(seconds)


def _enc_string(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        raise TypeError("bytes given for a string join key")
    data = str(value).encode("utf8")
    return _PACK_U32(_STRING) + _PACK_U32(len(data)) + data


def _enc_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(
            f"{type(value).__name__} given for a bytes join key (bytes keys need a binary "
            "Parquet column)"
        )
    return _PACK_U32(_BYTES) + _PACK_U32(len(value)) + bytes(value)


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "int64": _enc_int64,
    "int32": _enc_int32,
    "string": _enc_string,
    "bytes": _enc_bytes,
    "unix_timestamp": _enc_ts,
}


_INT_BOUNDS: dict[Callable[[Any], bytes], tuple[int, int]] = {
    _enc_int64: _INT64_RANGE, _enc_int32: _INT32_RANGE, _enc_ts: _INT64_RANGE}
_CHECK_CHUNK = 100_000
# Fixed-width join keys: the ValueType number and the struct of the value's bytes.
_FIXED_WIDTH: dict[Callable[[Any], bytes], tuple[int, struct.Struct]] = {
    _enc_int64: (_INT64, struct.Struct("<q")), _enc_int32: (_INT32, struct.Struct("<i")),
    _enc_ts: (_UNIX_TIMESTAMP, struct.Struct("<q"))}


class EntityKeyEncoder:
    """Turns rows of join-key values into Feast ``entity_id`` strings."""

    def __init__(self, key_types: Mapping[str, str], version: int = 3) -> None:
        if version not in (2, 3):
            raise EntityKeyError(
                f"entity_key_serialization_version {version} is not supported; use 2 or 3"
            )
        for name, type_name in key_types.items():
            if type_name not in _ENCODERS:
                raise EntityKeyError(
                    f"join key {name!r} has type {type_name!r}; Feast join keys must be one of "
                    f"{', '.join(KEY_TYPES)} (set it with --join-key-types {name}=int64)"
                )
        self.names = sorted(key_types)
        self._encoders = [_ENCODERS[key_types[name]] for name in self.names]
        parts = [_PACK_U32(len(self.names))] if version >= 3 else []
        for name in self.names:
            parts.append(_PACK_U32(_STRING))
            if version >= 3:
                # Feast packs len() of the str, not of its UTF-8 bytes: reproduce it exactly.
                parts.append(_PACK_U32(len(name)))
            parts.append(name.encode("utf8"))
        self._prefix = b"".join(parts)

    def serialize(self, values: Sequence[Any]) -> bytes:
        """Feast's serialized entity key; ``values`` in the order of ``self.names``."""
        encoded = (enc(v) for enc, v in zip(self._encoders, values, strict=True))
        return self._prefix + b"".join(encoded)

    def failing_key(self, values: Sequence[Any]) -> tuple[str, Exception] | None:
        """The first join key whose value cannot be encoded, and why (None if all can)."""
        for name, enc, value in zip(self.names, self._encoders, values, strict=True):
            try:
                if value is None:
                    raise TypeError("null key value")
                enc(value)
            except (TypeError, ValueError) as exc:
                return name, exc
        return None

    def columns_encodable(self, columns: Sequence[Sequence[Any]]) -> bool:
        """Whether every row of these join-key columns (in the order of ``self.names``)
        surely encodes, checked a column at a time in C-speed passes (exact types, min and
        max, one UTF-8 encode per chunk) instead of encoding each key. False means "not
        sure": encode row by row to find the row at fault. A column may be an Arrow array
        (its type and null count, and for int32 its min and max, decide)."""
        for column, encoder in zip(columns, self._encoders, strict=True):
            if is_arrow(column):
                if not _arrow_encodable(column, encoder):
                    return False
            elif encoder in _INT_BOUNDS:
                low, high = _INT_BOUNDS[encoder]
                if not all(type(value) is int for value in column):  # no bool, no None
                    return False
                if column and not (low <= min(column) and max(column) <= high):
                    return False
            elif encoder is _enc_string:
                if not all(type(value) is str for value in column):
                    return False
                for start in range(0, len(column), _CHECK_CHUNK):
                    try:  # a lone surrogate cannot be UTF-8: Feast could not hash it either
                        "".join(column[start:start + _CHECK_CHUNK]).encode("utf8")
                    except UnicodeEncodeError:
                        return False
            elif not all(type(value) is bytes for value in column):
                return False
        return True

    def entity_ids(self, columns: Sequence[Sequence[Any]]) -> list[str] | None:
        """The entity ids of whole join-key columns at once when :meth:`columns_encodable`
        vouches for them (the common case, without a per-row type check); None otherwise.
        Several join keys are serialized in Arrow (:meth:`serialized_keys`)."""
        if not self.columns_encodable(columns):
            return None
        if len(self._encoders) > 1:
            serialized = self.serialized_keys(columns)
            return None if serialized is None else _digests(serialized.to_pylist())
        column: Any = columns[0]
        return self._hashed(column.to_pylist() if is_arrow(column) else column)

    def serialized_keys(self, columns: Sequence[Sequence[Any]]) -> Any:
        """Every row's :meth:`serialize`, as one Arrow binary array built a column at a time
        (each value's type and length fields, then its bytes, joined in Arrow); for columns
        :meth:`columns_encodable` vouched for. None where Arrow's integers are not
        little-endian, as Feast packs them."""
        if sys.byteorder != "little":
            return None
        import pyarrow as pa
        import pyarrow.compute as pc

        parts: list[Any] = [pa.scalar(self._prefix, pa.binary())]
        for column, encoder in zip(columns, self._encoders, strict=True):
            values: Any = column if is_arrow(column) else pa.array(column)
            if encoder in _FIXED_WIDTH:
                kind, pack = _FIXED_WIDTH[encoder]
                width_type = pa.int64() if pack.size == 8 else pa.int32()
                parts += [pa.scalar(_PACK_U32(kind) + _PACK_U32(pack.size), pa.binary()),
                          _packed(pc.cast(values, width_type), pack.size)]
            else:
                data = pc.cast(values, pa.binary())
                kind = _STRING if encoder is _enc_string else _BYTES
                lengths = pc.cast(pc.binary_length(data), pa.int32())
                parts += [pa.scalar(_PACK_U32(kind), pa.binary()), _packed(lengths, 4), data]
        joined = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))
        # One array even from a shard's chunked key columns (dictionary_encode's indices).
        return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined

    def unique_entity_ids(self, columns: Sequence[Sequence[Any]]
                          ) -> tuple[list[str], Any] | None:
        """The distinct entity ids of one int or text join-key column, or of several join
        keys of any type, in the order they first appear, and for each row the index of its
        id (an Arrow array): values (several keys: their serialized keys) are de-duplicated
        in Arrow before any is hashed, where equal values are equal keys. None where
        :meth:`entity_ids` would say None, or for one bytes key. A column may be a list or an
        Arrow array."""
        if not self.columns_encodable(columns):
            return None
        import pyarrow as pa  # not at import: a notebook reading a few keys needs no Arrow
        import pyarrow.compute as pc

        if len(self._encoders) > 1:  # equal serialized keys are equal keys
            serialized = self.serialized_keys(columns)
            if serialized is None:
                return None
            encoded = pc.dictionary_encode(serialized)
            return _digests(encoded.dictionary.to_pylist()), encoded.indices
        encoder = self._encoders[0]
        if encoder is _enc_bytes:
            return None
        arrow_type = pa.string() if encoder is _enc_string else pa.int64()
        try:
            column = columns[0]
            values = (pc.cast(column, arrow_type) if is_arrow(column)
                      else pa.array(column, type=arrow_type))
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            return None
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if arrow_type == pa.int64() and _all_distinct(values):
            # Most entity files name each entity once: a sort tells in ~10 ms per million,
            # where a hash table of every value costs 0.1-0.3 s. First appearances are then
            # the values themselves, and row i is distinct value i.
            import numpy as np

            return (self._hashed(values.to_pylist()),
                    pa.array(np.arange(len(values), dtype=np.int32)))  # as dictionary_encode's
        encoded = pc.dictionary_encode(values)
        return self._hashed(encoded.dictionary.to_pylist()), encoded.indices

    def _hashed(self, column: Sequence[Any]) -> list[str]:
        digest = mmh3.hash_bytes
        encoder = self._encoders[0]
        if encoder in _INT_BOUNDS:
            kind, pack = _FIXED_WIDTH[encoder]
            head = self._prefix + _PACK_U32(kind) + _PACK_U32(pack.size)
            return [digest(head + pack.pack(value)).hex() for value in column]
        head = self._prefix + _PACK_U32(_STRING if encoder is _enc_string else _BYTES)
        data = [value.encode("utf8") for value in column] if encoder is _enc_string else column
        return [digest(head + _PACK_U32(len(value)) + value).hex() for value in data]

    def entity_id(self, values: Sequence[Any]) -> str:
        """The hex MurmurHash3 x64-128 (seed 0) of the serialized key."""
        return str(mmh3.hash_bytes(self.serialize(values)).hex())


def _digests(serialized: Sequence[bytes]) -> list[str]:
    digest = mmh3.hash_bytes
    return [digest(key).hex() for key in serialized]


def _packed(values: Any, width: int) -> Any:
    """An Arrow int32 or int64 array (no nulls) as each value's little-endian bytes, from
    its own buffer: what ``struct.pack("<i"/"<q")`` makes of each value."""
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    fixed = pa.Array.from_buffers(pa.binary(width), len(values), [None, values.buffers()[1]],
                                  offset=values.offset)
    return fixed.cast(pa.binary())


def _arrow_encodable(column: Any, encoder: Callable[[Any], bytes]) -> bool:
    """An Arrow column's :meth:`EntityKeyEncoder.columns_encodable`: no nulls, a type
    whose every value the encoder takes (ints within range; text, which Arrow holds as
    valid UTF-8; binary for bytes keys)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if column.null_count:
        return False
    if encoder in _INT_BOUNDS:
        if not pa.types.is_integer(kind):
            return False
        if len(column) == 0:
            return True
        low, high = _INT_BOUNDS[encoder]
        extremes = pc.min_max(column).as_py()
        return bool(low <= extremes["min"] and extremes["max"] <= high)
    if encoder is _enc_string:
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                or pa.types.is_fixed_size_binary(kind))


def _all_distinct(values: Any) -> bool:
    """Whether an int64 Arrow array (no nulls) holds no value twice: one sort in numpy.
    False (not known) without numpy: the console ``pull`` runs pyarrow without it, and the
    caller's hash table then tells."""
    try:
        import numpy as np
    except ImportError:
        return False
    ordered = np.sort(values.to_numpy(zero_copy_only=False))
    return bool(len(ordered) < 2 or (ordered[1:] != ordered[:-1]).all())
