"""Where an output goes: checked before anything is written, and complete or absent after.

A local output is written to a hidden temporary file beside it and renamed into place
(`atomic_file`). An `s3://` output is written to an anonymous local temporary file and uploaded
when the block completes; S3 replaces an object all at once, so readers never see part of it.
After an error nothing is left: no temporary file, no object.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from featurepull.config import S3Settings
from featurepull.io import _s3
from featurepull.io._atomic import atomic_file
from featurepull.io._formats import (
    FileFormat,
    S3Location,
    file_format,
    s3_location,
    unsupported_format_message,
)
from featurepull.io._row_view import OutputError


def output_format(path: str) -> FileFormat:
    """The format of output `path`, from its extension; OutputError if it names none (or if
    `path` is an s3:// URL without a bucket or key)."""
    _output_location(path)
    fmt = file_format(path)
    if fmt is None:
        raise OutputError(unsupported_format_message(path))
    return fmt


def check_destination(
    path: str, overwrite: bool = False, s3: S3Settings | None = None
) -> None:
    """Raise OutputError unless rows could be written to `path` now.

    Checks the extension, then: a local path must not be a directory, must not exist unless
    `overwrite`, and its directory must exist; an `s3://` object's bucket must exist and be
    reachable, and the object must not exist unless `overwrite`. Writes nothing.
    """
    output_format(path)
    location = _output_location(path)
    if location is None:
        _check_local(path, overwrite)
    else:
        _check_s3(location, overwrite, s3 or S3Settings())


@contextmanager
def open_output(
    path: str, *, overwrite: bool, s3: S3Settings | None
) -> Iterator[BinaryIO]:
    """A binary stream whose bytes become `path` only if the `with` block completes.

    `check_destination` runs first. Failures of the output itself (creating, syncing, renaming,
    uploading) are OutputError; exceptions raised in the block pass through unchanged.
    """
    check_destination(path, overwrite, s3)
    location = _output_location(path)
    if location is None:
        with _local_output(path) as stream:
            yield stream
    else:
        with _s3_output(location, overwrite, s3 or S3Settings()) as stream:
            yield stream


@contextmanager
def reporting_write_errors(path: str) -> Iterator[None]:
    """Turn an OSError raised while writing output `path` into an OutputError saying why."""
    try:
        yield
    except OSError as exc:
        raise _write_error(path, exc) from exc


def _output_location(path: str) -> S3Location | None:
    try:
        return s3_location(path)
    except ValueError as exc:
        raise OutputError(str(exc)) from None


def _exists_message(path: str) -> str:
    return f"{path} exists; pass --overwrite to replace it"


def _check_local(path: str, overwrite: bool) -> None:
    if os.path.isdir(path):
        raise OutputError(f"{path} is a directory; give the path of an output file")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(_exists_message(path))
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(
            f"{path}: directory {directory} does not exist; create it or choose another path"
        )


def _check_s3(location: S3Location, overwrite: bool, settings: S3Settings) -> None:
    try:
        _s3.require_bucket(location, settings)
        exists = not overwrite and _s3.object_exists(location, settings)
    except _s3.S3Error as exc:
        raise OutputError(str(exc)) from None
    if exists:
        raise OutputError(_exists_message(location.uri))


def _write_error(path: str, exc: OSError) -> OutputError:
    # An s3:// output is staged in the temporary directory, a local one beside itself.
    if s3_location(path) is None:
        directory = os.path.dirname(os.path.abspath(path))
    else:
        directory = tempfile.gettempdir()
    return OutputError(
        f"{path}: cannot write the output ({exc.strerror or exc}); check that {directory} "
        "is writable and has free space"
    )


@contextmanager
def _local_output(path: str) -> Iterator[BinaryIO]:
    failed_inside = False
    try:
        with atomic_file(path) as stream:
            try:
                yield stream
            except BaseException:
                failed_inside = True
                raise
    except OSError as exc:
        if failed_inside:
            raise
        raise _write_error(path, exc) from exc


@contextmanager
def _s3_output(
    location: S3Location, overwrite: bool, settings: S3Settings
) -> Iterator[BinaryIO]:
    try:
        # Anonymous (already unlinked on Linux): nothing can be left behind, even by a crash.
        scratch = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise _write_error(location.uri, exc) from exc
    with scratch:
        yield scratch
        with reporting_write_errors(location.uri):
            scratch.flush()
            _upload(scratch, location, overwrite, settings)


def _upload(
    stream: BinaryIO, location: S3Location, overwrite: bool, settings: S3Settings
) -> None:
    try:
        # Looked for again: writing can take long enough for another job to create it.
        if not overwrite and _s3.object_exists(location, settings):
            raise OutputError(_exists_message(location.uri))
        _s3.upload(stream, location, settings)
    except _s3.S3Error as exc:
        raise OutputError(str(exc)) from None
