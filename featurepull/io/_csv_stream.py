"""A CSV entity file as an EntityStream: a first pass over its blocks types every column
(the rules of `featurepull.io.entities`, in pyarrow.compute), a second reads them. Only for
files the fast reader would take whole: anything else (quotes, blank or ragged lines, a
column mixing integers and text, bad UTF-8) is left to the exact reader, which names the
line at fault.

With ``first_block=True`` (a submitter, so that its first shard is not kept waiting for the
whole file's typing pass) the types are the first block's, the rows are counted from the
bytes (a scan for line ends and quotes, ~20x cheaper than typing), and each later block's
requested columns are checked as they are read: one the whole-file pass would have typed
otherwise (or declined: a ragged or blank row, bad UTF-8) raises `StreamDeclined` there."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv

from featurepull import arrow_compute as pc
from featurepull.io._arrow_file import arrow_file
from featurepull.io._csv_entities import (
    CSV_INT_PATTERN,
    arrow_csv_options,
    has_blank_row,
    int64_column,
    plain_header,
)
from featurepull.io._entity_table import (
    INT64_MAX,
    INT64_MIN,
    EntityFileChanged,
    EntityStream,
    StreamDeclined,
)

_BLOCK_BYTES = 1 << 20  # about 100,000 rows of a one-column file per batch
_HEADER_BYTES = 1 << 16
_SCAN_BYTES = 1 << 20  # the bytes scanned for line ends at a time (first_block)


class _Declined(Exception):
    """The file holds something only the exact reader can judge."""


def stream_csv(stream: BinaryIO, source: str, *, first_block: bool = False
               ) -> EntityStream | None:
    """The file as an EntityStream after one typing pass (of its first block only, with
    ``first_block``), or None (read it whole)."""
    first = stream.read(_HEADER_BYTES)
    header = plain_header(first) if b"\n" in first else None
    if header is None:
        return None
    try:
        if first_block:
            rows = _counted_rows(stream)
            types = _column_types(stream, header, first_block=True)[0]
        else:
            types, rows = _column_types(stream, header)
    except (_Declined, pa.ArrowInvalid):
        return None

    def arrow_batches(names: Sequence[str]) -> Iterator[dict[str, Any]]:
        if first_block:
            yield from _checked_batches(stream, header, names, types, rows, source)
            return
        with closing(_blocks(stream, header)) as blocks:
            for batch in blocks:
                yield {name: _array(batch.column(name), types[name]) for name in names}

    def batches(names: Sequence[str]) -> Iterator[dict[str, list[Any]]]:
        for batch in arrow_batches(names):
            yield {name: array.to_pylist() for name, array in batch.items()}

    return EntityStream(source, types, rows, batches, arrow_batches,
                        first_block_types=first_block)


def _blocks(stream: BinaryIO, header: list[str]) -> Generator[pa.RecordBatch, None, None]:
    """The file's blocks, read by Arrow from its own file object (`arrow_file`); the
    reader is closed (its readahead stopped) when the generator is closed."""
    stream.seek(0)
    with (arrow_file(stream) as source,
          pa_csv.open_csv(source, **arrow_csv_options(header, _BLOCK_BYTES)) as reader):
        yield from reader


def _first_block(stream: BinaryIO, header: list[str]
                 ) -> Generator[pa.RecordBatch, None, None]:
    """The whole lines of the file's first block, read by Arrow from a copy in memory: a
    reader given up after its first block would leave its readahead reading the file
    object (sharing its offset, when it has no descriptor of its own) behind our back."""
    stream.seek(0)
    head = stream.read(_BLOCK_BYTES)
    if len(head) == _BLOCK_BYTES:  # not the whole file: its lines up to the last LF
        head = head[:head.rfind(b"\n") + 1]
    if not head:
        raise _Declined  # a line longer than a block
    with pa_csv.open_csv(pa.BufferReader(head),
                         **arrow_csv_options(header, _BLOCK_BYTES)) as reader:
        yield from reader


def _column_types(stream: BinaryIO, header: list[str], first_block: bool = False
                  ) -> tuple[dict[str, str], int]:
    """Every column's type by the CSV rules, counted block by block (of the first block's
    whole lines only, with ``first_block``), and the row count."""
    rows = 0
    present = dict.fromkeys(header, 0)
    ints = dict.fromkeys(header, 0)
    with closing(_first_block(stream, header) if first_block
                 else _blocks(stream, header)) as read:
        for batch in read:
            if has_blank_row(batch):
                raise _Declined
            rows += batch.num_rows
            for name, column in zip(header, batch.columns, strict=True):
                # A quote: the csv module's quoting rules decide (with ``first_block``,
                # `_counted_rows` has declined a file holding one anywhere).
                if not first_block and pc.any(pc.match_substring(column, '"')).as_py():
                    raise _Declined
                here = len(column) - column.null_count
                if here and int64_column(column) is not None:
                    # Each value as Arrow writes an int64: each one the rule's (~1/3 of the
                    # regex pass's CPU at 1M ids).
                    matches = here
                else:
                    matches = pc.sum(pc.match_substring_regex(column, CSV_INT_PATTERN)
                                     ).as_py() or 0
                    if matches:
                        pc.cast(column, pa.int64())  # ArrowInvalid beyond int64, or if text
                present[name] += here
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


def _counted_rows(stream: BinaryIO) -> int:
    """The file's rows (lines after the header) counted from its bytes, as Arrow will read
    them: declined for a quote (the csv module's rules decide) or a line ended by a lone CR
    (where the count would need the CR's own rules)."""
    stream.seek(0)
    ends = 0
    last = b""
    while chunk := stream.read(_SCAN_BYTES):
        if b'"' in chunk:
            raise _Declined
        if (b"\r" in chunk or last.endswith(b"\r")) and _lone_cr(last[-1:] + chunk):
            raise _Declined
        ends += chunk.count(b"\n")
        last = chunk
    # The header's line; an unended last line (a CR alone at the end ends it for both).
    # No rows: the first block's typing declines the file.
    return ends - 1 + (not last.endswith(b"\n"))


def _lone_cr(data: bytes) -> bool:
    """Whether a CR in ``data``, but at its last byte (the next chunk's first tells), is
    not followed by a LF."""
    return data[:-1].count(b"\r") != data.count(b"\r\n")


def _checked_batches(stream: BinaryIO, header: list[str], names: Sequence[str],
                     types: dict[str, str], rows: int, source: str
                     ) -> Iterator[dict[str, Any]]:
    """The columns ``names`` a block at a time, each block checked to type them as the first
    block's lines did (the first one too: its lines were typed from a copy, whose blocks
    need not be these); and every row counted."""
    read = 0
    with closing(_blocks(stream, header)) as blocks:
        while True:
            try:
                batch = next(blocks, None)
                if batch is None:
                    break
                if has_blank_row(batch):
                    raise _Declined
                columns = {name: _checked_array(batch.column(name), types[name])
                           for name in names}
            except (_Declined, pa.ArrowInvalid) as exc:
                raise StreamDeclined(
                    f"{source}: rows after the first {read:,} need the exact CSV reader "
                    f"(a column typed otherwise than by the first rows, or a row it "
                    f"refuses{'' if isinstance(exc, _Declined) else f': {exc}'})") from None
            read += batch.num_rows
            yield columns
    if read != rows:
        raise EntityFileChanged(f"{source}: changed while it was read ({rows:,} rows counted, "
                                f"{read:,} read); submit it again once it is complete")


def _checked_array(column: pa.Array, kind: str) -> pa.Array:
    """`_array` of a later block's column, declined where the whole file's typing pass
    would not have typed the column ``kind`` (its first block's type)."""
    if kind == "int64":
        numbers = pc.cast(column, pa.int64())  # ArrowInvalid: text, or beyond int64
        # Arrow's cast also takes "007", "-0", "+3": a value of the rule is exactly the
        # text Arrow writes for its number.
        if not pc.all(pc.equal(pc.cast(numbers, pa.string()), column)).as_py():
            raise _Declined
        return numbers
    if kind == "null":
        if column.null_count != len(column):
            raise _Declined
        return pa.nulls(len(column))
    ints = pc.match_substring_regex(column, CSV_INT_PATTERN)
    # Digits beyond int64 are text (the column stays "string"); one within it makes it mixed.
    if pc.any(ints).as_py() and any(INT64_MIN <= int(value) <= INT64_MAX for value in
                                    pc.filter(column, ints).to_pylist()):
        raise _Declined
    return column


def _array(column: pa.Array, kind: str) -> pa.Array:
    """A column read as text as an Arrow array of its type (int64, string or null)."""
    if kind == "int64":
        return pc.cast(column, pa.int64())
    if kind == "null":
        return pa.nulls(len(column))
    return column
