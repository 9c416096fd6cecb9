"""Write feature rows to a .csv, .parquet or .jsonl file, local or s3://, all at once or not at all.

Columns: the entity key columns (in the order given), then `event_timestamp`, then the features
in the requested order; one output row per input row. `rows[i]` is None for an entity with no
item (null timestamp and features) or `(event_timestamp, f1, f2, ...)`.

Encoding per format:
    Parquet  the table `rows_to_table` makes (`featurepull.io.tables`): each key and feature
             column gets the type pyarrow infers from its values (an all-None column is the
             null type); event_timestamp is timestamp[us, tz=UTC]. A column pyarrow cannot
             type (ints and strs, say) is an OutputError naming the column, the two Python
             types and the rows holding them.
    CSV      a header line; None is an empty field, bools are true/false, bytes base64,
             datetimes ISO 8601, lists and dicts JSON text.
    JSONL    one object per line; bytes base64, datetimes ISO 8601 strings.
CSV and JSONL write each column as the text of the type the Parquet output gives it (an int
among floats as its double, 1.0): the bytes a job's finisher writes from its shards' Parquet
parts. A column no Arrow type holds (ints and strings, ints beyond 64 bits), or whose type
would change what a value says (`_typed_or_as_is`), is written value by value as it is, and so
is every column when an event time is not in UTC (each keeps its
own offset): a column at a time where the values allow (`_text_columns`), else row by row,
the same bytes either way.

A local output goes to a hidden temporary file beside it, which is fsynced and then renamed
over it; an s3:// output is staged in a local temporary file and uploaded at the end. After any
error nothing is left behind. Rows are numbered from 1 in messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timezone
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa

from featurepull.arrow_columns import python_columns
from featurepull.config import S3Settings
from featurepull.io._columnar import columnar_parts, found_columns, typed_column, zones
from featurepull.io._destinations import check_destination, output_format, reporting_write_errors
from featurepull.io._encoders import open_encoder, text_encoder
from featurepull.io._row_view import CHUNK_ROWS, EVENT_TIMESTAMP, OutputError, RowView
from featurepull.io._text_columns import TextFormat, text_array
from featurepull.io.sink import open_sink
from featurepull.io.tables import ARROW_VALUE_ERRORS, arrow_batches, arrow_schema

__all__ = ["CHUNK_ROWS", "EVENT_TIMESTAMP", "OutputError", "write_rows"]

T = TypeVar("T")


def write_rows(
    path: str,
    key_columns: dict[str, Any],
    rows: Sequence[tuple[Any, ...] | None],
    features: Sequence[str],
    *,
    overwrite: bool = False,
    s3: S3Settings | None = None,
) -> int:
    """Write one output row per input row to `path` (format from its extension).

    `path` may be `s3://bucket/key` (reached with the `s3` settings). Refuses an existing
    output unless `overwrite`. Returns the number of rows written. A key column may also be
    an Arrow array (an entity file's, as read): the same file.
    """
    fmt = output_format(path)
    # Before the rows are looked at (typing millions of values takes a while); opening the
    # output checks again, just before the first byte is written.
    check_destination(path, overwrite, s3)
    view = RowView(path, key_columns, rows, tuple(features))
    total = len(rows)
    parts = columnar_parts(view) if fmt == "parquet" else None
    if parts is not None:
        with open_sink(path, parts.schema, overwrite=overwrite, s3=s3, keys=key_columns) as sink:
            # Each row group's rows taken into order on a thread while the one before is
            # encoded (both in Arrow, without the GIL).
            for table in _made_ahead(parts.rows, range(0, total, CHUNK_ROWS), CHUNK_ROWS):
                sink.write(table)
        return total
    texts = None if fmt == "parquet" else _column_texts(view, fmt)
    if texts is None:
        view = _by_row(view)
        view.validate()
    if fmt == "parquet":
        schema = arrow_schema(view)
        with open_sink(path, schema, overwrite=overwrite, s3=s3, keys=key_columns) as sink:
            for batch in arrow_batches(view, schema):
                sink.write(pa.Table.from_batches([batch]))
        return total
    make = partial(text_encoder, fmt, names=view.names, source=path)
    with open_encoder(path, make, overwrite=overwrite, s3=s3) as encoder:
        for start in range(0, total, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, total)
            chunk = None if texts is None else texts(start, stop)
            with reporting_write_errors(path):
                if chunk is None or not encoder.write_texts(chunk):
                    view = _by_row(view)
                    encoder.write_records(view.records(start, stop), start + 1)
    return total


def _by_row(view: RowView) -> RowView:
    """The view for the paths that look at each value, whose messages name the row: its
    key columns as Python values (an Arrow one, as `rows_to_table` takes it, converted)."""
    columns = python_columns(view.key_columns)
    if columns is view.key_columns:
        return view
    return RowView(view.source, dict(columns), view.rows, view.features)


def _made_ahead(make: Callable[[int, int], T], starts: Iterable[int], count: int
               ) -> Iterator[T]:
    """``make(start, count)`` for each of ``starts``, in order, each made on a thread while
    the caller uses the one before."""
    with ThreadPoolExecutor(1, thread_name_prefix="featurepull-output") as pool:
        pending: Future[T] | None = None
        for start in starts:
            future = pool.submit(make, start, count)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def _column_texts(view: RowView, fmt: TextFormat
                  ) -> Callable[[int, int], list[pa.Array] | None] | None:
    """Rows [start, stop) as each output column's field texts (`text_array`), or None for
    rows to write one by one: the found rows' texts made once, the keys' a chunk at a time
    (memory for one chunk's text, not the output's), each found column typed as the module
    says. None when every row must be checked."""
    split = found_columns(view) if len(view.names) > 1 else None
    if split is None:
        return None
    found, found_index = split
    features = [_texts_in_order(_typed_or_as_is(values), found_index, fmt) for values in found]
    found_texts = [texts for texts in features if texts is not None]
    if len(found_texts) != len(features):
        return None

    def chunk(start: int, stop: int) -> list[pa.Array] | None:
        keys = [text_array(values[start:stop], fmt) for values in view.key_columns.values()]
        key_texts = [texts for texts in keys if texts is not None]
        if len(key_texts) != len(keys):
            return None
        return [*key_texts, *(texts.slice(start, stop - start) for texts in found_texts)]

    return chunk


def _texts_in_order(column: pa.Array | Sequence[Any], found_index: pa.Array | None,
                    fmt: TextFormat) -> pa.Array | None:
    """A found column's texts in output order (`found_index`; None: already in it). A typed
    column no shorter than the output is put in order before its texts are made (taking
    numbers costs less than taking texts); else the texts of its values, taken after (when
    most rows are missing, texts of the found values alone cost less)."""
    if found_index is None:
        return text_array(column, fmt)
    if isinstance(column, pa.Array) and len(column) >= len(found_index):
        return text_array(column.take(found_index), fmt)
    texts = text_array(column, fmt)
    return None if texts is None else texts.take(found_index)


def _typed_or_as_is(values: Sequence[Any]) -> pa.Array | Sequence[Any]:
    """The column as the Parquet output's table types it, or its values as they are where
    Arrow cannot type them or its type would change what a value says: strings among bytes
    (Arrow makes them bytes, written as base64), datetimes in several zones (Arrow puts them
    all in the first one's)."""
    listed = values if isinstance(values, list) else list(values)
    try:
        typed = typed_column(listed)
    except ARROW_VALUE_ERRORS:
        return values
    if pa.types.is_binary(typed.type) and any(type(value) is str for value in listed):
        return values
    if (pa.types.is_timestamp(typed.type) and typed.type.tz is not None
            and not _one_offset(listed)):
        return values
    return typed


def _one_offset(stamps: list[Any]) -> bool:
    """Whether the aware datetimes (and Nones) have one UTC offset: one fixed-offset zone
    (`datetime.timezone`: the reader's UTC) found at C speed, else each value's offset."""
    found = zones(stamps)
    if len(found) == 1 and isinstance(found.pop(), timezone):
        return True
    return len({value.utcoffset() for value in stamps if value is not None}) <= 1
