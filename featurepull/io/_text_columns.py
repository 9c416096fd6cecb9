"""CSV lines and JSONL objects made a column at a time, with the bytes the row-by-row text
encoders write (`featurepull.io._encoders`, values as `featurepull.io._text_values` writes them).

A column becomes an Arrow array of each value's text (null where the value is None); the
lines are those texts joined in Arrow. Strings, integers, booleans, doubles and UTC timestamps
are turned into text by Arrow compute; every other value (bytes, lists, dicts, other
timestamps, and the doubles whose text Arrow writes in another style than Python's `repr`)
by the same Python function the row-by-row encoders call, one non-null value at a time,
with no per-row record. Anything that
function refuses, or that could come out other than it would row by row, returns None: the
caller then takes the row-by-row path, whose message names the row and column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from featurepull.io._text_values import csv_field, json_text

TextFormat = Literal["csv", "jsonl"]
Column: TypeAlias = "pa.Array | pa.ChunkedArray | Sequence[Any]"

_ARROW_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)
_UTC_MICROS = pa.timestamp("us", tz="UTC")
_ISO_LENGTH = len("2024-01-01T00:00:00.000000")
# What makes Python's csv module (QUOTE_MINIMAL, "\r\n" lines) quote a field.
_CSV_QUOTED = r'[,"\r\n]'
# Null fields: an empty CSV field, a JSON null (the key and separator texts are never null).
_CSV_NULLS = pc.JoinOptions(null_handling="replace", null_replacement="")
_JSON_NULLS = pc.JoinOptions(null_handling="replace", null_replacement="null")
# What json.dumps(ensure_ascii=False) escapes inside a string.
_JSON_ESCAPED = r'[\x00-\x1f"\\]'
# Python values whose whole column Arrow converts and writes as they would be written alone.
_ARROW_TYPED: dict[type, pa.DataType] = {int: pa.int64(), str: pa.string(), bool: pa.bool_(),
                                         float: pa.float64()}
# Where Python's repr writes a double in fixed notation (else with an exponent): 1e-4 <=
# |x| < 1e16, and zero.
_FIXED_FROM, _FIXED_BELOW = 1e-4, 1e16


def text_array(values: Column, fmt: TextFormat) -> pa.Array | None:
    """Each value's text in format `fmt` (`csv_field` quoted as `csv.writer` quotes it, or
    `json_text` for JSONL), null where the value is None; None when a value cannot be
    written (or not vouched for)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = _arrow_column(values)
        if not isinstance(values, pa.Array):
            return _quoted(_python_texts(values, fmt), fmt)
    try:
        texts = _arrow_texts(values, fmt)
    except _ARROW_ERRORS:
        texts = None
    if texts is None:
        try:
            python_values = values.to_pylist()
        except _ARROW_ERRORS:  # a timestamp Python's datetime cannot hold (years 1 to 9999)
            return None
        return _quoted(_python_texts(python_values, fmt), fmt)
    # Numbers, booleans and timestamps never hold a character the csv module quotes.
    text_type = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    return _quoted(texts, fmt) if text_type else texts


def csv_bytes(texts: Sequence[pa.Array]) -> list[pa.Buffer] | None:
    """The CSV lines of rows whose fields are `texts` (`text_array`s, one per column, nulls
    empty), as `csv.writer` writes them, in pieces to write one after another; None for no
    column (no text says how many rows)."""
    if not texts:
        return None
    if len(texts) == 1:  # the csv module quotes a lone empty field: the row would be empty
        field = pc.fill_null(texts[0], "")
        return _joined(pc.if_else(pc.equal(field, ""), pa.scalar('""'), field), "", "\r\n")
    return _joined(pc.binary_join_element_wise(*texts, ",", options=_CSV_NULLS), "", "\r\n")


def jsonl_bytes(names: Sequence[str], texts: Sequence[pa.Array]) -> list[pa.Buffer] | None:
    """One compact JSON object per row, keys in column order (nulls as null), in pieces to
    write one after another; a name given twice keeps its first place and its last column's
    value, as a dict per row does. None for no column."""
    columns = dict(zip(names, texts, strict=True))
    if not columns:
        return None
    parts: list[Any] = []
    for name, column in columns.items():
        parts += [pa.scalar("," + json_text(name) + ":"), column]
    lines = pc.binary_join_element_wise(*parts[1:], "", options=_JSON_NULLS)
    return _joined(lines, "{" + json_text(names[0]) + ":", "}\n")


def _joined(lines: pa.Array, start: str, end: str) -> list[pa.Buffer]:
    """Every line with `start` before it and `end` after it, in pieces to write one after
    another: the lines joined in one Arrow call, with `end` and `start` between them."""
    if not len(lines):
        return []
    whole = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)]), lines),
                           end + start)[0].as_buffer()
    assert whole is not None  # no line is null: the joins replace nulls
    return [pa.py_buffer(start.encode()), whole, pa.py_buffer(end.encode())]


def _quoted(fields: pa.Array | None, fmt: TextFormat) -> pa.Array | None:
    """CSV fields quoted where the csv module quotes them (JSON texts as they are)."""
    if fields is None or fmt != "csv":
        return fields
    quote = pc.fill_null(pc.match_substring_regex(fields, _CSV_QUOTED), False)
    if not pc.any(quote).as_py():
        return fields
    escaped = pc.binary_join_element_wise(
        pa.scalar('"'), pc.replace_substring(fields, '"', '""'), pa.scalar('"'), "")
    return pc.if_else(quote, escaped, fields)


def _arrow_column(values: Sequence[Any]) -> pa.Array | Sequence[Any]:
    """A Python column as Arrow where Arrow's value is the same text as the Python value's:
    one exact type of int, str or bool, or UTC datetimes; else the values as they are."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if len(kinds) != 1:
        return values
    kind = kinds.pop()
    arrow_type = _ARROW_TYPED.get(kind)
    if arrow_type is None and kind is datetime and all(
            value is None or value.tzinfo is UTC for value in values):
        arrow_type = _UTC_MICROS
    if arrow_type is None:
        return values
    try:
        return pa.array(values, type=arrow_type)
    except _ARROW_ERRORS:  # an int beyond 64 bits
        return values


def _arrow_texts(values: pa.Array, fmt: TextFormat) -> pa.Array | None:
    """The texts of an Arrow column computed by Arrow, or None for a type it does not
    write as Python does (the caller then converts its values one by one)."""
    kind = values.type
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.string())
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return values.cast(pa.string())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        texts = values.cast(pa.string())
        return texts if fmt == "csv" else _json_strings(texts)
    if kind == pa.float64():  # not float32: Arrow writes its own shortest digits
        return _double_texts(values, fmt)
    if pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in ("UTC", "+00:00"):
        stamps = _iso_utc(values)
        if stamps is None or fmt == "csv":
            return stamps
        return pc.binary_join_element_wise(pa.scalar('"'), stamps, pa.scalar('"'), "")
    return None


def _double_texts(values: pa.Array, fmt: TextFormat) -> pa.Array:
    """`repr` of each double (JSON: the same, NaN and ±Infinity null) from Arrow's cast,
    which writes the same shortest digits in another style: 1 for 1.0, 0.00001 for 1e-05,
    1e-7 for 1e-07, and an exponent (5.1e+10) where repr has none. Fixed notation where repr
    has it gets ".0" if it has no point; an exponent where repr has one gets two digits;
    every other value (few) is written by the per-value function."""
    texts, others = _repr_style(values)
    if not pc.any(others).as_py():
        return texts
    encode: Callable[[Any], str] = csv_field if fmt == "csv" else json_text
    written = [encode(value) for value in values.filter(others).to_pylist()]
    return pc.replace_with_mask(texts, others, pa.array(written, pa.string()))


def _repr_style(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Arrow's texts of the doubles put in `repr`'s style, and where that cannot be done
    (true: the caller writes that value itself; nulls are neither)."""
    texts = values.cast(pa.string())
    size = pc.abs(values)
    fixed = pc.or_(pc.and_(pc.greater_equal(size, _FIXED_FROM), pc.less(size, _FIXED_BELOW)),
                   pc.equal(values, 0))
    exponent = pc.match_substring(texts, "e")
    as_fixed = pc.fill_null(pc.and_not(fixed, exponent), False)
    as_exponent = pc.fill_null(pc.and_(pc.and_not(exponent, fixed), pc.is_finite(values)),
                               False)
    pointed = pc.match_substring(texts, ".")
    texts = _changed_where(pc.and_not(as_fixed, pointed), texts,
                           lambda some: pc.binary_join_element_wise(some, ".0", ""))
    texts = _changed_where(as_exponent, texts, lambda some: pc.replace_substring_regex(
        some, r"e([+-])(\d)$", r"e\10\2"))
    return texts, pc.and_(pc.is_valid(values), pc.invert(pc.or_(as_fixed, as_exponent)))


def _changed_where(where: pa.Array, texts: pa.Array,
                   change: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """The texts with `change` made to those where `where` is true (few or none: most
    doubles need neither fix-up), and no pass over them when it is true nowhere."""
    if not pc.any(where).as_py():
        return texts
    return pc.replace_with_mask(texts, where, change(texts.filter(where)))


def _iso_utc(values: pa.Array) -> pa.Array | None:
    """`datetime.isoformat()` of UTC timestamps: microseconds only when not zero, then
    +00:00; None for a year outside Python's 1 to 9999 (Arrow writes 0000, -0001, 10000)."""
    # Arrow's cast writes "2024-01-02 03:04:05.000000" (~40x faster than its strftime).
    texts = values.cast(pa.timestamp("us")).cast(pa.string())
    lengths = pc.min_max(pc.utf8_length(texts))
    if lengths["min"].as_py() not in (None, _ISO_LENGTH) or lengths["max"].as_py() not in (
            None, _ISO_LENGTH) or pc.any(pc.starts_with(texts, "0000-")).as_py():
        return None
    texts = pc.replace_substring(texts, " ", "T")  # the one space
    # The one point, at a fixed place in texts of one length: no regex needed.
    whole_seconds = pc.replace_substring(texts, ".000000", "")
    return pc.binary_join_element_wise(whole_seconds, pa.scalar("+00:00"), "")


def _json_strings(texts: pa.Array) -> pa.Array:
    """Strings as JSON: quoted; the few holding a character JSON escapes, by `json_text`."""
    quoted = pc.binary_join_element_wise(pa.scalar('"'), texts, pa.scalar('"'), "")
    escape = pc.fill_null(pc.match_substring_regex(texts, _JSON_ESCAPED), False)
    if not pc.any(escape).as_py():
        return quoted
    escaped = [json_text(text) for text in texts.filter(escape).to_pylist()]
    return pc.replace_with_mask(quoted, escape, pa.array(escaped, pa.string()))


def _python_texts(values: Sequence[Any], fmt: TextFormat) -> pa.Array | None:
    """Each non-None value's text by the row-by-row encoders' own function."""
    encode: Callable[[Any], str] = csv_field if fmt == "csv" else json_text
    try:
        return pa.array([None if value is None else encode(value) for value in values],
                        pa.string())
    except _ARROW_ERRORS:  # TypeError: no text for the value; ArrowException: not UTF-8
        return None

