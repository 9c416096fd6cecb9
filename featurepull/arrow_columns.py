"""Columns that may be Arrow arrays (an entity file's key columns as read, a shard's keys
as stored) or Python lists: the one test of which it is, made without importing pyarrow (a
notebook reading a few keys needs no Arrow), shared by the read engine and the writers.
A leaf module: it imports only the standard library, so every layer may use it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
