"""Entity rows from a Parquet file: logical types come from the Arrow schema."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull import arrow_compute as pc
from featurepull.io._entity_table import (
    INT64_MAX,
    EntityFileError,
    EntityStream,
    EntityTable,
    check_required_columns,
    check_unique,
    empty_key_message,
)

_BATCH_ROWS = 65_536


def read_parquet(stream: BinaryIO, source: str, required: tuple[str, ...]) -> EntityTable:
    """Read a Parquet entity file in batches; the typing rules are in `featurepull.io.entities`."""
    return stream_parquet(stream, source, required).table()


def stream_parquet(stream: BinaryIO, source: str, required: tuple[str, ...] = ()
                   ) -> EntityStream:
    """The file as an EntityStream: types from its schema, rows a batch at a time, each
    checked as it is read (a required column's empties, a uint64 beyond int64)."""
    try:
        # pre_buffer (pyarrow's default) caches every row group's column chunks that one
        # iter_batches reads until the iteration ends: memory would grow with the file
        # (~4 bytes per int64 key), where a batch at a time is the point of streaming.
        parquet = pq.ParquetFile(stream, pre_buffer=False)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise EntityFileError(_unreadable_parquet_message(source, exc)) from None
    check_unique(source, schema.names)
    check_required_columns(source, schema.names, required)
    types = _parquet_types(source, schema, required)
    if parquet.metadata.num_rows == 0:
        raise EntityFileError(f"{source} has no entity rows (a schema and 0 rows)")
    # Only these columns need a look at every value: the others are taken as they are.
    checked = {name for name in types if name in required or _is_uint64(schema.field(name).type)}

    def batches(names: Sequence[str]) -> Iterator[dict[str, list[Any]]]:
        try:
            offset = 0
            # One thread: Arrow's threads would read the Python file object, calling back
            # into Python (see featurepull.io._arrow_file); this reads on the caller's.
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=list(names),
                                              use_threads=False):
                values = {name: _arrow_values(batch.column(name)) for name in names}
                for name in [name for name in names if name in checked]:
                    _check_parquet_values(source, name, values[name], offset, name in required)
                yield values
                offset += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise EntityFileError(_unreadable_parquet_message(source, exc)) from None

    def arrow_batches(names: Sequence[str]) -> Iterator[dict[str, Any]]:
        # The same batches and checks as `batches`, each column as an Arrow array of its
        # logical type: the checks run on the column unless it may fail them, and then on
        # its values, for the exact message. A column that does not cast (a uint64 beyond
        # int64) is one of the checked ones, and its check refuses it.
        try:
            offset = 0
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=list(names),
                                               use_threads=False):  # as `batches`
                arrays = {name: _logical_array(batch.column(name), types[name])
                          for name in names}
                for name in [name for name in names if name in checked]:
                    array = arrays[name]
                    if array is None or (name in required and not _all_present(array)):
                        values = _arrow_values(batch.column(name))
                        _check_parquet_values(source, name, values, offset, name in required)
                yield arrays
                offset += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise EntityFileError(_unreadable_parquet_message(source, exc)) from None

    return EntityStream(source, types, parquet.metadata.num_rows, batches, arrow_batches)


_LOGICAL_ARROW_TYPES = {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(),
                        "bytes": pa.binary(), "float": pa.float64(), "bool": pa.bool_(),
                        "null": pa.null()}


def _logical_array(array: Any, logical: str) -> Any:
    """A column as an Arrow array of its logical type (what `pa.array` makes of its
    values); None when a value does not fit it (a uint64 beyond int64)."""
    try:  # a dictionary-encoded column is decoded by the cast
        return array.cast(_LOGICAL_ARROW_TYPES[logical])
    except pa.ArrowInvalid:
        return None


def _all_present(array: Any) -> bool:
    """Whether a required key column has no null and no empty text or bytes."""
    if array.null_count:
        return False
    if len(array) and (pa.types.is_string(array.type) or pa.types.is_binary(array.type)):
        return bool(pc.min(pc.binary_length(array)).as_py() > 0)
    return True


def _parquet_types(source: str, schema: Any, required: tuple[str, ...]) -> dict[str, str]:
    """The logical type of each column that can hold entity keys, in schema order."""
    types: dict[str, str] = {}
    skipped: list[str] = []
    for field in schema:
        logical = _arrow_logical_type(field.type)
        if logical is not None:
            types[field.name] = logical
        elif field.name in required:
            raise EntityFileError(
                f"{source}: column {field.name!r} has Arrow type {field.type}, which cannot hold "
                "entity keys; cast it to an integer, string, binary, float or bool column"
            )
        else:
            skipped.append(f"{field.name} ({field.type})")
    if not types:
        raise EntityFileError(
            f"{source}: no column can hold entity keys (found {', '.join(skipped)}); "
            "entity keys must be integer, string, binary, float or bool columns"
        )
    return types


def _arrow_logical_type(arrow_type: Any) -> str | None:
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_int32(t):
        return "int32"
    if pa.types.is_int64(t) or pa.types.is_unsigned_integer(t):
        return "int64"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    checks = {"float": pa.types.is_floating, "bool": pa.types.is_boolean, "null": pa.types.is_null}
    return next((name for name, check in checks.items() if check(t)), None)


def _is_uint64(arrow_type: Any) -> bool:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(pa.types.is_uint64(arrow_type))


def _arrow_values(array: Any) -> list[Any]:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_floating(array.type):
        array = array.cast(pa.float64())  # float16 would come back as numpy scalars
    values: list[Any] = array.to_pylist()
    return values


def _check_parquet_values(
    source: str, name: str, values: list[Any], offset: int, required: bool
) -> None:
    for index, value in enumerate(values):
        if required and value in (None, "", b""):
            raise EntityFileError(empty_key_message(source, f"row {offset + index + 1}", name))
        if isinstance(value, int) and value > INT64_MAX:  # only a uint64 can get here
            raise EntityFileError(
                f"{source}: row {offset + index + 1}: column {name!r} value {value} does not fit "
                "in int64; store the column as int64 or string"
            )


def _unreadable_parquet_message(source: str, exc: Exception) -> str:
    return (
        f"{source}: cannot read it as Parquet ({exc}); check that it is a complete Parquet "
        "file, or give it the extension of its real format"
    )
