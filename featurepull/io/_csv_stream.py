"""A CSV entity file as an EntityStream: a first pass over its blocks types every column
(the rules of `featurepull.io.entities`, in pyarrow.compute), a second reads them. Only for
files the fast reader would take whole: anything else (quotes, blank or ragged lines, a
column mixing integers and text, bad UTF-8) is left to the exact reader, which names the
line at fault."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from featurepull.io._arrow_file import arrow_file
from featurepull.io._csv_entities import (
    CSV_INT_PATTERN,
    arrow_csv_options,
    has_blank_row,
    plain_header,
)
from featurepull.io._entity_table import EntityStream

_BLOCK_BYTES = 1 << 20  # about 100,000 rows of a one-column file per batch
_HEADER_BYTES = 1 << 16


class _Declined(Exception):
    """The file holds something only the exact reader can judge."""


def stream_csv(stream: BinaryIO, source: str) -> EntityStream | None:
    """The file as an EntityStream after one typing pass, or None (read it whole)."""
    first = stream.read(_HEADER_BYTES)
    header = plain_header(first) if b"\n" in first else None
    if header is None:
        return None
    try:
        types, rows = _column_types(stream, header)
    except (_Declined, pa.ArrowInvalid):
        return None

    def arrow_batches(names: Sequence[str]) -> Iterator[dict[str, Any]]:
        with closing(_blocks(stream, header)) as blocks:
            for batch in blocks:
                yield {name: _array(batch.column(name), types[name]) for name in names}

    def batches(names: Sequence[str]) -> Iterator[dict[str, list[Any]]]:
        for batch in arrow_batches(names):
            yield {name: array.to_pylist() for name, array in batch.items()}

    return EntityStream(source, types, rows, batches, arrow_batches)


def _blocks(stream: BinaryIO, header: list[str]) -> Generator[pa.RecordBatch, None, None]:
    """The file's blocks, read by Arrow from its own file object (`arrow_file`); the
    reader is closed (its readahead stopped) when the generator is closed."""
    stream.seek(0)
    with (arrow_file(stream) as source,
          pa_csv.open_csv(source, **arrow_csv_options(header, _BLOCK_BYTES)) as reader):
        yield from reader


def _column_types(stream: BinaryIO, header: list[str]) -> tuple[dict[str, str], int]:
    """Every column's type by the CSV rules, counted block by block, and the row count."""
    rows = 0
    present = dict.fromkeys(header, 0)
    ints = dict.fromkeys(header, 0)
    with closing(_blocks(stream, header)) as blocks:
        for batch in blocks:
            if has_blank_row(batch):
                raise _Declined
            rows += batch.num_rows
            for name, column in zip(header, batch.columns, strict=True):
                if pc.any(pc.match_substring(column, '"')).as_py():
                    raise _Declined  # a quote: the csv module's quoting rules decide
                matches = pc.sum(pc.match_substring_regex(column, CSV_INT_PATTERN)).as_py() or 0
                if matches:
                    pc.cast(column, pa.int64())  # ArrowInvalid beyond int64, or if text
                present[name] += len(column) - column.null_count
                ints[name] += matches
    if rows == 0:
        raise _Declined
    types = {}
    for name in header:
        if present[name] == 0:
            types[name] = "null"
        elif ints[name] == 0:
            types[name] = "string"
        elif ints[name] == present[name]:
            types[name] = "int64"
        else:
            raise _Declined  # "mixed": its note names lines, which the exact reader knows
    return types, rows


def _array(column: pa.Array, kind: str) -> pa.Array:
    """A column read as text as an Arrow array of its type (int64, string or null)."""
    if kind == "int64":
        return pc.cast(column, pa.int64())
    if kind == "null":
        return pa.nulls(len(column))
    return column
