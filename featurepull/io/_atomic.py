"""Replace a local file all at once: readers see the old file or the complete new one."""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
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
def atomic_file(path: str, before_replace: Callable[[str], None] | None = None,
                durable: bool = True) -> Iterator[BinaryIO]:
    """A binary stream whose bytes replace `path` only if the `with` block completes.

    The data goes to a temporary file in the same directory (so the final rename cannot cross
    filesystems), is fsynced, then renamed over `path`. On any error, including an interrupt,
    the temporary file is removed and `path` is untouched. OSError propagates to the caller.
    `before_replace` is called with the complete temporary file's path just before the
    rename (to record its `file_identity`: a writer killed right after the rename can then
    tell that `path` is its own). Not `durable`: no fsync, of the file or its directory (a
    crash of the machine may then lose or truncate it; readers still never see it partial).
    """
    temporary = temporary_name(path)
    # 0o666 before the umask, as open() does; mkstemp's 0o600 would make the output private.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(descriptor, "wb", buffering=_BUFFER_BYTES) as stream:
            try:
                yield stream
            except BaseException:
                close_failed(stream)
                raise
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        if before_replace is not None:
            before_replace(temporary)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if durable:
        _sync_directory(os.path.dirname(temporary))


def start_writeback(stream: BinaryIO) -> None:
    """Flush `stream` and have the kernel start writing its file's dirty pages to disk now,
    without waiting (Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, as PostgreSQL's
    ``*_flush_after``; elsewhere nothing): a file written in large pieces is then mostly on
    disk by its fsync, which waits for less. A hint, not a durability step: the fsync
    still makes the file durable, and reports what fails."""
    stream.flush()
    writeback = _sync_file_range()
    if writeback is not None:
        writeback(stream.fileno(), 0, 0, _SYNC_FILE_RANGE_WRITE)


_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h


@cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    # None where libc has no such call. (ctypes is loaded already where Arrow is.)
    import ctypes

    function = getattr(ctypes.CDLL(None), "sync_file_range", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def close_failed(stream: BinaryIO) -> None:
    """Close the stream of an output whose writing failed, its buffered rest unwritten:
    flushing it fails again on a full disk, and that error must not replace the first."""
    with suppress(OSError):
        stream.close()


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


def file_identity(path: str | int) -> str | None:
    """What tells one file from another at `path` across a rename (device, inode, size,
    modification time); None when there is no file there. `path` may be an open file's
    descriptor: a file rewritten in place then differs from before (its size or time)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def _sync_directory(directory: str) -> None:
    # Without this a crash right after the rename can lose the new directory entry. Some
    # filesystems refuse to fsync a directory; the data itself is already on disk then.
    with suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
