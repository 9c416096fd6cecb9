"""How feature values become text in the CSV and JSONL sinks.

bytes become base64 and datetimes ISO 8601 (with their UTC offset), at any nesting depth, so
every value survives as text. Non-finite floats are written as Python's json writes them
(NaN, Infinity): Python's json, pandas and pyarrow read them back; mapping them to null would
silently change the data. Anything else not listed in `write_rows` raises TypeError.
"""

from __future__ import annotations

import base64
import json
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
_JSON = json.JSONEncoder(default=_scalar_text, ensure_ascii=False, separators=(",", ":"))


def json_text(value: Any) -> str:
    """`value` as compact JSON, with bytes as base64 and datetimes as ISO 8601 strings."""
    return _JSON.encode(value)


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
