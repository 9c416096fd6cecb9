"""How output rows become bytes: Parquet row groups, CSV lines, JSONL objects.

An encoder writes to a binary stream it does not own. It is fed Arrow tables (any format) or,
for the text formats, runs of Python records; it is finished once after the last write, or
abandoned after an error. The text encodings are `featurepull.io._text_values`, whether a
value came from a Python row or from an Arrow table; `_text_columns` makes the same bytes a
column at a time.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.config import S3Settings
from featurepull.io._destinations import OwnerMark, open_output, reporting_write_errors
from featurepull.io._formats import FileFormat
from featurepull.io._parquet_options import parquet_options
from featurepull.io._row_view import CHUNK_ROWS, OutputError, column_role
from featurepull.io._text_columns import TextFormat, csv_bytes, jsonl_bytes, text_array
from featurepull.io._text_values import csv_field, json_text

_Encoded = TypeVar("_Encoded")
_AnyEncoder = TypeVar("_AnyEncoder", bound="Encoder")


class Encoder(ABC):
    """Writes one output's rows in one format; `source` (the path) starts its messages."""

    def __init__(self, stream: BinaryIO, source: str) -> None:
        self.stream = stream
        self.source = source

    @abstractmethod
    def write_table(self, table: pa.Table, first_row: int) -> None:
        """Append the table's rows; `first_row` is the output row number of its first row."""

    def finish(self) -> None:  # noqa: B027 - a format with nothing to finish needs no override
        """Complete the output after the last write (footer, buffered text)."""

    def abandon(self) -> None:  # noqa: B027 - likewise
        """Let go of the stream after an error; the output is thrown away."""


class ParquetEncoder(Encoder):
    """Parquet through `pq.ParquetWriter`: each table written becomes its own row group(s).
    The entity key columns `keys` have no dictionary (`parquet_options` says why). Whoever
    writes a job's output (a pull, a shard's part, the finisher) passes the same keys: its
    row groups are then the same bytes."""

    def __init__(self, stream: BinaryIO, schema: pa.Schema, source: str,
                 keys: Collection[str] = ()) -> None:
        super().__init__(stream, source)
        with self._reporting_arrow_errors():
            self._writer = pq.ParquetWriter(stream, schema, **parquet_options(schema, keys))

    def write_table(self, table: pa.Table, first_row: int) -> None:
        with self._reporting_arrow_errors():
            self._writer.write_table(table, row_group_size=CHUNK_ROWS)

    def finish(self) -> None:
        with self._reporting_arrow_errors():
            self._writer.close()

    def abandon(self) -> None:
        # Closing writes a footer to a stream about to be thrown away, but leaves no writer
        # that would try to write one later, to a closed stream, when it is collected.
        with suppress(Exception):
            self._writer.close()

    @contextmanager
    def _reporting_arrow_errors(self) -> Iterator[None]:
        try:
            yield
        except pa.ArrowException as exc:
            raise OutputError(
                f"{self.source}: cannot write Parquet ({exc}); write .jsonl or .csv instead"
            ) from exc


class TextEncoder(Encoder):
    """CSV or JSONL: rows encoded a column at a time where `_text_columns` can, else one by
    one from their Python values (the same bytes either way)."""

    fmt: TextFormat

    def __init__(self, stream: BinaryIO, names: list[str], source: str) -> None:
        super().__init__(stream, source)
        self.names = names

    @abstractmethod
    def write_records(self, records: Iterable[list[Any]], first_row: int) -> None:
        """Append rows given as their values in column order."""

    @abstractmethod
    def write_texts(self, texts: Sequence[pa.Array]) -> bool:
        """Append rows given as one array of field texts per column (`text_array`, null
        for None); False, with nothing written, when only `write_records` can."""

    def write_table(self, table: pa.Table, first_row: int) -> None:
        row = first_row
        for batch in table.to_batches(max_chunksize=CHUNK_ROWS):
            texts = [text_array(column, self.fmt) for column in batch.columns]
            if not all(text is not None for text in texts) or not self.write_texts(
                    [text for text in texts if text is not None]):
                columns = [self._python_values(index, column, row)
                           for index, column in enumerate(batch.columns)]
                self.write_records(map(list, zip(*columns, strict=True)), row)
            row += batch.num_rows

    def _python_values(self, index: int, column: pa.Array, first_row: int) -> list[Any]:
        """Column `index` of a batch as Python values; a value Python cannot hold (a time
        outside the years 1 to 9999: the reader refuses such event times, but a scorer's Arrow
        table can hold one) is an OutputError naming its row, rather than a bare OverflowError."""
        try:
            values: list[Any] = column.to_pylist()
            return values
        except (OverflowError, ValueError):
            pass
        for offset in range(len(column)):
            value = column.slice(offset, 1)
            try:
                value.to_pylist()
            except (OverflowError, ValueError) as exc:
                raise OutputError(
                    f"{self.source}: row {first_row + offset}: {column_role(self.names, index)} "
                    f"{self.names[index]!r} holds {value.cast(pa.string())[0]} ({column.type}), "
                    "outside the years 1 to 9999 that CSV and JSONL write (ISO 8601, as "
                    "Python's datetime); write a .parquet output, which holds it"
                ) from exc
        raise AssertionError("to_pylist failed on no single value")  # pragma: no cover

    def _encoded(
        self,
        records: Iterable[list[Any]],
        first_row: int,
        encode: Callable[[list[Any]], _Encoded],
        encode_value: Callable[[Any], object],
    ) -> Iterator[_Encoded]:
        """The records, encoded; `encode_value` (one value alone) names a failing column."""
        for number, record in enumerate(records, start=first_row):
            try:
                encoded = encode(record)
            except TypeError as exc:
                raise self._unsupported_value(number, record, encode_value, exc) from exc
            yield encoded

    def _unsupported_value(
        self,
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
                    f"{self.source}: row {number}: {column_role(self.names, index)} "
                    f"{self.names[index]!r} holds a value of type {type(value).__name__}; "
                    "values must be None, bool, int, float, str, bytes, datetime, or lists and "
                    "dicts of those"
                )
        return OutputError(f"{self.source}: row {number} cannot be written ({exc})")


class CsvEncoder(TextEncoder):
    """A header line, then one line per row; fields as `csv_field` writes them."""

    fmt: TextFormat = "csv"

    def __init__(self, stream: BinaryIO, names: list[str], source: str) -> None:
        super().__init__(stream, names, source)
        self._text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        self._writer = csv.writer(self._text)
        self._writer.writerow(names)

    def write_records(self, records: Iterable[list[Any]], first_row: int) -> None:
        self._writer.writerows(self._encoded(records, first_row, _csv_record, csv_field))

    def write_texts(self, texts: Sequence[pa.Array]) -> bool:
        lines = csv_bytes(texts)
        if lines is None:
            return False
        self._text.flush()  # the header and any rows the csv module wrote come first
        _write_all(self.stream, lines)
        return True

    def finish(self) -> None:
        self._text.flush()
        self._text.detach()  # the destination owns the binary stream and closes it

    def abandon(self) -> None:
        with suppress(Exception):
            self._text.detach()


def _csv_record(values: list[Any]) -> list[str]:
    return [csv_field(value) for value in values]


class JsonlEncoder(TextEncoder):
    """One compact JSON object per line, keys in column order."""

    fmt: TextFormat = "jsonl"

    def write_texts(self, texts: Sequence[pa.Array]) -> bool:
        lines = jsonl_bytes(self.names, texts)
        if lines is None:
            return False
        _write_all(self.stream, lines)
        return True

    def write_records(self, records: Iterable[list[Any]], first_row: int) -> None:
        names = self.names

        def line(values: list[Any]) -> str:
            return json_text(dict(zip(names, values, strict=True))) + "\n"

        lines = self._encoded(records, first_row, line, json_text)
        self.stream.write("".join(lines).encode("utf-8"))


def _write_all(stream: BinaryIO, pieces: Sequence[pa.Buffer]) -> None:
    for piece in pieces:
        stream.write(memoryview(piece))


def text_encoder(fmt: FileFormat, stream: BinaryIO, names: list[str], source: str) -> TextEncoder:
    """The CSV or JSONL encoder (Parquet is not text: see `ParquetEncoder`)."""
    if fmt == "csv":
        return CsvEncoder(stream, names, source)
    if fmt == "jsonl":
        return JsonlEncoder(stream, names, source)
    raise ValueError(f"{fmt} is not a text format")


def table_encoder(fmt: FileFormat, stream: BinaryIO, schema: pa.Schema, source: str,
                  keys: Collection[str] = ()) -> Encoder:
    """The encoder of format `fmt` for tables of `schema` (`keys`: see `ParquetEncoder`)."""
    if fmt == "parquet":
        return ParquetEncoder(stream, schema, source, keys)
    return text_encoder(fmt, stream, list(schema.names), source)


@contextmanager
def open_encoder(
    path: str,
    make: Callable[[BinaryIO], _AnyEncoder],
    *,
    overwrite: bool,
    s3: S3Settings | None,
    mark: OwnerMark | None = None,
) -> Iterator[_AnyEncoder]:
    """An encoder over `open_output(path)`: finished if the block completes, else abandoned."""
    with open_output(path, overwrite=overwrite, s3=s3, mark=mark) as stream:
        with reporting_write_errors(path):
            encoder = make(stream)
        try:
            yield encoder
        except BaseException:
            encoder.abandon()
            raise
        with reporting_write_errors(path):
            encoder.finish()
