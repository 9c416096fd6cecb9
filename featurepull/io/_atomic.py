"""Replace a local file all at once: readers see the old file or the complete new one."""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

# Large buffered writes: the sinks emit many small pieces (one CSV line, one JSON object).
_BUFFER_BYTES = 1 << 20


def temporary_name(path: str) -> str:
    """The hidden temporary file, beside `path`, that `atomic_file` writes first."""
    # pid + random part: two processes (or threads) writing the same output never collide.
    return _temporary_prefix(path, os.getpid()) + secrets.token_hex(4)


def temporaries_of(path: str, pid: int) -> list[str]:
    """The temporary files process `pid` has beside `path` (one it left when killed)."""
    return glob.glob(glob.escape(_temporary_prefix(path, pid)) + "*")


def _temporary_prefix(path: str, pid: int) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp-{pid}-")


@contextmanager
def atomic_file(path: str, witness: str | None = None) -> Iterator[BinaryIO]:
    """A binary stream whose bytes replace `path` only if the `with` block completes.

    The data goes to a temporary file in the same directory (so the final rename cannot cross
    filesystems), is fsynced, then renamed over `path`. On any error, including an interrupt,
    the temporary file is removed and `path` is untouched. OSError propagates to the caller.
    With `witness` (a path on the same filesystem), the complete file is hard-linked there
    just before the rename: a writer killed right after it can tell that `path` is its own.
    """
    temporary = temporary_name(path)
    # 0o666 before the umask, as open() does; mkstemp's 0o600 would make the output private.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(descriptor, "wb", buffering=_BUFFER_BYTES) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        if witness is not None:
            link_over(temporary, witness)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_directory(os.path.dirname(temporary))


def link_over(source: str, target: str) -> None:
    """Hard-link `source` at `target`, replacing whatever `target` was, atomically."""
    temporary = temporary_name(target)
    os.link(source, temporary)
    try:
        os.replace(temporary, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _sync_directory(directory: str) -> None:
    # Without this a crash right after the rename can lose the new directory entry. Some
    # filesystems refuse to fsync a directory; the data itself is already on disk then.
    with suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
