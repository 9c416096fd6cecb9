"""The streaming CSV reader (`stream_csv`) agrees with the csv-module reader it stands in for,
on generated files read in many small blocks: its types, row count and rows (as Python lists
and as Arrow arrays) are the exact reader's table, or it declines (None, read the file whole)
— always for a file the exact reader refuses or calls "mixed", and only for the few things
it leaves to that reader."""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from featurepull.io import EntityFileChanged, EntityFileError, _csv_stream
from featurepull.io._csv_entities import _read_csv_exactly
from featurepull.io._csv_stream import stream_csv
from featurepull.io._entity_table import EntityStream, EntityTable, StreamDeclined

pytestmark = pytest.mark.mutation_first  # in-process and fast (scripts/mutation.sh)

# What the typing rules tell apart (as tests/io/test_columnar.py), and quotes.
TOKENS = ["0", "1", "17", "-5", "007", "-0", "+3", "1.0", "abc", "é", "\uff11", "",
          "9223372036854775807", "-9223372036854775808", "x y", "-"]
BEYOND = "9223372036854775808"  # an integer's digits, beyond int64: only the exact reader
RARE = [BEYOND, "99999999999999999999", '"7"', '"x"', '"7"8']
ARROW_TYPES = {"int64": pa.int64(), "string": pa.string(), "null": pa.null()}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tuning constants, not behaviour: a few hundred rows then span many blocks, and a
    # quote or a bad value is found past the header's first read, by the typing pass.
    monkeypatch.setattr(_csv_stream, "_BLOCK_BYTES", 256)
    monkeypatch.setattr(_csv_stream, "_HEADER_BYTES", 32)


def generated_file(rng: random.Random) -> bytes:
    width = rng.randint(1, 3)
    header = [f"c{i}" for i in range(width)]
    # A kind per column, so that most files are typeable: ints (int64's edges, empties),
    # text, then rarely empty only, or any token (mostly "mixed").
    kinds = [TOKENS[:4], TOKENS[:4] + TOKENS[11:14], TOKENS[4:11], TOKENS[4:12]]
    pools = [rng.choice(kinds) if rng.random() < 0.85 else rng.choice([[""], TOKENS])
             for _ in header]
    lines = [",".join(header)]
    for _ in range(0 if rng.random() < 0.1 else rng.choice([1, rng.randint(2, 300)])):
        lines.append(",".join(rng.choice(pool) for pool in pools))
    if len(lines) > 1 and rng.random() < 0.3:  # one odd line, anywhere in the file
        line = rng.randint(1, len(lines) - 1)
        fields = lines[line].split(",")
        fields[rng.randrange(width)] = rng.choice(RARE)
        lines[line] = rng.choice([",".join(fields), "", lines[line] + ",extra"])
    end = rng.choice(["\n", "\r\n"])
    data = (end.join(lines) + end).encode()
    if rng.random() < 0.05:
        data = data[:-2] + b"\xff" + data[-2:]  # not UTF-8, near the end
    return (b"\xef\xbb\xbf" + data) if rng.random() < 0.1 else data


def exact(data: bytes) -> EntityTable | str:
    try:
        return _read_csv_exactly(io.BytesIO(data), "f.csv", ())
    except EntityFileError as exc:
        return str(exc)


def left_to_the_exact_reader(data: bytes, expected: EntityTable | str) -> bool:
    """What the stream declines: a refused file, a "mixed" column, a quote, a value that
    looks like an integer but is beyond int64, a row of empty fields (Arrow reads a blank
    line so)."""
    if isinstance(expected, str) or "mixed" in expected.types.values() or b'"' in data:
        return True
    rows = list(zip(*expected.columns.values(), strict=True))
    return any(value == BEYOND or row.count(None) == len(row) for row in rows for value in row)


def read_back(stream: EntityStream, names: list[str]) -> tuple[dict[str, list[Any]], int]:
    """Every row of ``names`` from the Python batches, checked against the Arrow batches,
    and the number of batches."""
    assert stream.arrow_batches is not None
    columns: dict[str, list[Any]] = {name: [] for name in names}
    count = 0
    # One after the other: both read the one file object when it has no descriptor.
    python, arrows = list(stream.batches(names)), list(stream.arrow_batches(names))
    for batch, arrow in zip(python, arrows, strict=True):
        assert list(batch) == list(arrow) == names
        for name in names:
            assert arrow[name].type == ARROW_TYPES[stream.types[name]]
            assert arrow[name].to_pylist() == batch[name]
            columns[name] += batch[name]
        count += 1
    return columns, count


@pytest.mark.parametrize("seed", range(3))
def test_the_stream_is_the_exact_readers_table_or_declines(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    taken = 0
    for case in range(40):
        data = generated_file(rng)
        path = tmp_path / f"{case}.csv"
        path.write_bytes(data)
        expected = exact(data)
        # A real file (Arrow reopens it) and one in memory (Arrow reads the Python object).
        with open(path, "rb") as file:
            for source in (file, io.BytesIO(data)):
                stream = stream_csv(source, str(path))
                if left_to_the_exact_reader(data, expected):
                    assert stream is None, data
                    continue
                assert isinstance(expected, EntityTable) and stream is not None, data
                assert (stream.source, stream.types, stream.notes) == (
                    str(path), expected.types, {})
                names = list(expected.columns)
                rng.shuffle(names)
                columns = read_back(stream, names)[0]
                assert columns == expected.columns
                assert stream.num_rows == len(columns[names[0]])
                # A second read starts from the top again.
                assert read_back(stream, names[:1])[0] == {names[0]: columns[names[0]]}
                taken += 1
    assert taken > 20, taken


@pytest.mark.parametrize("late", [
    '7,"a"',                 # a quote: the csv module unquotes it
    '7,"a"b',                # a quote the csv module refuses
    f"{BEYOND},a",           # an integer's digits beyond int64 in an int64 column: "mixed"
    "abc,a",                 # text in an int64 column: "mixed"
    "",                      # a blank line: refused
    ",",                     # a row of empty fields: Arrow reads a blank line so
    "1,a,extra",             # a ragged row: refused
    "1",                     # a short row: refused
])
def test_what_only_the_exact_reader_judges_is_declined_in_any_block(late: str) -> None:
    rows = ["id,name", *(f"{n},u{n}" for n in range(200))]  # many blocks of 256 bytes
    assert stream_csv(io.BytesIO(("\n".join(rows) + "\n").encode()), "f.csv") is not None
    for at in (1, 100, 200):  # in the first block, in the middle, in the last
        data = ("\n".join([*rows[:at], late, *rows[at:]]) + "\n").encode()
        assert stream_csv(io.BytesIO(data), "f.csv") is None, (late, at)


def test_a_stream_of_many_blocks_counts_every_row() -> None:
    data = ("id,name\n" + "".join(f"{n},u{n}\n" for n in range(1_000))).encode()
    stream = stream_csv(io.BytesIO(data), "f.csv")
    assert stream is not None
    assert (stream.types, stream.num_rows) == ({"id": "int64", "name": "string"}, 1_000)
    columns, blocks = read_back(stream, ["id", "name"])
    assert blocks > 10
    assert columns == {"id": list(range(1_000)), "name": [f"u{n}" for n in range(1_000)]}


def test_a_header_longer_than_the_first_read_is_left_to_the_exact_reader() -> None:
    name = "c" * 40  # past the 32 bytes of the first read here (64 KiB in use)
    data = f"{name}\n1\n2\n".encode()
    assert stream_csv(io.BytesIO(data), "f.csv") is None
    assert stream_csv(io.BytesIO(data.replace(name.encode(), b"c")), "f.csv") is not None


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_arrows_own_file_is_closed_after_each_read(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("id\n" + "".join(f"{n}\n" for n in range(1_000)))

    def open_on_the_file() -> list[str]:  # descriptors of this file, not the process's
        fds = Path("/proc/self/fd")
        return sorted(fd.name for fd in fds.iterdir()
                      if os.path.realpath(fd) == os.path.realpath(path))

    with open(path, "rb") as file:
        stream = stream_csv(file, str(path))  # the typing pass, read to the end
        assert stream is not None
        assert len(read_back(stream, ["id"])[0]["id"]) == 1_000
        batches = stream.batches(["id"])
        next(batches)  # a read given up after its first batch (a refused key)
        del batches
        assert open_on_the_file() == [str(file.fileno())]


class Unnamed:
    """A file object without `fileno` (a wrapper from another library): Arrow reads it as
    it is."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)
        self.read, self.seek, self.tell = self._file.read, self._file.seek, self._file.tell
        self.closed = False


def test_a_file_object_without_a_descriptor_is_read_as_it_is() -> None:
    data = b"id,name\n1,a\n2,b\n"
    stream = stream_csv(Unnamed(data), "f.csv")  # type: ignore[arg-type]
    assert stream is not None
    assert read_back(stream, ["name", "id"])[0] == {"name": ["a", "b"], "id": [1, 2]}


@pytest.fixture
def small_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    # The rows are counted over many reads: a CR and its LF in two of them.
    monkeypatch.setattr(_csv_stream, "_SCAN_BYTES", 7)


def written_files(folder: Path, rng: random.Random, count: int
                  ) -> Iterator[tuple[Path, bytes, EntityTable | str]]:
    """``count`` generated files, written, with what the exact reader makes of each."""
    for case in range(count):
        data = generated_file(rng)
        (folder / f"{case}.csv").write_bytes(data)
        yield folder / f"{case}.csv", data, exact(data)


def read_all(stream: EntityStream) -> dict[str, list[Any]] | StreamDeclined:
    try:
        return read_back(stream, list(stream.types))[0]
    except StreamDeclined as exc:
        return exc


@pytest.mark.parametrize("seed", range(3))
def test_a_stream_typed_by_its_first_block_is_the_whole_files_or_declines_as_read(
        tmp_path: Path, seed: int, small_scans: None) -> None:
    # first_block: the types are the first block's and the rows are counted from the bytes;
    # a later block that the typing pass would have typed otherwise raises StreamDeclined.
    declined = 0
    for path, data, expected in written_files(tmp_path, random.Random(100 + seed), 60):
        with open(path, "rb") as file:
            whole = stream_csv(file, str(path))
            early = stream_csv(file, str(path), first_block=True)
            if whole is not None:  # what the typing pass takes, read alike
                assert early is not None, data
                assert (early.types, early.num_rows) == (whole.types, whole.num_rows)
                assert read_all(early) == read_back(whole, list(whole.types))[0]
                continue
            if early is None:
                continue
            columns = read_all(early)
            if isinstance(columns, StreamDeclined):
                # Only where the whole file is refused, mixed, or has a row of empty fields.
                declined += 1
                assert isinstance(expected, str) or "mixed" in expected.types.values() or any(
                    row.count(None) == len(row)
                    for row in zip(*expected.columns.values(), strict=True)), data
                continue
            # Declined by the typing pass, taken here: digits beyond int64 in a text column.
            assert isinstance(expected, EntityTable), data
            assert (columns, early.types, early.num_rows) == (
                expected.columns, expected.types, len(columns[next(iter(columns))]))
    assert declined > 0


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_the_rows_counted_from_the_bytes_are_the_rows_read(ending: str,
                                                          small_scans: None) -> None:
    for count in (1, 2, 37, 600):
        text = "id,name" + "".join(f"\n{n},u{n}" for n in range(count))
        data = (text.replace("\n", "\r\n") if ending == "\r\n" else text) + ending
        stream = stream_csv(io.BytesIO(data.encode()), "f.csv", first_block=True)
        assert stream is not None and stream.num_rows == count
        assert read_back(stream, ["id"])[0] == {"id": list(range(count))}


@pytest.mark.parametrize("odd", [b'7,"a"', b"7,a\r8,b", b"7,a\r\r"])
def test_quotes_and_lone_carriage_returns_anywhere_are_declined_up_front(
        odd: bytes, small_scans: None) -> None:
    rows = b"id,name\n" + b"".join(b"%d,u%d\n" % (n, n) for n in range(200))
    for data in (rows + odd + b"\n", odd.join([rows[:700], rows[700:]]), rows + odd):
        assert stream_csv(io.BytesIO(data), "f.csv", first_block=True) is None, data


@pytest.mark.parametrize(("kind", "late", "taken"), [
    ("int64", "007", False), ("int64", "abc", False), ("int64", BEYOND, False),
    ("string", "5", False), ("string", "9223372036854775807", False),
    ("string", "-9223372036854775808", False), ("string", BEYOND, True),
    ("string", "-0", True)])
def test_a_later_block_is_checked_against_the_first_blocks_type(
        kind: str, late: str, taken: bool) -> None:
    first = [str(n) for n in range(300)] if kind == "int64" else [f"u{n}" for n in range(300)]
    data = ("id\n" + "\n".join([*first, late, first[0]]) + "\n").encode()
    stream = stream_csv(io.BytesIO(data), "f.csv", first_block=True)
    assert stream is not None and stream.types == {"id": kind}  # the first block's type
    if taken:  # digits beyond int64 are text, as the exact reader says
        expected = exact(data)
        assert isinstance(expected, EntityTable) and expected.types == {"id": "string"}
        assert read_all(stream) == expected.columns
        return
    with pytest.raises(StreamDeclined) as declined:
        read_all_or_raise(stream)
    # Arrow's own error where its cast refused the value (text, or beyond int64).
    arrow = kind == "int64" and late != "007"
    assert re.fullmatch(r"f\.csv: rows after the first \d+ need the exact CSV reader \(a column "
                        r"typed otherwise than by the first rows, or a row it refuses"
                        + (r": .+\)" if arrow else r"\)"), str(declined.value)), declined.value


def read_all_or_raise(stream: EntityStream) -> None:
    assert stream.arrow_batches is not None
    for _ in stream.arrow_batches(list(stream.types)):
        pass


def test_a_late_contradiction_in_the_second_block_is_read_not_declined_up_front() -> None:
    data = ("id\n" + "".join(f"{n}\n" for n in range(100)) + "abc\n").encode()  # 2 blocks
    assert stream_csv(io.BytesIO(data), "f.csv") is None  # the typing pass reads it all
    stream = stream_csv(io.BytesIO(data), "f.csv", first_block=True)
    assert stream is not None and stream.num_rows == 101
    with pytest.raises(StreamDeclined):
        read_all_or_raise(stream)


def test_rows_written_after_the_count_are_the_file_changing(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("id\n" + "".join(f"{n}\n" for n in range(300)))
    with open(path, "rb") as file:
        stream = stream_csv(file, str(path), first_block=True)
        assert stream is not None and stream.num_rows == 300
        with path.open("a") as more:
            more.write("300\n")
        with pytest.raises(EntityFileChanged) as changed:
            read_all_or_raise(stream)
    assert str(changed.value) == (f"{path}: changed while it was read (300 rows counted, 301 "
                                  "read); submit it again once it is complete")


@pytest.mark.parametrize("scan", range(1, 12))
def test_a_lone_carriage_return_across_any_two_reads_is_declined(
        monkeypatch: pytest.MonkeyPatch, scan: int) -> None:
    monkeypatch.setattr(_csv_stream, "_SCAN_BYTES", scan)
    for data in (b"id\n1\r2\n3\n", b"id\r\n1\r\n2\r3\r\n", b"id\n1\n2\r"):
        stream = stream_csv(io.BytesIO(data), "f.csv", first_block=True)
        if data.endswith(b"2\r"):  # a CR at the very end ends the last line, counted so
            assert stream is not None and stream.num_rows == 2
            assert read_all(stream) == {"id": [1, 2]}
        else:
            assert stream is None, (data, scan)
    crlf = stream_csv(io.BytesIO(b"id\r\n1\r\n2\r\n"), "f.csv", first_block=True)
    assert crlf is not None and crlf.num_rows == 2
