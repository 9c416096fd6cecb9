"""pyarrow's readers never call back into Python from Arrow's own threads for an entity
file: such a call still pending when a refused file ends the process needs the GIL during
interpreter shutdown, and the process aborts (exit -6, "terminate called without an active
exception") instead of exiting 2. The file object records the thread of every call."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.io._csv_entities import read_csv_fast
from featurepull.io._csv_stream import stream_csv
from featurepull.io._parquet_entities import stream_parquet

ROWS = 20_000


class Recorded(io.FileIO):
    """A real file whose read, seek and tell note the thread that called them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.threads: set[int] = set()

    def read(self, size: int | None = -1) -> bytes:
        self.threads.add(threading.get_ident())
        return super().read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.threads.add(threading.get_ident())
        return super().seek(offset, whence)

    def tell(self) -> int:
        self.threads.add(threading.get_ident())
        return super().tell()


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("csv") / "ids.csv"
    path.write_text("user_id,n\n" + "".join(f"u{i},{i}\n" for i in range(ROWS)))
    return path


def test_the_streaming_csv_reader_reads_on_arrow_threads_without_python(csv_file: Path) -> None:
    with Recorded(csv_file) as stream:
        entities = stream_csv(stream, str(csv_file))
        assert entities is not None and entities.arrow_batches is not None
        assert sum(len(b["user_id"]) for b in entities.arrow_batches(["user_id"])) == ROWS
        # A refusal mid-stream: the generator is dropped after its first batch.
        next(iter(entities.arrow_batches(["n"])))
    assert stream.threads == {threading.get_ident()}


def test_the_whole_file_csv_reader_reads_on_arrow_threads_without_python(
        csv_file: Path) -> None:
    with Recorded(csv_file) as stream:
        table = read_csv_fast(stream, str(csv_file), ("user_id",))
    assert table is not None and len(table.columns["user_id"]) == ROWS
    assert stream.threads == {threading.get_ident()}


def test_the_parquet_reader_reads_on_the_callers_thread(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"user_id": [f"u{i}" for i in range(ROWS)],
                             "n": list(range(ROWS))}), path, row_group_size=5_000)
    with Recorded(path) as stream:
        entities = stream_parquet(stream, str(path), ("user_id",))
        assert sum(len(b["user_id"]) for b in entities.batches(["user_id", "n"])) == ROWS
        assert entities.arrow_batches is not None  # what a streamed submit reads
        assert sum(len(b["n"]) for b in entities.arrow_batches(["user_id", "n"])) == ROWS
    assert stream.threads == {threading.get_ident()}
