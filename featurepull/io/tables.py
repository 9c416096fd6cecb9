"""Feature rows as Arrow tables, and the one schema that tables typed apart can share.

`rows_to_table` is the single conversion from rows to Arrow: `write_rows` uses it for Parquet
output, so a table and a Parquet file of the same rows have the same columns and types:
    key columns and features  the type pyarrow infers from all of the column's values (an
                              all-None column is the null type);
    event_timestamp           timestamp[us, tz=UTC].
A column pyarrow cannot type (ints and strs, say) is an OutputError naming the column, the two
Python types and the rows holding them.

Each shard of a job is converted on its own, in whichever worker ran it, so shards can infer
different types for one column (all null in one, double in another). `unify_schemas` gives the
schema they can all be cast to, and `TableSink.write` casts each to it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from featurepull.arrow_columns import python_columns
from featurepull.io._columnar import columnar_table, typed_array
from featurepull.io._row_view import CHUNK_ROWS, OutputError, RowView, column_role

_TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
# What pyarrow raises for values it cannot put in one array (ArrowInvalid is a ValueError,
# ArrowTypeError a TypeError; ints beyond 64 bits raise OverflowError).
ARROW_VALUE_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)
# Text keeps such values only where the rows never become a table: a job stages Parquet parts.
_PULL_ONLY = " with `featurepull pull` (a job's shards are staged as Parquet)"


def rows_to_table(
    key_columns: dict[str, Any],
    rows: Sequence[tuple[Any, ...] | None],
    features: Sequence[str],
    *,
    source: str = "rows",
    first_row: int = 1,
) -> pa.Table:
    """The rows as an Arrow table: the columns and types `write_rows` gives a Parquet file.

    Arguments as for `write_rows`; `source` (a shard's name, say) starts every error message,
    which numbers the rows from `first_row` (a shard's first entity row in its job).
    A key column may also be an Arrow array (a shard's keys as stored): same table.
    """
    view = RowView(source, key_columns, rows, tuple(features))
    table = columnar_table(view)
    if table is not None:
        return table
    # The row-by-row path, whose messages name the row: key columns as Python values.
    view = RowView(source, dict(python_columns(key_columns)), rows, tuple(features), first_row)
    view.validate()
    schema = arrow_schema(view)
    return pa.Table.from_batches(list(arrow_batches(view, schema)), schema=schema)


def unify_schemas(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """The schema every one of `schemas` can be cast to, e.g. the shards of one output.

    The schemas must name the same columns in the same order. Per column: a null type takes
    the type another schema has; int64 and double become double, and lists and structs of
    them likewise (pyarrow's permissive promotion); time-zone-aware timestamps in different
    zones become UTC. Types that cannot share a column (string and int64) are an OutputError
    naming the column and the schema (numbered from 1) that brought the conflict.
    """
    if not schemas:
        raise ValueError("unify_schemas needs at least one schema")
    first = schemas[0]
    for number, schema in enumerate(schemas[1:], start=2):
        if schema.names != first.names:
            raise OutputError(
                f"schema {number} has the columns {schema.names}, but schema 1 has "
                f"{first.names}; tables written to one output need the same columns in the "
                "same order"
            )
    fields = [
        pa.field(name, _unify_column(name, [schema.field(index).type for schema in schemas]))
        for index, name in enumerate(first.names)
    ]
    return pa.schema(fields, metadata=first.metadata)


def widens_to(arrow_type: pa.DataType, target: pa.DataType) -> bool:
    """Whether `unify_schemas` could have made `target` out of `arrow_type`, e.g. int64 to
    double, null to anything; so a cast loses nothing but precision beyond 2**53."""
    if arrow_type == target:
        return True
    try:
        return bool(_unify_column("", [target, arrow_type]) == target)
    except OutputError:
        return False


def arrow_schema(view: RowView) -> pa.Schema:
    """The schema of the view's table: each column typed from all of its values."""
    return pa.schema([pa.field(name, _arrow_type(view, index)) for index, name in
                      enumerate(view.names)])


def arrow_batches(view: RowView, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The view's rows as record batches of at most CHUNK_ROWS rows, in order."""
    total = len(view.rows)
    for start in range(0, total, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, total)
        arrays = [
            _arrow_array(view, index, start, stop, field.type)
            for index, field in enumerate(schema)
        ]
        yield pa.record_batch(arrays, schema=schema)


def _unify_column(name: str, types: list[pa.DataType]) -> pa.DataType:
    types = _in_one_time_zone(types)
    unified = types[0]
    for number, arrow_type in enumerate(types[1:], start=2):
        try:
            merged = pa.unify_schemas(
                [pa.schema([(name, unified)]), pa.schema([(name, arrow_type)])],
                promote_options="permissive",
            )
        except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            before = "schema 1" if number == 2 else f"schemas 1-{number - 1}"
            raise OutputError(
                f"column {name!r} is {arrow_type} in schema {number} but {unified} in "
                f"{before} ({exc}); a column needs one type in every table, so convert its "
                "values to one type where the rows are made"
            ) from exc
        unified = merged.field(0).type
    return unified


def _in_one_time_zone(types: list[pa.DataType]) -> list[pa.DataType]:
    """Aware timestamps in different zones as UTC: the same instants, and one column type."""
    zones = {t.tz for t in types if pa.types.is_timestamp(t)}
    if len(zones) < 2 or None in zones:
        return types  # one zone already, or naive timestamps, which have no instant to keep
    return [pa.timestamp(t.unit, tz="UTC") if pa.types.is_timestamp(t) else t for t in types]


def _arrow_type(view: RowView, index: int) -> pa.DataType:
    """The column's Arrow type, inferred from all of its values (chunks must share one)."""
    if index == len(view.key_columns):
        return _TIMESTAMP_TYPE
    values = view.column(index, 0, len(view.rows))
    try:
        arrow_type: pa.DataType = pa.infer_type(values)
    except ARROW_VALUE_ERRORS as exc:
        raise _type_conflict(view, index, values, 0, exc) from exc
    return arrow_type


def _arrow_array(
    view: RowView, index: int, start: int, stop: int, arrow_type: pa.DataType
) -> pa.Array:
    values = view.column(index, start, stop)
    try:
        return typed_array(values, arrow_type)
    except ARROW_VALUE_ERRORS as exc:
        # Inference looks at types, not every value: a str among ints fails only here.
        raise _type_conflict(view, index, values, start, exc) from exc


def _type_conflict(
    view: RowView, index: int, values: list[Any], offset: int, exc: Exception
) -> OutputError:
    offset += view.first_row - 1  # the number of rows before values[0], in messages
    big = _first_wide_int(values)
    if big is not None:
        # A DynamoDB number has up to 38 digits; Arrow integers have 64 bits.
        at, value = big
        return OutputError(
            f"{view.source}: {column_role(view.names, index)} {view.names[index]!r} holds "
            f"{value} (row {offset + at + 1}), an integer too large for 64 bits, which Parquet "
            f"cannot store; write .jsonl or .csv, which keep every digit{_PULL_ONLY}"
        )
    detail = _describe_bad_values(values, offset) or "has values that cannot share one column"
    return OutputError(
        f"{view.source}: {column_role(view.names, index)} {view.names[index]!r} {detail} "
        f"({exc}); an Arrow or Parquet column holds one type, so make the values one type "
        f"or write .jsonl or .csv{_PULL_ONLY}"
    )


def _describe_bad_values(values: list[Any], offset: int) -> str | None:
    """Name the first value pyarrow cannot store at all, or cannot store beside the first one."""
    present = ((at, value) for at, value in enumerate(values) if value is not None)
    first = next(present, None)
    if first is None:
        return None
    first_at, first_value = first
    for at, value in itertools.chain([first], present):
        if at != first_at and type(value) is type(first_value) and _is_scalar(value):
            continue  # same scalar type as the first: compatible, and skipping keeps this cheap
        if not _arrow_accepts([value]):
            return f"holds a value of type {type(value).__name__} (row {offset + at + 1})"
        if not _arrow_accepts([first_value, value]):
            return (
                f"mixes {type(first_value).__name__} (row {offset + first_at + 1}) and "
                f"{type(value).__name__} (row {offset + at + 1})"
            )
    return None


def _first_wide_int(values: list[Any]) -> tuple[int, int] | None:
    """The first int beyond both int64 and uint64, and where it is."""
    for at, value in enumerate(values):
        if type(value) is int and not -(2**63) <= value < 2**64:
            return at, value
    return None


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, list | tuple | dict)


def _arrow_accepts(values: list[Any]) -> bool:
    try:
        pa.array(values)
    except ARROW_VALUE_ERRORS:
        return False
    return True
