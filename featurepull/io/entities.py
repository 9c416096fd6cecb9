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
    array or object cannot hold entity keys: an error when required, else left out (as Parquet).
CSV, the first line is the header (blank lines skipped, an empty field is null):
    "int64" when every non-empty value is an integer literal (-?[0-9]+) that fits in int64 and
    has no leading zero; otherwise "string". So "007", "-0" and "+7" keep their column a string
    and ids are never mangled. An all-empty column is "null". CSV never yields "bytes".

Every error is an EntityFileError naming the file, the line (1-based; the CSV header is line 1)
or Parquet row (1-based, data rows only), and what to do. A required column must exist and must
not hold a null or empty ("") value on any row.

An `s3://bucket/key` file is downloaded to an anonymous temporary file, read by the same
readers (messages name the s3:// URL), and removed; a missing bucket or key, or denied access,
is an EntityFileError naming the URL and what to check.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from featurepull.config import S3Settings
from featurepull.io import _s3
from featurepull.io._csv_entities import read_csv
from featurepull.io._entity_table import EntityFileError, EntityTable
from featurepull.io._formats import (
    FileFormat,
    S3Location,
    file_format,
    s3_location,
    unsupported_format_message,
)
from featurepull.io._jsonl_entities import read_jsonl
from featurepull.io._parquet_entities import read_parquet

__all__ = ["EntityFileError", "EntityTable", "read_entities"]

_READERS: dict[FileFormat, Callable[[BinaryIO, str, tuple[str, ...]], EntityTable]] = {
    "csv": read_csv,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
}


def read_entities(
    path: str, required: Sequence[str] = (), *, s3: S3Settings | None = None
) -> EntityTable:
    """Read every entity row of a .csv, .parquet or .jsonl file, typed by the module's rules.

    `required` names the key columns the caller needs: each must exist and be non-empty on
    every row. `path` may be `s3://bucket/key`, reached with the `s3` settings.
    """
    try:
        location = s3_location(path)
    except ValueError as exc:
        raise EntityFileError(str(exc)) from None
    fmt = file_format(path)
    if fmt is None:
        raise EntityFileError(unsupported_format_message(path))
    needed = (required,) if isinstance(required, str) else tuple(required)
    opened = _open_local(path) if location is None else _open_s3(location, s3 or S3Settings())
    with opened as stream:
        _check_not_empty(stream, path)
        return _READERS[fmt](stream, path, needed)


@contextmanager
def _open_local(path: str) -> Iterator[BinaryIO]:
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
        yield stream


@contextmanager
def _open_s3(location: S3Location, settings: S3Settings) -> Iterator[BinaryIO]:
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
