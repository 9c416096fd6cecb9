"""The Arrow compute functions that type and check an entity file's keys (CSV; Parquet;
a Feast join key's range), called as `pyarrow.compute` calls them (`call_function`, with
the options its wrappers would pass) but without importing it: `pyarrow.compute`'s import
builds a Python wrapper, a signature and a docstring for each of Arrow's ~300 functions
(~190 M instructions, a tenth of a submit's work before its first shard is sent). The
functions themselves are Arrow's, in C++: `pyarrow._compute` holds them, and
`pyarrow.compute` is only their Python face.

Each is named as in `pyarrow.compute` (`from featurepull import arrow_compute as pc`).
What pyarrow itself does through `pyarrow.compute` (`Array.cast`, `.filter`,
`.drop_null`, ...) would import it: the entity readers call these instead
(`tests/test_imports.py`: a submit does not import it before its first shard).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pyarrow._compute import CastOptions, MatchSubstringOptions, call_function


def cast(values: Any, target_type: pa.DataType) -> Any:
    """A safe cast (`pyarrow.compute.cast`'s default)."""
    return call_function("cast", [values], CastOptions.safe(target_type))


def match_substring(values: Any, pattern: str) -> Any:
    return call_function("match_substring", [values], MatchSubstringOptions(pattern))


def match_substring_regex(values: Any, pattern: str) -> Any:
    return call_function("match_substring_regex", [values], MatchSubstringOptions(pattern))


# Arrow's defaults where pyarrow.compute is given no options: aggregates skip nulls (sum
# of no value is null), a null in filter's mask drops its value.
def any(values: Any) -> Any:
    return call_function("any", [values])


def all(values: Any) -> Any:
    return call_function("all", [values])


def sum(values: Any) -> Any:
    return call_function("sum", [values])


def min(values: Any) -> Any:
    return call_function("min", [values])


def min_max(values: Any) -> Any:
    return call_function("min_max", [values])


def binary_length(values: Any) -> Any:
    return call_function("binary_length", [values])


def equal(left: Any, right: Any) -> Any:
    return call_function("equal", [left, right])


def is_null(values: Any) -> Any:
    return call_function("is_null", [values])


def and_(left: Any, right: Any) -> Any:
    return call_function("and", [left, right])


def filter(values: Any, mask: Any) -> Any:
    return call_function("filter", [values, mask])


def drop_null(values: Any) -> Any:
    return call_function("drop_null", [values])
