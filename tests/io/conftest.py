"""What the output tests share: an OS error in the middle of writing, on demand."""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

FileSizeLimit = Callable[[int], AbstractContextManager[None]]


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    # A write past `limit` bytes fails with EFBIG ("File too large"), as one on a full disk
    # fails with ENOSPC; SIGXFSZ, which would end the process, is ignored meanwhile.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.fixture
def file_size_limit() -> FileSizeLimit:
    """`with file_size_limit(n):` files this process writes cannot grow past n bytes."""
    return _file_size_limit
