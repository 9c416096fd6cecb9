"""Rows to an Arrow table a column at a time: the found rows typed and converted once, then
put in output order by one `take` with an index array (null where an entity has no item).

Rows a read kept as columns (``featurepull.dynamo.found.FoundRows``: its ``columns`` in the
order the items were found, and ``found_index()``) are taken as they are, with no tuple made.

The table is the one `featurepull.io.tables` builds value by value (same columns, same types:
pyarrow infers a column's type from the same non-null values either way), at a fraction of
the cost when most rows are missing or repeated. Anything it cannot vouch for — a malformed
row, a timestamp not in UTC, a column pyarrow cannot type — returns None, and the caller
takes the value-by-value path, whose messages name the row at fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featurepull.arrow_columns import has_raw_times
from featurepull.io._row_view import RowView

_TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
_ARROW_VALUE_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)


def utc_timestamps(column: Any) -> Any:
    """A :class:`TimeColumn` as an Arrow timestamp[us, UTC] array made from its ``raw``
    (the values its datetimes convert to), or None where it has none or Arrow cannot parse
    a text (the caller converts the datetimes). Arrow parses fewer shapes of ISO text than
    ``datetime.fromisoformat`` (no week dates, no comma, no other separator than T or a
    space, at most 6 digits of a second): each it parses, it reads as Python does."""
    if not has_raw_times(column):
        return None
    if column.kind == "seconds":  # within the years 1 to 9999: their datetimes were made
        return pa.array(column.raw, type=pa.timestamp("s")).cast(_TIMESTAMP_TYPE)
    try:
        return pa.array(column.raw).cast(_TIMESTAMP_TYPE)
    except pa.ArrowInvalid:
        return None


def found_columns(view: RowView) -> tuple[list[Any], pa.Array | None] | None:
    """The found rows' values by column (event times first, then each feature), and each
    output row's place among them (null where it has no item; None when every row has one);
    None when only the row-by-row path can say what is wrong with the view."""
    rows = view.rows
    names = view.names
    if len(set(names)) != len(names) or any(
            len(values) != len(rows) for values in view.key_columns.values()):
        return None
    width = 1 + len(view.features)
    columns: list[Any] | None = getattr(rows, "columns", None)
    if columns is not None and hasattr(rows, "found_index"):
        if len(columns) != width:
            return None
        found_index: pa.Array | None = rows.found_index()
    else:
        found = [row for row in rows if row is not None]
        if any(len(row) != width for row in found):
            return None
        columns = list(zip(*found, strict=True)) if found else [()] * width
        found_index = _found_index(rows) if len(found) != len(rows) else None
    if not (has_raw_times(columns[0]) or _all_utc(columns[0])):
        return None
    return columns, found_index


class ColumnarParts:
    """The view's table as its parts: the key columns, the found rows' typed columns and
    each output row's place among them; rows [start, stop) are made on demand (one `take`
    of the found rows), so that a writer can encode rows while the next ones are made."""

    def __init__(self, names: list[str], keys: list[Any], found_table: pa.Table,
                 found_index: pa.Array | None) -> None:
        self.names = names
        self.keys = keys
        self.found_table = found_table
        self.found_index = found_index
        self.schema = pa.schema([pa.field(name, column.type) for name, column in
                                 zip(names, [*keys, *found_table.columns], strict=True)])

    def rows(self, start: int, count: int) -> pa.Table:
        """Output rows [start, start + count) as a table of `schema`."""
        found = (self.found_table.slice(start, count) if self.found_index is None
                 else self.found_table.take(self.found_index.slice(start, count)))
        keys = [values.slice(start, count) for values in self.keys]
        return pa.table([*keys, *found.columns], names=self.names)

    def table(self) -> pa.Table:
        """Every output row."""
        found = (self.found_table if self.found_index is None
                 else self.found_table.take(self.found_index))
        return pa.table([*self.keys, *found.columns], names=self.names)


def columnar_parts(view: RowView) -> ColumnarParts | None:
    """The view's table built by column, as parts, or None when only the row-by-row path
    can say what is wrong (the caller runs it)."""
    split = found_columns(view)
    if split is None:
        return None
    columns, found_index = split
    names = view.names
    try:
        stamps = utc_timestamps(columns[0])
        arrays = [stamps if stamps is not None else pa.array(columns[0], type=_TIMESTAMP_TYPE)]
        arrays += [typed_column(values if isinstance(values, list) else list(values))
                   for values in columns[1:]]
        keys = [_typed_keys(values) for values in view.key_columns.values()]
    except _ARROW_VALUE_ERRORS:
        return None
    return ColumnarParts(names, keys, pa.table(arrays, names=names[len(keys):]), found_index)


def columnar_table(view: RowView) -> pa.Table | None:
    """The view's table built by column, or None when only the row-by-row path can say
    what is wrong (the caller runs it)."""
    parts = columnar_parts(view)
    return None if parts is None else parts.table()


def typed_column(values: list[Any]) -> pa.Array:
    """A found column as the table types it (and so the text outputs, a column at a time)."""
    stamps = utc_timestamps(values)  # times the answer held as texts or Unix seconds
    if stamps is not None:
        return stamps
    # Two steps, as the row path does: infer from every value, then convert to that type.
    return typed_array(values, pa.infer_type(values))


def typed_array(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """`values` as an array of `arrow_type`. An int among floats (a DynamoDB number that
    happens to be integral) goes into a double column when the double's shortest text is
    the same number, 1.5E+17 or 6.02214076E+23 (pyarrow refuses any int past 2**53); one
    it would change, 2**53 + 1, still raises ArrowInvalid."""
    try:
        return pa.array(values, type=arrow_type)
    except pa.ArrowInvalid:
        if arrow_type != pa.float64():
            raise
    return pa.array([_same_double(value) if type(value) is int else value
                     for value in values], type=arrow_type)


def _same_double(value: int) -> float | int:
    """The int as a float when that float's text is the same number, else as it is."""
    as_float = float(value)  # OverflowError past 1.8e308, as pyarrow's own errors
    if as_float == value or Decimal(repr(as_float)) == value:
        return as_float
    return value


# Key column types that are what pyarrow infers from the column's Python values.
_AS_INFERRED = (pa.int64(), pa.string(), pa.binary(), pa.float64(), pa.bool_(), pa.null())


def _typed_keys(values: Any) -> pa.Array | pa.ChunkedArray:
    """A key column as `typed_column` types it; an Arrow column (a shard's keys, as stored) is
    taken as it is where its type is the one inference would give, ints widened to int64
    as inference widens them; anything else goes through its Python values."""
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        return typed_column(values)
    if values.type in _AS_INFERRED:
        return values
    if pa.types.is_integer(values.type):
        try:
            return values.cast(pa.int64())
        except pa.ArrowInvalid:  # a uint64 beyond int64: inference says uint64
            pass
    return typed_column(values.to_pylist())


def zones(stamps: Iterable[Any]) -> set[Any]:
    """The zones (tzinfo) of the datetimes among the Nones, found at C speed (zones equal as
    `datetime.timezone`s are, one offset, are one): the reader's times hold one, UTC."""
    return set(map(attrgetter("tzinfo"), filter(None, stamps)))


_UTC_KINDS = {datetime, type(None)}


def _all_utc(stamps: Sequence[Any]) -> bool:
    """Whether every timestamp is None or a datetime in UTC (what the reader's layouts
    make), checked at C speed; anything else is checked row by row."""
    return set(map(type, stamps)) <= _UTC_KINDS and zones(stamps) <= {UTC}


def _found_index(rows: Any) -> pa.Array:
    """For each row, its place among the found rows; null where the row is None."""
    present = pa.array([row is not None for row in rows], type=pa.bool_())
    place = pc.subtract(pc.cumulative_sum(pc.cast(present, pa.int64())), 1)
    return pc.if_else(present, place, pa.scalar(None, pa.int64()))
