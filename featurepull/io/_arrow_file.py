"""An open entity file as Arrow's own file object, for the pyarrow readers that read on
Arrow's I/O threads (the CSV readers' readahead runs there even with use_threads=False).
Given a Python file object, such a thread calls back into Python for each read and for
releasing the file: one still pending when a refused file ends the process needs the GIL
during interpreter shutdown, and the process aborts ("terminate called without an active
exception", exit -6) instead of exiting 2 (apache/arrow#34314, #45017)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pyarrow as pa


@contextmanager
def arrow_file(stream: BinaryIO) -> Iterator[pa.NativeFile | BinaryIO]:
    """The file behind ``stream`` opened again by Arrow (at offset 0, closed on exit); a
    stream without a descriptor (io.BytesIO), or on a system without /dev/fd, as it is."""
    try:
        native = pa.OSFile(f"/dev/fd/{stream.fileno()}")
    except (AttributeError, OSError):  # io.UnsupportedOperation, ArrowIOError: OSErrors
        yield stream
        return
    with native:
        yield native
