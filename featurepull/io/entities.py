"""Read entity keys from a .csv, .parquet or .jsonl file, local or s3://, in file order.

Each column gets a logical type, and the type decides which Feast join-key type the keys are
serialized as ("int64" -> INT64, "int32" -> INT32, "string" -> STRING, "bytes" -> BYTES, ...).
So the rules are part of the contract:

Parquet, from the Arrow schema:
    int8, int16, int32                           -> "int32"
    int64, uint8, uint16, uint32, uint64         -> "int64"  (a uint64 above 2**63-1 is an error)
    string, large_string                         -> "string"
    binary, large_binary, fixed_size_binary      -> "bytes"
    float16, float32, float64                    -> "float"
    bool -> "bool";  null (an all-null column)   -> "null"
    A dictionary-encoded column takes the type of its values. A column of any other type
    (timestamp, date, decimal, list, struct, ...) cannot hold entity keys: it is an error when
    the column is required and is left out of the table otherwise, so a Feast entity dataframe
    with an event_timestamp column still reads.
JSONL, one JSON object per line (blank lines skipped):
    integer -> "int64" (outside the int64 range is an error), string -> "string",
    float -> "float", true/false -> "bool", only nulls -> "null". A key absent from a line is
    null there. A column mixing JSON types (17 on one line, "17" on another, or 17 and 17.5)
    is an error naming the column and the first line with the other type. A column holding an
    array or object cannot hold entity keys: an error when required, else left out (as
    Parquet) with a note naming its first such line.
CSV, the first line is the header (a blank line is an error, an empty field is null):
    "int64" when every non-empty value is a plain integer (0 or -?[1-9][0-9]*, within int64);
    "string" when none is ("007", "abc", "1.0", "-0", "1_00": ids are never mangled);
    "mixed" when some are and some are not ("1" and "abc", "7" and "007"): values stay text,
    and `EntityTable.notes` names the first line of each kind, because which join-key type
    such a column holds is the user's call (`--join-key-types`). An all-empty column is
    "null". CSV never yields "bytes". (docs/files.md has the rules for users.)

Every error is an EntityFileError naming the file, the line (1-based; the CSV header is line 1)
or Parquet row (1-based, data rows only), and what to do. A required column must exist and must
not hold a null or empty ("") value on any row.

An `s3://bucket/key` file is downloaded to an anonymous temporary file, read by the same
readers (messages name the s3:// URL), and removed; a missing bucket or key, or denied access,
is an EntityFileError naming the URL and what to check.

A job's reads are bounded before they start (`limits`, the job settings): a file larger than
`max_entity_file_bytes` is refused from its size (stat, or an S3 HEAD) without reading it, and
a Parquet file whose footer counts more than `max_entities` rows before a column is decoded —
a few kilobytes of run-length encoded Parquet can hold a billion rows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, BinaryIO, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.config import JobSettings, S3Settings
from featurepull.io import _s3
from featurepull.io._atomic import file_identity
from featurepull.io._csv_entities import read_csv
from featurepull.io._csv_stream import stream_csv
from featurepull.io._entity_table import (
    EntityFileChanged,
    EntityFileError,
    EntityStream,
    EntityTable,
    StreamDeclined,
)
from featurepull.io._formats import (
    FileFormat,
    S3Location,
    file_format,
    s3_location,
    unsupported_format_message,
)
from featurepull.io._jsonl_entities import read_jsonl, stream_jsonl
from featurepull.io._parquet_entities import read_parquet, stream_parquet

__all__ = ["EntityFileChanged", "EntityFileError", "EntityStream", "EntityTable",
           "check_entity_file_size", "read_entities", "stream_entities", "too_many_entities"]

_Batch = TypeVar("_Batch", dict[str, list[Any]], dict[str, Any])

_READERS: dict[FileFormat, Callable[[BinaryIO, str, tuple[str, ...]], EntityTable]] = {
    "csv": read_csv,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
}
_STREAMERS: dict[FileFormat, Callable[[BinaryIO, str], EntityStream | None]] = {
    "csv": stream_csv,
    "jsonl": stream_jsonl,
    "parquet": stream_parquet,
}


def read_entities(
    path: str, required: Sequence[str] = (), *, s3: S3Settings | None = None,
    limits: JobSettings | None = None,
) -> EntityTable:
    """Read every entity row of a .csv, .parquet or .jsonl file, typed by the module's rules.

    `required` names the key columns the caller needs: each must exist and be non-empty on
    every row. `path` may be `s3://bucket/key`, reached with the `s3` settings. `limits`
    (a job's settings) bounds the file's bytes and, for Parquet, its rows before reading.
    """
    needed = (required,) if isinstance(required, str) else tuple(required)
    with _opened(path, s3, limits) as (fmt, stream):
        identity = file_identity(stream.fileno())
        table = _READERS[fmt](stream, path, needed)
        _check_unchanged(stream, path, identity)  # a JSONL file is read in two passes
        return table


@contextmanager
def stream_entities(path: str, *, s3: S3Settings | None = None,
                    limits: JobSettings | None = None,
                    first_block: bool = False) -> Iterator[EntityStream | None]:
    """The file as an EntityStream (types first, then rows a batch at a time: memory that
    does not grow with the file), open until the block ends; None when it must be read
    whole with `read_entities` (a CSV file only the exact reader can type). Opening fails
    as `read_entities` does (a JSONL file's refusals come from its typing pass, here). A file
    rewritten in place since it was opened is refused (EntityFileChanged) as its rows are
    read: before the first batch and after the last. ``first_block``: a CSV file typed by
    its first block (`EntityStream.first_block_types`)."""
    with _opened(path, s3, limits) as (fmt, stream):
        identity = file_identity(stream.fileno())
        entities = (stream_csv(stream, path, first_block=True) if first_block and fmt == "csv"
                    else _STREAMERS[fmt](stream, path))
        yield None if entities is None else _read_unchanged(entities, stream, identity)


def _read_unchanged(entities: EntityStream, stream: BinaryIO,
                    identity: str | None) -> EntityStream:
    """`entities` whose rows are refused unless the file is still the one its types came
    from: the types and the rows are two passes over it."""

    def checked(read: Callable[[Sequence[str]], Iterator[_Batch]]
                ) -> Callable[[Sequence[str]], Iterator[_Batch]]:
        def batches(names: Sequence[str]) -> Iterator[_Batch]:
            _check_unchanged(stream, entities.source, identity)
            try:
                yield from read(names)
            except StreamDeclined:  # rows that a writer was still writing, maybe
                _check_unchanged(stream, entities.source, identity)
                raise
            _check_unchanged(stream, entities.source, identity)
        return batches

    arrow = entities.arrow_batches
    return replace(entities, batches=checked(entities.batches),
                   arrow_batches=None if arrow is None else checked(arrow))


def _check_unchanged(stream: BinaryIO, source: str, identity: str | None) -> None:
    if file_identity(stream.fileno()) != identity:
        raise EntityFileChanged(
            f"{source}: changed while it was read (its size or modification time is not what "
            "it was when it was opened); submit it again once it is complete")


@contextmanager
def _opened(path: str, s3: S3Settings | None,
            limits: JobSettings | None) -> Iterator[tuple[FileFormat, BinaryIO]]:
    """The file's format and its bytes, once the checks before reading pass."""
    try:
        location = s3_location(path)
    except ValueError as exc:
        raise EntityFileError(str(exc)) from None
    fmt = file_format(path)
    if fmt is None:
        raise EntityFileError(unsupported_format_message(path))
    max_bytes = limits.max_entity_file_bytes if limits is not None else None
    opened = (_open_local(path, max_bytes) if location is None
              else _open_s3(location, s3 or S3Settings(), max_bytes))
    with opened as stream:
        _check_not_empty(stream, path)
        if limits is not None and fmt == "parquet":
            _check_parquet_rows(stream, path, limits.max_entities)
        yield fmt, stream


def check_entity_file_size(source: str, size: int, limit: int | None) -> None:
    """Refuse an entity file of more than ``limit`` bytes (jobs.max_entity_file_bytes)."""
    if limit is not None and size > limit:
        raise EntityFileError(
            f"{source} is {size:,} bytes; this deployment reads entity files of at most "
            f"{limit:,} bytes (jobs.max_entity_file_bytes); split it into several jobs, "
            "or raise the limit if the workers have the memory for it"
        )


def too_many_entities(source: str, rows: int, limit: int) -> EntityFileError:
    """The error for an entity file of more than ``limit`` rows (jobs.max_entities)."""
    return EntityFileError(f"{source} has {rows:,} entities; this deployment accepts at most "
                           f"{limit:,} per job (jobs.max_entities); split the file or raise "
                           "the limit")


def _check_parquet_rows(stream: BinaryIO, source: str, limit: int) -> None:
    try:
        rows = pq.ParquetFile(stream).metadata.num_rows
    except (pa.ArrowException, OSError):
        return  # not readable as Parquet: the reader says so, with its own message
    finally:
        stream.seek(0)
    if rows > limit:
        raise too_many_entities(source, rows, limit)


@contextmanager
def _open_local(path: str, max_bytes: int | None = None) -> Iterator[BinaryIO]:
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the `with` below
    except FileNotFoundError:
        raise EntityFileError(f"{path}: entity file not found; check the path") from None
    except IsADirectoryError:
        raise EntityFileError(f"{path} is a directory; pass an entity file") from None
    except OSError as exc:
        raise EntityFileError(
            f"{path}: cannot open the entity file ({exc.strerror}); check its permissions"
        ) from None
    with stream:
        check_entity_file_size(path, os.fstat(stream.fileno()).st_size, max_bytes)
        yield stream


@contextmanager
def _open_s3(location: S3Location, settings: S3Settings,
             max_bytes: int | None = None) -> Iterator[BinaryIO]:
    if max_bytes is not None:
        try:
            size = _s3.object_size(location, settings)
        except _s3.S3Error as exc:
            raise EntityFileError(str(exc)) from None
        check_entity_file_size(location.uri, size, max_bytes)
    try:
        # Anonymous (already unlinked on Linux): removed on close, or by the OS after a crash.
        stream = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise EntityFileError(
            f"{location.uri}: cannot make a temporary file to download it into "
            f"({exc.strerror}); check that {tempfile.gettempdir()} is writable"
        ) from None
    with stream:
        try:
            _s3.download(location, settings, stream)
        except _s3.S3Error as exc:
            raise EntityFileError(str(exc)) from None
        except OSError as exc:
            raise EntityFileError(
                f"{location.uri}: cannot download it ({exc.strerror or exc}); check that "
                f"{tempfile.gettempdir()} has room for the file"
            ) from None
        stream.seek(0)
        yield stream


def _check_not_empty(stream: BinaryIO, source: str) -> None:
    if os.fstat(stream.fileno()).st_size == 0:
        raise EntityFileError(
            f"{source} is empty (0 bytes) and has no entity rows; "
            "write a header or schema and one row per entity"
        )
