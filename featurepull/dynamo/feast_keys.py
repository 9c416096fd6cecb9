"""Feast entity keys: join-key values → Feast's entity key serialization → MurmurHash3
x64-128 hex, the ``entity_id`` Feast's DynamoDB online store writes.

Versions 2 and 3 of Feast's format are supported; 3 is Feast's default. Join keys are sorted
by name before encoding, as Feast does, so the caller's column order does not matter.
"""

from __future__ import annotations

import re
import struct
import sys
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, cast

import mmh3

from featurepull.arrow_columns import is_arrow
from featurepull.dynamo.errors import EntityKeyError

# Feast ValueType enum numbers of the join-key types it can serialize.
_STRING, _BYTES, _INT32, _INT64, _UNIX_TIMESTAMP = 2, 1, 3, 4, 8
KEY_TYPES = ("int64", "int32", "string", "bytes", "unix_timestamp")
# How version 3 packs a join key's name length: UTF-8 bytes (recent Feast) or characters.
NAME_LENGTHS = ("bytes", "chars")
_INT32_RANGE = (-(2**31), 2**31 - 1)
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
_INT64_RANGE = (-(2**63), 2**63 - 1)

_PACK_U32 = struct.Struct("<I").pack
_PACK_I32 = struct.Struct("<i").pack
_PACK_I64 = struct.Struct("<q").pack
# Feast packs integers little-endian; whole columns are hashed from Arrow's own buffers.
_LITTLE_ENDIAN = sys.byteorder == "little"
# Rows hashed at a time while their distinct values are being found (_ids_while_encoding):
# _murmur's chunk, so a slice is hashed as the whole column would be.
_ID_CHUNK = 1 << 16


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
# What a column of each join-key type is hashed from: the Python type every value of a list
# must have, and the Arrow type (by name: pyarrow is imported on first use).
_PYTHON_TYPES: dict[Callable[[Any], bytes], type] = {
    _enc_int64: int, _enc_int32: int, _enc_ts: int, _enc_string: str, _enc_bytes: bytes}
_ARROW_TYPES: dict[Callable[[Any], bytes], str] = {
    _enc_int64: "int64", _enc_int32: "int32", _enc_ts: "int64", _enc_string: "string",
    _enc_bytes: "binary"}
# Fixed-width join keys: the ValueType number and the struct of the value's bytes.
_FIXED_WIDTH: dict[Callable[[Any], bytes], tuple[int, struct.Struct]] = {
    _enc_int64: (_INT64, struct.Struct("<q")), _enc_int32: (_INT32, struct.Struct("<i")),
    _enc_ts: (_UNIX_TIMESTAMP, struct.Struct("<q"))}


class EntityKeyEncoder:
    """Turns rows of join-key values into Feast ``entity_id`` strings."""

    def __init__(self, key_types: Mapping[str, str], version: int = 3,
                 name_length: str | None = None) -> None:
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
        if name_length not in (None, *NAME_LENGTHS):
            raise EntityKeyError(f"join_key_name_length {name_length!r} is not one of "
                                 f"{', '.join(NAME_LENGTHS)}")
        parts = [_PACK_U32(len(self.names))] if version >= 3 else []
        for name in self.names:
            encoded = name.encode("utf8")
            parts.append(_PACK_U32(_STRING))
            if version >= 3:
                parts.append(_PACK_U32(_name_length(name, encoded, name_length)))
            parts.append(encoded)
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
        surely encodes, checked a column at a time in C-speed passes instead of encoding each
        key. False means "not sure": encode row by row to find the row at fault."""
        return self._arrow_columns(columns, convert=False) is not None

    def _arrow_columns(self, columns: Sequence[Sequence[Any]], convert: bool = True
                       ) -> list[Any] | None:
        """The join-key columns as Arrow arrays of the keys' own types (int64, int32,
        string, binary; one chunk, no nulls) when every row surely encodes, else None (see
        :meth:`columns_encodable`). A list vouches by the exact type of every value (no bool,
        None, float or str for an int) and converts in Arrow, which refuses what its type
        cannot hold (an int beyond int64, a lone surrogate); an Arrow column by its type and
        null count, and for ints its min and max (and is converted only if ``convert``)."""
        import pyarrow as pa  # not at import: a notebook reading a few keys needs no Arrow

        arrays = []
        for column, encoder in zip(columns, self._encoders, strict=True):
            kind = pa.type_for_alias(_ARROW_TYPES[encoder])
            if is_arrow(column):
                if not _arrow_encodable(column, encoder):
                    return None
                values = cast(Any, column).cast(kind) if convert else column
            else:
                if set(map(type, column)) - {_PYTHON_TYPES[encoder]}:
                    return None
                try:
                    values = pa.array(column, kind)
                except (pa.ArrowException, OverflowError, UnicodeEncodeError):
                    return None
            if convert and isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            arrays.append(values)
        return arrays

    def entity_ids(self, columns: Sequence[Sequence[Any]]) -> list[str] | None:
        """The entity ids of whole join-key columns at once when :meth:`columns_encodable`
        vouches for them (the common case, without a per-row type check); None otherwise."""
        arrays = self._arrow_columns(columns)
        return None if arrays is None or not _LITTLE_ENDIAN else self._ids(arrays)

    def _serialized_keys(self, arrays: Sequence[Any]) -> Any:
        """Every row's :meth:`serialize`, as one Arrow binary array built a column at a time
        (each value's type and length fields, then its bytes, joined in Arrow); ``arrays``
        from :meth:`_arrow_columns`, on a little-endian machine, as Feast packs integers."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts: list[Any] = [pa.scalar(self._prefix, pa.binary())]
        for values, encoder in zip(arrays, self._encoders, strict=True):
            if encoder in _FIXED_WIDTH:
                kind, pack = _FIXED_WIDTH[encoder]
                parts += [pa.scalar(_PACK_U32(kind) + _PACK_U32(pack.size), pa.binary()),
                          _packed(values, pack.size)]
            else:
                data = values.cast(pa.binary())
                kind = _STRING if encoder is _enc_string else _BYTES
                lengths = pc.cast(pc.binary_length(data), pa.int32())
                parts += [pa.scalar(_PACK_U32(kind), pa.binary()), _packed(lengths, 4), data]
        return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))

    def _ids(self, arrays: Sequence[Any]) -> list[str]:
        """The entity id of every row of ``arrays`` (from :meth:`_arrow_columns`): one int
        join key hashed a column at a time (featurepull.dynamo._murmur), other keys
        serialized in Arrow and hashed one by one in mmh3."""
        encoder = self._encoders[0]
        if len(arrays) == 1 and encoder in _FIXED_WIDTH:
            from featurepull.dynamo._murmur import fixed_width_hex

            kind, pack = _FIXED_WIDTH[encoder]
            head = self._prefix + _PACK_U32(kind) + _PACK_U32(pack.size)
            return fixed_width_hex(head, _as_uint64(arrays[0]), pack.size)
        digest = mmh3.hash_bytes
        return [digest(key).hex() for key in self._serialized_keys(arrays).to_pylist()]

    def unique_entity_ids(self, columns: Sequence[Sequence[Any]], ahead: int = 0
                          ) -> tuple[Sequence[str], Any] | None:
        """The distinct entity ids of one int or text join-key column, or of several join
        keys of any type, in the order they first appear, and for each row the index of its
        id (an Arrow array): values (several keys: their serialized keys) are de-duplicated
        in Arrow before any is hashed, where equal values are equal keys. None where
        :meth:`entity_ids` would say None, or for one bytes key. A column may be a list or an
        Arrow array. With ``ahead``, the ids of one int key's distinct values past the first
        ``ahead`` are hashed as the read goes (a :class:`KeysAhead`)."""
        if len(self._encoders) == 1 and self._encoders[0] is _enc_bytes:
            return None
        arrays = self._arrow_columns(columns)
        if arrays is None or not _LITTLE_ENDIAN:
            return None
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(arrays) > 1:  # equal serialized keys are equal keys
            encoded = pc.dictionary_encode(self._serialized_keys(arrays))
            digest = mmh3.hash_bytes
            return [digest(key).hex() for key in encoded.dictionary.to_pylist()], encoded.indices
        values = arrays[0]
        # Only a fixed-width (int) key hashes ahead: a text key's ids are hashed in Python.
        ahead = ahead if self._encoders[0] in _FIXED_WIDTH else 0
        if pa.types.is_integer(values.type) and _all_distinct(values):
            # Most entity files name each entity once: a sort tells in ~10 ms per million,
            # where a hash table of every value costs 0.1-0.3 s. First appearances are then
            # the values themselves, and row i is distinct value i.
            import numpy as np

            return (self._ids_ahead(values, ahead),
                    pa.array(np.arange(len(values), dtype=np.int32)))  # as dictionary_encode's
        if len(values) <= _ID_CHUNK:
            encoded = pc.dictionary_encode(values)
            return self._ids_ahead(encoded.dictionary, ahead), encoded.indices
        return self._ids_while_encoding(values, ahead)

    def _ids_ahead(self, values: Any, ahead: int) -> Sequence[str]:
        """:meth:`_ids` of one column; of one int key's values past the first ``ahead``
        (when some are), as the read goes (:meth:`_keys_ahead`)."""
        if not ahead or len(values) <= ahead:
            return self._ids([values])
        return self._keys_ahead(values, self._ids([values.slice(0, ahead)]))

    def _keys_ahead(self, values: Any, first: list[str]) -> Sequence[str]:
        """The ids of ``values``, ``first`` those of the first, the rest hashed as they are
        read (a :class:`~featurepull.dynamo.keys_ahead.KeysAhead`)."""
        from featurepull.dynamo.keys_ahead import KeysAhead

        def hash_range(start: int, count: int) -> list[Hashable]:
            return cast("list[Hashable]", self._ids([values.slice(start, count)]))

        return cast("Sequence[str]",
                    KeysAhead(len(values), cast("list[Hashable]", first), hash_range))

    def _ids_while_encoding(self, values: Any, ahead: int = 0) -> tuple[Sequence[str], Any]:
        """``dictionary_encode(values)``'s distinct values' ids and its indices. The
        encoding (a hash table of every value: ~0.1-0.2 s per million) runs on a thread,
        where Arrow holds no GIL, while this thread hashes every row a chunk at a time: most
        entity files name each entity once, and then the rows' ids are the distinct values'
        ids (first appearances in order). Once the encoding has found a value twice, the
        rows are hashed no further and its distinct values are hashed instead. With
        ``ahead`` (one int key), the rows or values not hashed once the encoding is done and
        ``ahead`` of them are, are hashed as the read goes (:meth:`_keys_ahead`)."""
        encoding = _Encoding(values)
        encoding.start()
        ids: list[str] = []
        for start in range(0, len(values), _ID_CHUNK):
            if not encoding.is_alive() and (not encoding.all_distinct()
                                            or (ahead and len(ids) >= ahead)):
                break
            ids += self._ids([values.slice(start, _ID_CHUNK)])
        encoded = encoding.result()
        if not encoding.all_distinct():
            return self._ids_ahead(encoded.dictionary, ahead), encoded.indices
        if len(ids) < len(values):
            return self._keys_ahead(values, ids), encoded.indices
        return ids, encoded.indices

    def entity_id(self, values: Sequence[Any]) -> str:
        """The hex MurmurHash3 x64-128 (seed 0) of the serialized key."""
        return str(mmh3.hash_bytes(self.serialize(values)).hex())


class _Encoding(threading.Thread):
    """``pyarrow.compute.dictionary_encode`` of an Arrow array on a thread of its own."""

    def __init__(self, values: Any) -> None:
        super().__init__(name="featurepull-distinct-keys", daemon=True)
        self.values = values
        self.encoded: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        import pyarrow.compute as pc

        try:
            self.encoded = pc.dictionary_encode(self.values)
        except BaseException as exc:  # raised in the caller's thread by result()
            self.error = exc

    def result(self) -> Any:
        """The encoded array, once the thread is done (its error raised here)."""
        self.join()
        if self.error is not None:
            raise self.error
        return self.encoded

    def all_distinct(self) -> bool:
        """Whether no value repeats (the thread done, without an error)."""
        return len(self.result().dictionary) == len(self.values)


def _name_length(name: str, encoded: bytes, convention: str | None) -> int:
    """The length version 3 packs before a join key's name. Older Feast packed ``len()`` of
    the str, recent Feast (0.67 at least) its UTF-8 bytes: the two differ only for a
    non-ASCII name, and nothing in a table tells which Feast wrote it, so such a name needs
    ``join_key_name_length``."""
    if len(encoded) == len(name) or convention == "bytes":
        return len(encoded)
    if convention == "chars":
        return len(name)
    raise EntityKeyError(
        f"join key {name!r} is not ASCII: Feast's entity key serialization version 3 packs "
        f"its length as {len(encoded)} UTF-8 bytes (recent Feast) or as {len(name)} "
        "characters (older Feast), so its entity ids differ, and featurepull cannot tell "
        "which Feast wrote the table; set join_key_name_length to \"bytes\" (recent "
        "Feast; 0.67 does) or \"chars\" (older Feast): FEATUREPULL_JOIN_KEY_NAME_LENGTH, "
        "the config file, or the online_store of a feature_store.yaml using featurepull's "
        "Feast store")


def _packed(values: Any, width: int) -> Any:
    """An Arrow int32 or int64 array (no nulls) as each value's little-endian bytes, from
    its own buffer: what ``struct.pack("<i"/"<q")`` makes of each value."""
    import pyarrow as pa

    fixed = pa.Array.from_buffers(pa.binary(width), len(values), [None, values.buffers()[1]],
                                  offset=values.offset)
    return fixed.cast(pa.binary())


def _as_uint64(values: Any) -> Any:
    """An Arrow int64 or int32 array (no nulls) as uint64 numbers of the same bytes: an int64
    reread in place, an int32 reread as uint32 and zero-extended."""
    import pyarrow as pa

    unsigned = pa.uint64() if values.type.bit_width == 64 else pa.uint32()
    reread = pa.Array.from_buffers(unsigned, len(values), [None, values.buffers()[1]],
                                   offset=values.offset)
    return reread.cast(pa.uint64())


def _arrow_encodable(column: Any, encoder: Callable[[Any], bytes]) -> bool:
    """An Arrow column's :meth:`EntityKeyEncoder.columns_encodable`: no nulls, a type
    whose every value the encoder takes (ints within range; text, which Arrow holds as
    valid UTF-8; binary for bytes keys)."""
    import pyarrow as pa

    from featurepull import arrow_compute as pc  # a submit's check: no pyarrow.compute

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
