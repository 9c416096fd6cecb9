"""Columns that may be Arrow arrays (an entity file's key columns as read, a shard's keys
as stored) or Python lists: the one test of which it is, made without importing pyarrow (a
notebook reading a few keys needs no Arrow), shared by the read engine and the writers.
A leaf module: it imports only the standard library, so every layer may use it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeGuard


def is_arrow(column: Any) -> bool:
    """Whether ``column`` is an Arrow array or chunked array."""
    return hasattr(column, "to_pylist") and hasattr(column, "null_count")


def python_columns(columns: Mapping[str, Any]) -> Mapping[str, Any]:
    """The columns as Python lists, an Arrow one converted: for the paths that look at each
    value (and name the row of a bad one). The same mapping when none is Arrow."""
    if not any(map(is_arrow, columns.values())):
        return columns
    return {name: column.to_pylist() if is_arrow(column) else column
            for name, column in columns.items()}


# What an answer held for a column of times, kept beside the datetimes decoded from it:
# ISO 8601 texts whose zone is UTC ("iso"), or Unix seconds ("seconds").
TimeKind = Literal["iso", "seconds"]


class TimeColumn(list[Any]):
    """Aware UTC datetimes, as a list, and what the answer held for them (``raw``, in the
    same order; ``kind`` says which): the Arrow output makes its timestamp column from
    ``raw`` with one cast, where converting the datetimes would cost a Python call per value
    (pyarrow asks each its UTC offset). Made by :func:`time_column`."""

    __slots__ = ("kind", "raw")
    raw: list[Any]
    kind: TimeKind


def time_column(stamps: Iterable[Any], raw: list[Any], kind: TimeKind) -> TimeColumn:
    """The datetimes ``stamps`` with ``raw``, what the answer held for them."""
    column = TimeColumn(stamps)  # list's own constructor: no __init__ in Python
    column.raw = raw
    column.kind = kind
    return column


def extend_column(kept: list[Any], values: list[Any]) -> list[Any]:
    """``kept`` with ``values`` after it (a read's found column grown by one answer's):
    time columns of one kind stay a :class:`TimeColumn`, anything else a plain list."""
    if type(values) is TimeColumn and values:
        if not kept:
            return time_column(values, list(values.raw), values.kind)
        if type(kept) is TimeColumn and kept.kind == values.kind:
            kept.extend(values)
            kept.raw.extend(values.raw)
            return kept
    if type(kept) is TimeColumn and values:
        kept = list(kept)
    kept.extend(values)
    return kept


def has_raw_times(column: Any) -> TypeGuard[TimeColumn]:
    """Whether ``column`` is a :class:`TimeColumn` (its datetimes all UTC) with a value (no
    value says no type: pyarrow makes an empty column the null type)."""
    return isinstance(column, TimeColumn) and len(column) > 0
