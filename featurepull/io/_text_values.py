"""How feature values become text in the CSV and JSONL sinks.

bytes become base64 and datetimes ISO 8601 (with their UTC offset), at any nesting depth, so
every value survives as text. Non-finite floats (NaN, ±Infinity, which a Feast double can
hold) have no JSON form: JSON text writes them as null — what JavaScript, orjson and pandas
do — because `NaN` would make the line unreadable to every strict parser. A CSV field holds
them as `nan`, `inf` and `-inf` (Python's float(), pandas and pyarrow read them back). Use
Parquet to keep NaN apart from null. Anything else not listed in `write_rows` raises
TypeError.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any


def _scalar_text(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a {type(value).__name__} value cannot be written as text")


# One encoder for every call: json.dumps with options would build a new one each time.
# allow_nan=False: a non-finite float raises ValueError instead of writing invalid JSON.
_JSON = json.JSONEncoder(default=_scalar_text, ensure_ascii=False, separators=(",", ":"),
                         allow_nan=False)


def json_text(value: Any) -> str:
    """`value` as compact JSON, with bytes as base64, datetimes as ISO 8601 strings, and
    NaN and ±Infinity as null."""
    try:
        return _JSON.encode(value)
    except ValueError:  # rare: only then is the value walked for non-finite floats
        return _JSON.encode(_finite(value))


def _finite(value: Any) -> Any:
    """`value` with every NaN and ±Infinity in it, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _empty_text(value: None) -> str:
    return ""


# Exact-type dispatch first: this runs once per CSV field, millions of times.
_CSV_TEXT: dict[type, Callable[[Any], str]] = {
    # The base-class methods, so an IntEnum or a numpy float64 is written as its number.
    str: str.__str__,
    int: int.__repr__,
    float: float.__repr__,  # the shortest text that reads back as the same float
    bool: _bool_text,
    type(None): _empty_text,
    bytes: _scalar_text,
    datetime: _scalar_text,
    list: json_text,
    tuple: json_text,
    dict: json_text,
}


def csv_field(value: Any) -> str:
    """One CSV field: None is empty, bool is true/false, lists and dicts are JSON text."""
    encode = _CSV_TEXT.get(type(value))
    if encode is not None:
        return encode(value)
    # Subclasses (an int enum, a pandas Timestamp) take the slower path.
    for kind in (bool, str, int, float, list, tuple, dict):
        if isinstance(value, kind):
            return _CSV_TEXT[kind](value)
    return _scalar_text(value)
