"""Entity rows from a CSV file: the header names the columns, integer ids are typed int64."""

from __future__ import annotations

import bisect
import csv
import io
import re
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv

from featurepull import arrow_compute as pc
from featurepull.io._entity_table import (
    INT64_MAX,
    INT64_MIN,
    ArrowBackedColumns,
    EntityFileError,
    EntityTable,
    check_required_columns,
    check_unique,
    empty_key_message,
)

# At most 19 digits, so int() below never parses an unbounded string; no leading zero, no "-0".
_CSV_INT_LITERAL = re.compile(r"0|-?[1-9][0-9]{0,18}")
CSV_INT_PATTERN = "^(?:" + _CSV_INT_LITERAL.pattern + ")$"  # the same rule, for RE2


def read_csv(stream: BinaryIO, source: str, required: tuple[str, ...]) -> EntityTable:
    """Read a CSV entity file; the typing rules are in `featurepull.io.entities`."""
    table = read_csv_fast(stream, source, required)
    if table is not None:
        return table
    stream.seek(0)
    return _read_csv_exactly(stream, source, required)


def _read_csv_exactly(stream: BinaryIO, source: str, required: tuple[str, ...]) -> EntityTable:
    # The csv module: it gives the exact line of every error (pyarrow's parse errors do not
    # reliably carry one). Used for files the fast path declined, which are mostly bad ones.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    lines = _LineIndex()
    try:
        header = _csv_header(reader, source)
        check_required_columns(source, header, required)
        values = _csv_values(reader, source, header, required, lines)
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
    types: dict[str, str] = {}
    notes: dict[str, str] = {}
    for name, column in columns.items():
        types[name], note = _type_csv_column(column, lines)
        if note:
            notes[name] = note
    return EntityTable(source, columns, types, notes)


def read_csv_fast(stream: BinaryIO, source: str, required: tuple[str, ...]
                  ) -> EntityTable | None:
    """The file read by pyarrow.csv (every column as text) and typed a column at a time in
    pyarrow.compute; None when the file holds anything whose meaning or error message only
    the csv module pins down (quotes, a header it would refuse, ragged or blank lines, an
    empty key, no rows, bad UTF-8), so the exact reader takes it from the start."""
    data = stream.read()
    header = plain_header(data)
    if header is None:
        return None
    check_required_columns(source, header, required)
    try:  # the bytes just checked, not the file again: it may have changed meanwhile
        table = pa_csv.read_csv(pa.py_buffer(data), **arrow_csv_options(header))
    except pa.ArrowInvalid:  # ragged rows, not UTF-8: the exact reader names the line
        return None
    if (table.num_rows == 0 or any(table.column(name).null_count for name in required)
            or has_blank_row(table)):
        return None  # no rows; an empty key; maybe a blank line (pyarrow reads it as nulls)
    columns: dict[str, Any] = {}
    types: dict[str, str] = {}
    notes: dict[str, str] = {}
    arrays: dict[str, pa.ChunkedArray] = {}
    for name in header:
        types[name], columns[name], note, array = _typed_text_column(table.column(name))
        if note:
            notes[name] = note
        if array is not None:
            arrays[name] = array
    return EntityTable(source, ArrowBackedColumns(columns), types, notes, arrays)


def arrow_csv_options(header: list[str], block_size: int | None = None) -> dict[str, Any]:
    """pyarrow.csv's options for a file `plain_header` took: every column as text, an empty
    field null, blank lines kept (as all-null rows), no quoting, one thread. A streaming
    reader gets the file through `arrow_file`: its readahead runs on Arrow's I/O threads."""
    read = pa_csv.ReadOptions(column_names=header, skip_rows=1, use_threads=False)
    if block_size is not None:
        read.block_size = block_size
    return {"read_options": read,
            "parse_options": pa_csv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            "convert_options": pa_csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True,
                null_values=[""])}


def has_blank_row(table: pa.Table | pa.RecordBatch) -> bool:
    """Whether some row is null in every column, as pyarrow reads a blank line."""
    blank = pc.is_null(table.column(0))
    for column in table.columns[1:]:
        blank = pc.and_(blank, pc.is_null(column))
    return bool(pc.any(blank).as_py())


def plain_header(data: bytes) -> list[str] | None:
    """The header of a file without quotes, if the csv module would take it as it is."""
    if b'"' in data:
        return None
    line = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if b"\r" in line:  # lines ended by a lone CR: the csv module's numbering
        return None
    try:
        header = line.decode("utf-8-sig").split(",")
    except UnicodeDecodeError:
        return None
    if not all(header) or len(set(header)) != len(header):
        return None
    return header


def _type_text_column(column: pa.ChunkedArray
                      ) -> tuple[str, list[Any], str | None, pa.ChunkedArray | None]:
    """The logical type of a column read as text, its values, a "mixed" column's note, and
    the values as an Arrow array of that type (int64 or string; else None): the common
    cases decided in C (an int64 column by a cast, text by one regex pass); any other goes
    value by value."""
    kind, values, note, array = _typed_text_column(column)
    return kind, values if isinstance(values, list) else values.to_pylist(), note, array


def _typed_text_column(column: pa.ChunkedArray
                       ) -> tuple[str, list[Any] | pa.ChunkedArray, str | None,
                                  pa.ChunkedArray | None]:
    """`_type_text_column`, an int64 or string column's values left as its Arrow array
    (made Python values when asked for: `ArrowBackedColumns`)."""
    present = len(column) - column.null_count
    if present == 0:
        return "null", [None] * len(column), None, None
    numbers = int64_column(column)
    if numbers is not None:
        return "int64", numbers, None, numbers
    ints = pc.sum(pc.match_substring_regex(column, CSV_INT_PATTERN)).as_py() or 0
    if ints == 0:
        return "string", column, None, column
    values = column.to_pylist()
    # No quotes, so no value spans lines: row r is on line r + 2, as a fresh index says.
    kind, note = _type_csv_column(values, _LineIndex())  # never int64: cast above
    return kind, values, note, column if kind == "string" else None


def int64_column(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array | None:
    """The column as int64 when every value is an int64 literal of the typing rule, else
    None. Arrow's cast also takes "007", "-0", "+3" and the like, so the cast is written
    back as text: a value the rule takes is exactly the text Arrow writes for its number
    (no sign but "-", no leading zero), so equal texts mean every value is one (cheaper at
    1M ids than the regex pass, which then runs only for a column that is not int64).
    Its first value decides whether to try: a cast that fails reads every value first."""
    # (Not pc.index: its Python scalar argument makes pyarrow import pandas where it can.)
    first = (column if column.null_count == 0 else pc.drop_null(column))[0].as_py()
    if not _is_int64_literal(first):
        return None
    try:
        numbers = pc.cast(column, pa.int64())
    except pa.ArrowInvalid:  # text, or digits beyond int64
        return None
    if not pc.all(pc.equal(pc.cast(numbers, pa.string()), column)).as_py():
        return None
    return numbers


class _LineIndex:
    """The file line of each row, kept as the few rows where the numbering shifts (a quoted
    field over several lines) rather than one number per row."""

    def __init__(self) -> None:
        self.starts: list[int] = [0]  # rows where a new shift begins
        self.shifts: list[int] = [2]  # line = row + shift (the header is line 1)

    def note(self, row: int, line: int) -> None:
        """Row ``row`` (0-based) ended on ``line``."""
        if line - row != self.shifts[-1]:
            self.starts.append(row)
            self.shifts.append(line - row)

    def line(self, row: int) -> int:
        """The line (1-based) that row ``row`` ended on."""
        return row + self.shifts[bisect.bisect_right(self.starts, row) - 1]


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
    reader: Any, source: str, header: list[str], required: tuple[str, ...], lines: _LineIndex
) -> list[list[Any]]:
    values: list[list[Any]] = [[] for _ in header]
    required_at = [(header.index(name), name) for name in required]
    for number, row in enumerate(reader):
        if not row:
            raise EntityFileError(_blank_line_message(source, reader.line_num, len(header)))
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
        lines.note(number, reader.line_num)
    if not values[0]:
        raise EntityFileError(
            f"{source} has no entity rows, only a header; add one line per entity"
        )
    return values


def _blank_line_message(source: str, line: int, width: int) -> str:
    # Refused, not skipped: in a one-column file a blank line is how pandas writes a missing
    # value, so skipping it would drop an entity row without a word.
    what = ("an empty value (pandas writes a missing value so in a one-column file)"
            if width == 1 else "not a row")
    return (f"{source}: line {line} is blank, which is {what}; every line after the header "
            "must be one entity: delete the blank line, or fill in the entity it stands for")


def _type_csv_column(column: list[Any], lines: _LineIndex) -> tuple[str, str | None]:
    """The logical type of a CSV column, and the note of a "mixed" one; an int64 column's
    values become ints in place."""
    present = [value for value in column if value is not None]
    if not present:
        return "null", None
    # The common cases decided with the regex mapped in C: all plain integers, or none.
    is_int = _CSV_INT_LITERAL.fullmatch
    if all(map(is_int, present)):
        numbers = [None if value is None else int(value) for value in column]
        ints = [number for number in numbers if number is not None]
        if min(ints) >= INT64_MIN and max(ints) <= INT64_MAX:
            column[:] = numbers
            return "int64", None
    elif not any(map(is_int, present)):
        return "string", None
    return _type_csv_column_slowly(column, lines)


def _type_csv_column_slowly(column: list[Any], lines: _LineIndex) -> tuple[str, str | None]:
    # Reached with integers beyond int64 (other text here) or with integers and other text:
    # a column of int64 literals alone is typed before, so this one is never int64.
    first_int = first_other = None
    for row, value in enumerate(column):
        if value is None:
            continue
        if _is_int64_literal(value):
            if first_int is None:
                first_int = row
        elif first_other is None:
            first_other = row
        if first_int is not None and first_other is not None:
            return "mixed", (
                f"mixes integers (line {lines.line(first_int)}: {column[first_int]!r}) and "
                f"other text (line {lines.line(first_other)}: {column[first_other]!r})")
    return "string", None


def _is_int64_literal(text: str) -> bool:
    return _CSV_INT_LITERAL.fullmatch(text) is not None and INT64_MIN <= int(text) <= INT64_MAX
