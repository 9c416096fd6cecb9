"""Where an output goes: checked before anything is written, and complete or absent after.

A local output is written to a hidden temporary file beside it and renamed into place
(`atomic_file`). An `s3://` output is written to an anonymous local temporary file and uploaded
when the block completes; S3 replaces an object all at once, so readers never see part of it.
After an error nothing is left: no temporary file, no object.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from featurepull.config import S3Settings
from featurepull.io import _s3
from featurepull.io._atomic import atomic_file, close_failed, file_identity, link_over
from featurepull.io._formats import (
    FileFormat,
    S3Location,
    file_format,
    is_dataset,
    s3_location,
    unsupported_format_message,
)
from featurepull.io._row_view import OutputError

OWNER_METADATA = "featurepull-owner"


@dataclass(frozen=True)
class OwnerMark:
    """How an output proves whose it is, for a writer that may die after publishing it and
    before recording that it did. An s3:// object carries `owner` in its metadata. A local
    file is hard-linked at `witness` (a path on its filesystem) just before it is renamed into
    place, so the two names are one file; once the writer has recorded the file's
    `file_identity` elsewhere, it may remove the witness and pass the identity as `recorded`."""

    owner: str
    witness: str | None = None
    recorded: str | None = None


def marked_by(path: str, mark: OwnerMark, s3: S3Settings | None = None) -> bool:
    """Whether the output at `path` is the one written with `mark`."""
    location = _output_location(path)
    if location is None:
        if mark.recorded is not None and file_identity(path) == mark.recorded:
            return True
        try:
            return mark.witness is not None and os.path.samefile(path, mark.witness)
        except OSError:
            return False
    try:
        metadata = _s3.object_metadata(location, s3 or S3Settings())
    except _s3.S3Error as exc:
        raise OutputError(str(exc)) from None
    return metadata is not None and metadata.get(OWNER_METADATA) == mark.owner


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
    reachable, and the object must not exist unless `overwrite`. A dataset (`path` ending in
    /) must be absent or hold no files (but its `_temporary/` staging) unless `overwrite`.
    Writes nothing.
    """
    if is_dataset(path):
        _check_dataset(path, overwrite, s3 or S3Settings())
        return
    output_format(path)
    location = _output_location(path)
    if location is None:
        _check_local(path, overwrite)
    else:
        _check_s3(location, overwrite, s3 or S3Settings())


@contextmanager
def open_output(
    path: str, *, overwrite: bool, s3: S3Settings | None, mark: OwnerMark | None = None
) -> Iterator[BinaryIO]:
    """A binary stream whose bytes become `path` only if the `with` block completes.

    `check_destination` runs first. Failures of the output itself (creating, syncing, renaming,
    uploading) are OutputError; exceptions raised in the block pass through unchanged. With
    `mark`, the output can later be recognised as this writer's (`marked_by`).
    """
    check_destination(path, overwrite, s3)
    location = _output_location(path)
    if location is None:
        witness = mark.witness if mark else None
        before_replace = (lambda complete: link_over(complete, witness)) if witness else None
        with _local_output(path, before_replace) as stream:
            yield stream
    else:
        metadata = {OWNER_METADATA: mark.owner} if mark else None
        with _s3_output(location, overwrite, s3 or S3Settings(), metadata) as stream:
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


STAGING_DIR = "_temporary"


def _dataset_exists_message(path: str) -> str:
    return (f"{path} already holds files; pass --overwrite to replace its dataset "
            "(part-*.parquet, _manifest.json, _SUCCESS), or name an empty or new directory")


def _check_dataset(path: str, overwrite: bool, settings: S3Settings) -> None:
    location = _output_location(path)
    if location is None:
        directory = path.rstrip("/") or "/"
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise OutputError(f"{path} is a file; a dataset output (ending in /) is a "
                              "directory: remove the file or choose another path")
        parent = os.path.dirname(os.path.abspath(directory))
        if not os.path.isdir(parent):
            raise OutputError(f"{path}: directory {parent} does not exist; create it or "
                              "choose another path")
        if (not overwrite and os.path.isdir(directory)
                and any(name != STAGING_DIR for name in os.listdir(directory))):
            raise OutputError(_dataset_exists_message(path))
        return
    try:
        _s3.require_bucket(location, settings)
        held = [] if overwrite else _s3.list_keys(location, settings)
    except _s3.S3Error as exc:
        raise OutputError(str(exc)) from None
    staging = location.key + STAGING_DIR + "/"
    if any(not key.startswith(staging) for key in held):
        raise OutputError(_dataset_exists_message(path))


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
def _local_output(path: str, before_replace: Callable[[str], None] | None
                  ) -> Iterator[BinaryIO]:
    failed_inside = False
    try:
        with atomic_file(path, before_replace) as stream:
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
    location: S3Location, overwrite: bool, settings: S3Settings,
    metadata: dict[str, str] | None = None,
) -> Iterator[BinaryIO]:
    try:
        # Anonymous (already unlinked on Linux): nothing can be left behind, even by a crash.
        scratch = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise _write_error(location.uri, exc) from exc
    with scratch:
        try:
            yield scratch
        except BaseException:
            close_failed(scratch)
            raise
        with reporting_write_errors(location.uri):
            scratch.flush()
            _upload(scratch, location, overwrite, settings, metadata)


def _upload(
    stream: BinaryIO, location: S3Location, overwrite: bool, settings: S3Settings,
    metadata: dict[str, str] | None,
) -> None:
    try:
        # Looked for again: writing can take long enough for another job to create it.
        if not overwrite and _s3.object_exists(location, settings):
            raise OutputError(_exists_message(location.uri))
        _s3.upload(stream, location, settings, metadata)
    except _s3.S3Error as exc:
        raise OutputError(str(exc)) from None
