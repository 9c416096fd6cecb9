"""Entity rows from a CSV file: the header names the columns, integer ids are typed int64."""

from __future__ import annotations

import csv
import io
import re
from typing import Any, BinaryIO

from featurepull.io._entity_table import (
    INT64_MAX,
    INT64_MIN,
    EntityFileError,
    EntityTable,
    check_required_columns,
    check_unique,
    empty_key_message,
)

# At most 19 digits, so int() below never parses an unbounded string; no leading zero, no "-0".
_CSV_INT_LITERAL = re.compile(r"0|-?[1-9][0-9]{0,18}")


def read_csv(stream: BinaryIO, source: str, required: tuple[str, ...]) -> EntityTable:
    """Read a CSV entity file; the typing rules are in `featurepull.io.entities`."""
    # The csv module rather than pyarrow.csv: we need the exact line of every error (pyarrow's
    # parse errors do not reliably carry one) and our own typing rule, where pyarrow would turn
    # "007" into 7 and guess floats, booleans and timestamps. It is fast enough for millions
    # of rows, and a column of Python strings is what we keep anyway.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = _csv_header(reader, source)
        check_required_columns(source, header, required)
        values = _csv_values(reader, source, header, required)
    except csv.Error as exc:
        raise EntityFileError(
            f"{source}: line {reader.line_num}: malformed CSV ({exc}); "
            "check the quoting on that line"
        ) from None
    except UnicodeDecodeError as exc:
        raise EntityFileError(
            f"{source}: not UTF-8 text near line {reader.line_num + 1} ({exc.reason}); "
            "save the file as UTF-8"
        ) from None
    finally:
        text.detach()  # the caller owns and closes the binary stream
    columns = dict(zip(header, values, strict=True))
    types = {name: _type_csv_column(column) for name, column in columns.items()}
    return EntityTable(source, columns, types)


def _csv_header(reader: Any, source: str) -> list[str]:
    header: list[str] | None = next(reader, None)
    if not header:
        raise EntityFileError(
            f"{source}: line 1 is empty, but it must be the header naming the columns"
        )
    for position, name in enumerate(header, start=1):
        if not name:
            raise EntityFileError(
                f"{source}: line 1: header field {position} is empty; name every column"
            )
    check_unique(source, header)
    return header


def _csv_values(
    reader: Any, source: str, header: list[str], required: tuple[str, ...]
) -> list[list[Any]]:
    values: list[list[Any]] = [[] for _ in header]
    required_at = [(header.index(name), name) for name in required]
    for row in reader:
        if not row:
            continue  # a blank line, not a row (csv writers quote a lone empty field as "")
        if len(row) != len(header):
            raise EntityFileError(
                f"{source}: line {reader.line_num} has {len(row)} fields but the header has "
                f"{len(header)}; give every row one value per column and quote values "
                "that contain commas"
            )
        for column, field in zip(values, row, strict=True):
            column.append(field or None)
        for index, name in required_at:
            if not row[index]:
                raise EntityFileError(empty_key_message(source, f"line {reader.line_num}", name))
    if not values[0]:
        raise EntityFileError(
            f"{source} has no entity rows, only a header; add one line per entity"
        )
    return values


def _type_csv_column(column: list[Any]) -> str:
    """The logical type of a CSV column; an int64 column's values become ints in place."""
    present = (value for value in column if value is not None)
    first = next(present, None)
    if first is None:
        return "null"
    if not _is_int64_literal(first) or not all(_is_int64_literal(value) for value in present):
        return "string"
    column[:] = [None if value is None else int(value) for value in column]
    return "int64"


def _is_int64_literal(text: str) -> bool:
    return _CSV_INT_LITERAL.fullmatch(text) is not None and INT64_MIN <= int(text) <= INT64_MAX
