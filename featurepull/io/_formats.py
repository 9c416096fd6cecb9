"""Which file format a path names, and whether the path is local or an `s3://` object.

Formats follow the file extension, for entity sources and row sinks alike. This is also the
one place that tells local paths from remote URLs: everything else asks `s3_location`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FileFormat = Literal["csv", "parquet", "jsonl"]

_FORMATS: dict[str, FileFormat] = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_FORMATS)

_S3_SCHEME = "s3://"


def file_format(path: str) -> FileFormat | None:
    """The format a path's extension names (case-insensitive), or None if it names none."""
    lowered = path.lower()
    for extension, fmt in _FORMATS.items():
        if lowered.endswith(extension):
            return fmt
    return None


def is_dataset(path: str) -> bool:
    """Whether an output path names a Parquet dataset (a directory or s3:// prefix, written as
    part files): it ends in a slash."""
    return path.endswith("/")


def unsupported_format_message(path: str) -> str:
    """The error text for a path whose extension is not one we read or write."""
    supported = ", ".join(SUPPORTED_EXTENSIONS)
    return (
        f"{path}: unsupported file extension; the format follows the extension, "
        f"use one of {supported} (or end an output path in / for a Parquet dataset)"
    )


@dataclass(frozen=True)
class S3Location:
    """An object in S3: the bucket and the key an `s3://bucket/key` URL names."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The location as an `s3://` URL, as messages name it."""
        return f"{_S3_SCHEME}{self.bucket}/{self.key}"


def s3_location(path: str) -> S3Location | None:
    """The S3 object an `s3://bucket/key` URL names, or None for a local path.

    Raises ValueError, naming the URL, when it lacks the bucket or the key.
    """
    if not path.startswith(_S3_SCHEME):
        return None
    bucket, _, key = path[len(_S3_SCHEME):].partition("/")
    if not bucket or not key:
        raise ValueError(
            f"{path}: an S3 URL needs a bucket and a key, as in s3://my-bucket/path/file.parquet"
        )
    return S3Location(bucket, key)
