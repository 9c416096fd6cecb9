"""Read entity keys from a local .csv, .parquet or .jsonl file, in file order.

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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from featurepull.io._csv_entities import read_csv
from featurepull.io._entity_table import EntityFileError, EntityTable
from featurepull.io._formats import (
    FileFormat,
    file_format,
    remote_path_message,
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


def read_entities(path: str, required: Sequence[str] = ()) -> EntityTable:
    """Read every entity row of a .csv, .parquet or .jsonl file, typed by the module's rules.

    `required` names the key columns the caller needs: each must exist and be non-empty on
    every row.
    """
    remote = remote_path_message(path)
    if remote is not None:
        raise EntityFileError(remote)
    fmt = file_format(path)
    if fmt is None:
        raise EntityFileError(unsupported_format_message(path))
    needed = (required,) if isinstance(required, str) else tuple(required)
    with _open_local(path) as stream:
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
        if os.fstat(stream.fileno()).st_size == 0:
            raise EntityFileError(
                f"{path} is empty (0 bytes) and has no entity rows; "
                "write a header or schema and one row per entity"
            )
        yield stream
