"""Which file format a path names, and whether the path is one this build can open.

Formats follow the file extension, for entity sources and row sinks alike. This is also the
one place that tells local paths from remote URLs, so `s3://` support can be added behind the
same `read_entities` / `write_rows` functions without touching their callers.
"""

from __future__ import annotations

from typing import Literal

FileFormat = Literal["csv", "parquet", "jsonl"]

_FORMATS: dict[str, FileFormat] = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_FORMATS)

_REMOTE_SCHEMES = ("s3://",)


def file_format(path: str) -> FileFormat | None:
    """The format a path's extension names (case-insensitive), or None if it names none."""
    lowered = path.lower()
    for extension, fmt in _FORMATS.items():
        if lowered.endswith(extension):
            return fmt
    return None


def unsupported_format_message(path: str) -> str:
    """The error text for a path whose extension is not one we read or write."""
    supported = ", ".join(SUPPORTED_EXTENSIONS)
    return (
        f"{path}: unsupported file extension; the format follows the extension, "
        f"use one of {supported}"
    )


def remote_path_message(path: str) -> str | None:
    """The error text for a remote URL (not supported yet), or None for a local path."""
    if path.startswith(_REMOTE_SCHEMES):
        scheme = path.split("://", 1)[0]
        return (
            f"{path}: {scheme}:// paths are not supported yet; "
            "copy the object to a local file and pass that path"
        )
    return None
