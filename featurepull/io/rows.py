"""Write feature rows to a local .csv, .parquet or .jsonl file, all at once or not at all.

Columns: the entity key columns (in the order given), then `event_timestamp`, then the features
in the requested order; one output row per input row. `rows[i]` is None for an entity with no
item (null timestamp and features) or `(event_timestamp, f1, f2, ...)`.

Encoding per format:
    Parquet  each key and feature column gets the type pyarrow infers from its values (an
             all-None column is the null type); event_timestamp is timestamp[us, tz=UTC].
             A column pyarrow cannot type (ints and strs, say) is an OutputError naming the
             column, the two Python types and the rows holding them.
    CSV      a header line; None is an empty field, bools are true/false, bytes base64,
             datetimes ISO 8601, lists and dicts JSON text.
    JSONL    one object per line; bytes base64, datetimes ISO 8601 strings.

Rows go to a hidden temporary file beside the output, which is fsynced and then renamed over
it; after any error nothing is left behind. Rows are numbered from 1 in messages.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.io._atomic import atomic_file
from featurepull.io._formats import (
    FileFormat,
    file_format,
    remote_path_message,
    unsupported_format_message,
)
from featurepull.io._text_values import csv_field, json_text

EVENT_TIMESTAMP = "event_timestamp"
CHUNK_ROWS = 65_536  # rows per Parquet row group, and per batch of CSV/JSONL lines
_TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
# What pyarrow raises for values it cannot put in one array (ArrowInvalid is a ValueError,
# ArrowTypeError a TypeError; ints beyond 64 bits raise OverflowError).
_ARROW_VALUE_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)
_Encoded = TypeVar("_Encoded")


class OutputError(ValueError):
    """The rows cannot be written; the message names the path and what to do."""


def write_rows(
    path: str,
    key_columns: dict[str, list[Any]],
    rows: Sequence[tuple[Any, ...] | None],
    features: Sequence[str],
    *,
    overwrite: bool = False,
) -> int:
    """Write one output row per input row to `path` (format from its extension).

    Refuses an existing `path` unless `overwrite`. Returns the number of rows written.
    """
    remote = remote_path_message(path)
    if remote is not None:
        raise OutputError(remote)
    fmt = file_format(path)
    if fmt is None:
        raise OutputError(unsupported_format_message(path))
    _check_destination(path, overwrite)
    output = _Output(path, key_columns, rows, tuple(features))
    output.validate()
    try:
        with atomic_file(path) as stream:
            _WRITERS[fmt](stream, output)
    except OSError as exc:
        directory = os.path.dirname(os.path.abspath(path))
        raise OutputError(
            f"{path}: cannot write the output ({exc.strerror or exc}); check that {directory} "
            "is writable and has free space"
        ) from exc
    return len(rows)


def _check_destination(path: str, overwrite: bool) -> None:
    if os.path.isdir(path):
        raise OutputError(f"{path} is a directory; give the path of an output file")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(
            f"{path}: directory {directory} does not exist; create it or choose another path"
        )


@dataclass(frozen=True)
class _Output:
    """The output table, seen by column (Parquet) or by row (CSV, JSONL)."""

    path: str
    key_columns: dict[str, list[Any]]
    rows: Sequence[tuple[Any, ...] | None]
    features: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [*self.key_columns, EVENT_TIMESTAMP, *self.features]

    def role(self, index: int) -> str:
        return "key column" if index < len(self.key_columns) else "feature column"

    def column(self, index: int, start: int, stop: int) -> list[Any]:
        """The values of output column `index` for rows [start, stop)."""
        keys = list(self.key_columns.values())
        if index < len(keys):
            return keys[index][start:stop]
        position = index - len(keys)  # 0 is event_timestamp, then the features
        return [None if row is None else row[position] for row in self.rows[start:stop]]

    def records(self, start: int, stop: int) -> Iterator[list[Any]]:
        """The output rows [start, stop), each as its values in column order."""
        keys = list(self.key_columns.values())
        missing = [None] * (1 + len(self.features))
        for index in range(start, stop):
            row = self.rows[index]
            values = [column[index] for column in keys]
            values.extend(missing if row is None else row)
            yield values

    def validate(self) -> None:
        """Reject duplicate names, short key columns and malformed rows before any write."""
        names = self.names
        for index, name in enumerate(names):
            if name in names[:index]:
                raise OutputError(
                    f"{self.path}: column {name!r} would appear twice in the output; key "
                    f"columns, {EVENT_TIMESTAMP!r} and the features need distinct names"
                )
        for name, values in self.key_columns.items():
            if len(values) != len(self.rows):
                raise OutputError(
                    f"{self.path}: key column {name!r} has {len(values)} values "
                    f"for {len(self.rows)} rows"
                )
        for number, row in enumerate(self.rows, start=1):
            if row is not None:
                self._validate_row(number, row)

    def _validate_row(self, number: int, row: tuple[Any, ...]) -> None:
        if len(row) != 1 + len(self.features):
            raise OutputError(
                f"{self.path}: row {number} has {len(row)} values; expected {EVENT_TIMESTAMP} "
                f"and {len(self.features)} features"
            )
        timestamp = row[0]
        if not isinstance(timestamp, datetime) or timestamp.utcoffset() is None:
            raise OutputError(
                f"{self.path}: row {number}: {EVENT_TIMESTAMP} must be a timezone-aware "
                f"datetime, not {timestamp!r}"
            )


def _write_parquet(stream: BinaryIO, output: _Output) -> None:
    total = len(output.rows)
    schema = pa.schema(
        [pa.field(name, _arrow_type(output, index)) for index, name in enumerate(output.names)]
    )
    try:
        with pq.ParquetWriter(stream, schema) as writer:
            for start in range(0, total, CHUNK_ROWS):
                stop = min(start + CHUNK_ROWS, total)
                arrays = [
                    _arrow_array(output, index, start, stop, field.type)
                    for index, field in enumerate(schema)
                ]
                writer.write_batch(pa.record_batch(arrays, schema=schema))
    except pa.ArrowException as exc:
        raise OutputError(
            f"{output.path}: cannot write Parquet ({exc}); write .jsonl or .csv instead"
        ) from exc


def _arrow_type(output: _Output, index: int) -> Any:
    """The column's Arrow type, inferred from all of its values (chunks must share one)."""
    if index == len(output.key_columns):
        return _TIMESTAMP_TYPE
    values = output.column(index, 0, len(output.rows))
    try:
        return pa.infer_type(values)
    except _ARROW_VALUE_ERRORS as exc:
        raise _type_conflict(output, index, values, 0, exc) from exc


def _arrow_array(output: _Output, index: int, start: int, stop: int, arrow_type: Any) -> Any:
    values = output.column(index, start, stop)
    try:
        return pa.array(values, type=arrow_type)
    except _ARROW_VALUE_ERRORS as exc:
        # Inference looks at types, not every value: a str among ints fails only here.
        raise _type_conflict(output, index, values, start, exc) from exc


def _type_conflict(
    output: _Output, index: int, values: list[Any], offset: int, exc: Exception
) -> OutputError:
    detail = _describe_bad_values(values, offset) or "has values that cannot share one column"
    return OutputError(
        f"{output.path}: {output.role(index)} {output.names[index]!r} {detail} ({exc}); a "
        "Parquet column holds one type, so make the values one type or write .jsonl or .csv"
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


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, list | tuple | dict)


def _arrow_accepts(values: list[Any]) -> bool:
    try:
        pa.array(values)
    except _ARROW_VALUE_ERRORS:
        return False
    return True


def _write_csv(stream: BinaryIO, output: _Output) -> None:
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    try:
        writer = csv.writer(text)
        writer.writerow(output.names)
        for start in range(0, len(output.rows), CHUNK_ROWS):
            writer.writerows(_encoded(output, start, _csv_record, csv_field))
        text.flush()
    finally:
        text.detach()  # atomic_file owns the binary stream and closes it


def _csv_record(values: list[Any]) -> list[str]:
    return [csv_field(value) for value in values]


def _write_jsonl(stream: BinaryIO, output: _Output) -> None:
    names = output.names

    def line(values: list[Any]) -> str:
        return json_text(dict(zip(names, values, strict=True))) + "\n"

    for start in range(0, len(output.rows), CHUNK_ROWS):
        stream.write("".join(_encoded(output, start, line, json_text)).encode("utf-8"))


def _encoded(
    output: _Output,
    start: int,
    encode: Callable[[list[Any]], _Encoded],
    encode_value: Callable[[Any], object],
) -> Iterator[_Encoded]:
    """The encoded records of the chunk starting at `start`.

    `encode_value` encodes one value alone; it is used only after a failure, to name the column.
    """
    stop = min(start + CHUNK_ROWS, len(output.rows))
    for number, record in enumerate(output.records(start, stop), start=start + 1):
        try:
            encoded = encode(record)
        except TypeError as exc:
            raise _unsupported_value(output, number, record, encode_value, exc) from exc
        yield encoded


def _unsupported_value(
    output: _Output,
    number: int,
    record: list[Any],
    encode_value: Callable[[Any], object],
    exc: Exception,
) -> OutputError:
    for index, value in enumerate(record):
        try:
            encode_value(value)
        except TypeError:
            return OutputError(
                f"{output.path}: row {number}: {output.role(index)} {output.names[index]!r} "
                f"holds a value of type {type(value).__name__}; values must be None, bool, int, "
                "float, str, bytes, datetime, or lists and dicts of those"
            )
    return OutputError(f"{output.path}: row {number} cannot be written ({exc})")


_WRITERS: dict[FileFormat, Callable[[BinaryIO, _Output], None]] = {
    "csv": _write_csv,
    "jsonl": _write_jsonl,
    "parquet": _write_parquet,
}
