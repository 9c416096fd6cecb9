"""Damage a file the way a crash of the machine holding it can."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def tear_first_page(path: Path) -> None:
    """Zeros in the first data page of a Parquet file's first column: its checksum no
    longer matches, its footer still reads."""
    data = bytearray(path.read_bytes())
    page = pq.ParquetFile(path).metadata.row_group(0).column(0).data_page_offset
    data[page + 30:page + 60] = bytes(30)
    path.write_bytes(data)
