"""CSV and JSONL written a column at a time (`featurepull.io._text_columns`) are the bytes the
row-by-row encoders write, on generated rows full of what text encoding is about: quotes,
commas, line breaks, control characters, unicode, int64's edges and beyond, floats Arrow and
Python write differently, NaN, bytes, UTC and other timestamps, lists, dicts, mixed columns.

Both ways in: `write_rows` (a pull's rows, as tuples or as a read's `FoundRows`) and
`TextEncoder.write_table` (the finisher's and the sink's Arrow tables). The exact path is
the encoder's `write_records`, fed the rows one by one.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import io
import math
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from featurepull.dynamo.found import FoundRows
from featurepull.io import write_rows
from featurepull.io._columnar import columnar_table, typed_column
from featurepull.io._encoders import text_encoder
from featurepull.io._row_view import OutputError, RowView
from featurepull.io._text_columns import (
    _arrow_column,
    _arrow_texts,
    _iso_utc,
    _quoted,
    _repr_style,
    csv_bytes,
    jsonl_bytes,
    text_array,
)
from featurepull.io._text_values import csv_field, json_text
from featurepull.io.rows import _column_texts, _typed_or_as_is


class Level(enum.IntEnum):
    LOW = 1


TEXTS = ["plain", "", "a,b", 'say "hi"', "line\nbreak", "cr\ronly", "crlf\r\n", "tab\there",
         "back\\slash", "ctl\x01", "us\x1f", "nul\x00", "Montréal", "東京", "emoji 🚀", "\u2028sep", " lead", "trail ",
         "del\x7f", "é,\"\n"]
FLOATS = [0.0, -0.0, 1.0, 0.1, 1 / 3, 1e15, 1e16, 1e21, 1e-4, 1e-5, 1.5e-7, -66926478731690.96,
          100.0, 5e-324, 1.7976931348623157e308, float("nan"), float("inf"), float("-inf")]
INTS = [0, 1, -1, 42, 2**53 + 1, 2**63 - 1, -(2**63)]
STAMPS = [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2024, 1, 2, 3, 4, 5, 123, tzinfo=UTC),
          datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
          datetime(999, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)]
# Columns of one kind each (the fast paths), and mixed ones (the exact function per value).
KINDS: dict[str, Callable[[random.Random], Any]] = {
    "int": lambda r: r.choice(INTS),
    "str": lambda r: r.choice(TEXTS),
    "float": lambda r: r.choice(FLOATS),
    "bool": lambda r: r.random() < 0.5,
    "bytes": lambda r: r.randbytes(r.randint(0, 5)),
    "utc": lambda r: r.choice(STAMPS),
    "zoned": lambda r: datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))),
    "list": lambda r: r.choice([[1, 2.5], [], ["a", None], [b"\x00"], (1, 2)]),
    "dict": lambda r: r.choice([{"b": 1, "a": "é"}, {"a": float("nan")}, {}]),
    "int_float": lambda r: r.choice([1, 2.5, 3, 150000000000000000, 6.02214076e23, 1e-7]),
    "int_str": lambda r: r.choice([7, "7", "x"]),
    "big_int": lambda r: r.choice([2**64, -(2**70), 5]),
    "enum": lambda r: r.choice([Level.LOW, 2]),
}


# Kinds every value of which one Arrow column holds (the path a pull's rows usually take).
TYPED = ["int", "str", "float", "bool", "bytes", "utc", "zoned", "int_float"]


def generated(rng: random.Random, rows: int, typed: bool = False
              ) -> tuple[dict[str, list[Any]], list[Any], list[str]]:
    """Key columns, rows (None, or a timestamp and features) and feature names; `typed`:
    only kinds one Arrow column holds."""
    key_kinds = rng.sample(["int", "str"] if typed else ["int", "str", "int_str", "big_int"],
                           rng.randint(1, 2))
    keys = {f"k_{kind}": [KINDS[kind](rng) for _ in range(rows)] for kind in key_kinds}
    kinds = rng.sample(TYPED if typed else sorted(KINDS), rng.randint(1, 5))
    if "int_float" not in kinds and rng.random() < 0.5:  # a DynamoDB number column, often
        kinds.append("int_float")
    found = rng.random()
    records: list[Any] = []
    for _ in range(rows):
        if rng.random() > found:
            records.append(None)
            continue
        stamp = None if rng.random() < 0.1 else rng.choice(STAMPS[:4])
        records.append((stamp, *[None if rng.random() < 0.2 else KINDS[kind](rng)
                                 for kind in kinds]))
    return keys, records, [f"f_{kind}" for kind in kinds]


def exact_bytes(fmt: str, view: RowView) -> bytes:
    """What the row-by-row encoder writes for the view's rows."""
    return records_bytes(fmt, view.names, view.records(0, len(view.rows)), view.source)


def records_bytes(fmt: str, names: list[str], records: Iterable[list[Any]],
                  source: str = "out") -> bytes:
    """What the row-by-row encoder writes for these records (values in column order)."""
    stream = io.BytesIO()
    encoder = text_encoder(fmt, stream, names, source)  # type: ignore[arg-type]
    encoder.write_records(records, 1)
    encoder.finish()
    return stream.getvalue()


def as_typed(rows: list[Any]) -> list[Any]:
    """The rows with each found column's values as Arrow types the column (as they are
    where it cannot)."""
    found = [row for row in rows if row is not None]
    columns = [[row[index] for row in found] for index in range(len(found[0]) if found else 0)]
    for index, values in enumerate(columns):
        with contextlib.suppress(pa.ArrowException, TypeError, ValueError, OverflowError):
            columns[index] = typed_column(values).to_pylist()
    typed = iter(zip(*columns, strict=True))
    return [None if row is None else next(typed) for row in rows]


def as_found_rows(rows: list[Any]) -> FoundRows:
    """The same rows as a read holds them: one column per value, each row's found item."""
    found = [row for row in rows if row is not None]
    positions, slots = [], []
    for row in rows:
        if row is None:
            positions.append(len(rows))  # a key with no item
        else:
            positions.append(len(slots))
            slots.append(len(slots))
    width = len(found[0]) if found else 0
    columns = [[row[c] for row in found] for c in range(width)]
    return FoundRows(positions, len(rows) + 1, slots, columns)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("seed", range(16))
def test_write_rows_writes_the_row_by_row_bytes(tmp_path: Path, fmt: str, seed: int) -> None:
    # The row writer fed each column's values as Arrow types the column (an int among floats
    # as a float), as they are where it cannot: where the Parquet output's table can be made
    # (odd seeds), the bytes a job's finisher writes from it.
    rng = random.Random(seed)
    keys, rows, features = generated(rng, rng.randint(1, 60), typed=seed % 2 == 1)
    view = RowView("out", keys, rows, tuple(features))
    want = exact_bytes(fmt, RowView("out", keys, as_typed(rows), tuple(features)))
    table = columnar_table(view)
    assert (table is not None) >= (seed % 2 == 1)
    if table is not None:
        assert want == records_bytes(fmt, view.names,
                                     [list(row.values()) for row in table.to_pylist()])
    write_rows(str(tmp_path / f"tuples.{fmt}"), keys, rows, features)
    assert (tmp_path / f"tuples.{fmt}").read_bytes() == want
    if any(row is not None for row in rows):
        write_rows(str(tmp_path / f"found.{fmt}"), keys, as_found_rows(rows), features)
        assert (tmp_path / f"found.{fmt}").read_bytes() == want


def arrow_table(rng: random.Random, rows: int) -> pa.Table:
    """A table of the types shards and Parquet parts hold, with nulls, in several chunks."""
    columns = {
        "id": pa.array([rng.choice(INTS) for _ in range(rows)], pa.int64()),
        "small": pa.array([rng.randint(0, 200) for _ in range(rows)], pa.uint8()),
        "event_timestamp": pa.array([rng.choice([*STAMPS, None]) for _ in range(rows)],
                                    pa.timestamp("us", tz="UTC")),
        "s": pa.array([rng.choice([*TEXTS, None]) for _ in range(rows)], pa.large_string()),
        "f": pa.array([rng.choice([*FLOATS, None]) for _ in range(rows)], pa.float64()),
        "f32": pa.array([rng.choice([0.1, 1.0, None]) for _ in range(rows)], pa.float32()),
        "b": pa.array([rng.choice([True, False, None]) for _ in range(rows)]),
        "raw": pa.array([rng.choice([b"", b"\xff\x00", None]) for _ in range(rows)]),
        "l": pa.array([rng.choice([[1.5, None], [], None]) for _ in range(rows)]),
        "st": pa.array([rng.choice([{"x": 1, "y": "é"}, None]) for _ in range(rows)]),
        "ms": pa.array([rng.choice(STAMPS[:3]) for _ in range(rows)], pa.timestamp("ms")),
        "paris": pa.array([rng.choice(STAMPS[:3]) for _ in range(rows)],
                          pa.timestamp("us", tz="Europe/Paris")),
        "nothing": pa.nulls(rows),
    }
    # One column too: the csv module quotes a row's lone empty field.
    names = rng.sample(sorted(columns), rng.randint(1, len(columns)))
    table = pa.table({name: columns[name] for name in names})
    cut = rng.randint(0, rows)
    return pa.concat_tables([table.slice(0, cut), table.slice(cut)])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("seed", range(12))
def test_write_table_writes_the_row_by_row_bytes(fmt: str, seed: int) -> None:
    rng = random.Random(seed)
    table = arrow_table(rng, rng.randint(1, 80))
    records = [list(row.values()) for row in table.to_pylist()]
    want = io.BytesIO()
    exact = text_encoder(fmt, want, table.column_names, "out")  # type: ignore[arg-type]
    exact.write_records(records, 1)
    exact.finish()
    got = io.BytesIO()
    fast = text_encoder(fmt, got, table.column_names, "out")  # type: ignore[arg-type]
    fast.write_table(table, 1)
    fast.finish()
    assert got.getvalue() == want.getvalue()


def test_the_fast_path_is_taken_for_the_usual_columns() -> None:
    """A pull's usual columns are encoded by Arrow, not value by value: the comparisons above
    would pass vacuously if every column fell back to the exact function."""
    for fmt in ("csv", "jsonl"):
        for values in ([1, None, 3], ["a", None], [True, None], [STAMPS[1], None]):
            texts = text_array(values, fmt)  # type: ignore[arg-type]
            assert texts is not None and texts.null_count == 1
    assert text_array([Level.LOW, object()], "csv") is None  # no text: the row path says why
    doubles = pa.array([1.0, 1e-7, 5.1e10, None])  # Arrow's cast, fixed up where it differs
    assert _arrow_texts(doubles, "csv") is not None
    assert _arrow_texts(doubles.cast(pa.float32()), "csv") is None  # its own shortest digits
    rows = [None, (STAMPS[0], 0.5, "x"), None]
    view = RowView("out", {"id": [1, 2, 3]}, as_found_rows(rows), ("f", "s"))
    chunks = _column_texts(view, "csv")
    texts = None if chunks is None else chunks(0, 3)
    assert texts is not None and [column.to_pylist() for column in texts] == [
        ["1", "2", "3"], [None, "2024-01-02T03:04:05+00:00", None], [None, "0.5", None],
        [None, "x", None]]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_rows_over_several_chunks_and_a_bad_key_in_a_later_one(tmp_path: Path, fmt: str) -> None:
    """Text is made a chunk (CHUNK_ROWS) at a time: the bytes across chunk boundaries are the
    row writer's, and a key no text can be made of, in the second chunk, gets the row
    writer's message naming its row, with nothing left behind."""
    rows = 70_000
    keys = {"id": list(range(rows))}
    found = [None if n % 7 else (STAMPS[n % 2], n / 3, f"c{n % 5}") for n in range(rows)]
    view = RowView("out", keys, as_found_rows(found), ("f", "s"))
    write_rows(str(tmp_path / f"out.{fmt}"), keys, view.rows, ["f", "s"])
    assert (tmp_path / f"out.{fmt}").read_bytes() == exact_bytes(fmt, view)
    keys["id"][69_000] = object()
    with pytest.raises(OutputError) as raised:
        write_rows(str(tmp_path / f"bad.{fmt}"), keys, found, ["f", "s"])
    with pytest.raises(OutputError) as exact:
        exact_bytes(fmt, RowView(str(tmp_path / f"bad.{fmt}"), keys, found, ("f", "s")))
    assert str(raised.value) == str(exact.value) and "row 69001" in str(raised.value)
    assert not (tmp_path / f"bad.{fmt}").exists()


def test_doubles_in_repr_style_and_which_ones_arrow_cannot_write() -> None:
    """Arrow's texts put in `repr`'s style where they can be, and the values left to the
    per-value function: exactly those where the two styles differ (none of the common)."""
    values = [0.0, -0.0, 1.0, 0.5, 1e-4, 9.999999999999999e15, 1e16, 1.5e-7, 2.5e300, 5e-324,
              1e-5, 5.1e10, float("nan"), float("inf"), None]
    texts, others = _repr_style(pa.array(values, pa.float64()))
    fallback = [1e-5, 5.1e10]  # Arrow writes 0.00001 and 5.1e+10; repr 1e-05 and 51000000000.0
    assert others.to_pylist() == [
        value is not None and (value in fallback or not math.isfinite(value))
        for value in values]
    for value, text, other in zip(values, texts.to_pylist(), others.to_pylist(), strict=True):
        assert other or text == (None if value is None else repr(value))


def test_python_columns_arrow_holds_exactly_become_arrow() -> None:
    """One exact type of int, str, bool or float, or UTC datetimes, with Nones: an Arrow
    column of that type; anything Arrow would write otherwise stays a list."""
    zoned = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    for values, arrow_type in (([1, None, 2], pa.int64()), (["a", None], pa.string()),
                               ([True, None], pa.bool_()), ([1.5, None], pa.float64()),
                               ([STAMPS[1], None], pa.timestamp("us", tz="UTC"))):
        column = _arrow_column(values)
        assert isinstance(column, pa.Array) and column.type == arrow_type
        assert column.to_pylist() == values
    for values in ([1, "a"], [1, 1.5], [2**64, None], [STAMPS[0], zoned], [zoned],
                   [None, None], [b"x"], [Level.LOW]):
        assert _arrow_column(values) is values


def csv_quoted(field: str) -> str:
    """A field as the csv module writes it (in a row of two: it quotes a lone empty field)."""
    line = io.StringIO()
    csv.writer(line).writerow([field, ""])
    return line.getvalue().removesuffix(",\r\n")


def exact_texts(values: list[Any], fmt: str) -> list[str | None]:
    """Each value's text as the row-by-row encoders write it, None for None."""
    return [None if value is None else csv_quoted(csv_field(value)) if fmt == "csv"
            else json_text(value) for value in values]


UTC_PLUS_0 = pa.timestamp("us", tz="+00:00")
# The columns Arrow writes itself (`_arrow_texts`): Arrow arrays of these types, and Python
# columns of one exact type of int, str or bool, or UTC datetimes (`_arrow_column`).
ARROW_WRITTEN: list[tuple[list[Any], pa.DataType]] = [
    ([*INTS, None], pa.int64()), ([0, 255, None], pa.uint8()), ([-128, 7], pa.int8()),
    ([True, None, False], pa.bool_()), ([*TEXTS, None], pa.string()),
    ([*TEXTS, None], pa.large_string()), (["plain", "no escapes"], pa.string()),
    ([*STAMPS, None], pa.timestamp("us", tz="UTC")), ([*STAMPS, None], UTC_PLUS_0),
    ([None, None], pa.null()), ([*FLOATS, None], pa.float64()),
]


@pytest.mark.mutation_first
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_arrow_writes_the_usual_columns_texts_itself(fmt: str) -> None:
    """Arrow's own texts of these columns are the exact function's, and Arrow makes them (a
    failure there would fall back to the exact function unseen: the byte comparisons above
    cannot tell the fast path from the fallback): before quoting, each the row writer's
    function's text of its value, with no per-value safety net around it."""
    encode = csv_field if fmt == "csv" else json_text
    for values, kind in ARROW_WRITTEN:
        column = pa.array(values, kind)
        texts = _arrow_texts(column, fmt)  # type: ignore[arg-type]
        assert texts is not None, kind
        assert texts.to_pylist() == [None if value is None else encode(value)
                                     for value in column.to_pylist()], kind
        assert _quoted(texts, fmt).to_pylist() == exact_texts(values, fmt), kind  # type: ignore[arg-type, union-attr]
        assert text_array(column, fmt).to_pylist() == exact_texts(values, fmt)  # type: ignore[arg-type, union-attr]
        if kind in (pa.int64(), pa.string(), pa.bool_(), pa.timestamp("us", tz="UTC")):
            python = _arrow_column(values)
            assert isinstance(python, pa.Array) and python.type == kind
            assert text_array(values, fmt).to_pylist() == exact_texts(values, fmt)  # type: ignore[arg-type, union-attr]
    # One chunked column, as a table's.
    chunked = pa.chunked_array([pa.array([1, None]), pa.array([3])])
    assert text_array(chunked, fmt).to_pylist() == exact_texts([1, None, 3], fmt)  # type: ignore[arg-type, union-attr]


@pytest.mark.mutation_first
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_columns_arrow_cannot_write_alone_are_written_value_by_value(fmt: str) -> None:
    """float32, bytes, lists, other timestamps and mixed Python columns: each value by the
    exact function, null where it is None; stay Python where Arrow's type would change the
    text (ints beyond 64 bits, zoned datetimes, two types). (Doubles: Arrow, fixed up.)"""
    zoned = KINDS["zoned"](random.Random(0))
    for values in ([b"\x00", None, b""], [[1, 2.5], None, {"a": 1}], [1, 1.5, None],
                   [1, "1", None], [2**64, None, 5], [zoned, None], [STAMPS[0], zoned]):
        assert not isinstance(_arrow_column(values), pa.Array)
        assert text_array(values, fmt).to_pylist() == exact_texts(values, fmt)  # type: ignore[arg-type, union-attr]
    for values, kind in (([0.1, 1.0, None], pa.float32()), ([b"\xff", None], pa.binary()),
                         ([STAMPS[0], None], pa.timestamp("ms", tz="UTC")),
                         ([STAMPS[0], None], pa.timestamp("us"))):
        column = pa.array(values, kind)
        assert _arrow_texts(column, fmt) is None, kind  # type: ignore[arg-type]
        want = exact_texts(column.to_pylist(), fmt)
        assert text_array(column, fmt).to_pylist() == want, kind  # type: ignore[arg-type, union-attr]
    # A year isoformat cannot write (Arrow holds years past 9999): the exact path says so.
    far = pa.array([STAMPS[0], None, 253402300800000000], pa.timestamp("us", tz="UTC"))
    assert _iso_utc(far) is None and _iso_utc(far.slice(0, 2)) is not None


def joined(pieces: list[pa.Buffer] | None) -> str:
    assert pieces is not None
    return b"".join(piece.to_pybytes() for piece in pieces).decode()


@pytest.mark.mutation_first
def test_csv_and_jsonl_lines_of_field_texts() -> None:
    """Lines made of the field texts are the csv module's and one JSON object per row (keys in
    column order); a lone CSV column quotes an empty field (the csv module's lone empty
    field), a name given twice keeps its first place and last value (a row's dict), no
    column is left to the row writer, and no row writes nothing."""
    keys, names = [1, None, 3], ["", 'q"', None]
    texts = [text_array(keys, "csv"), text_array(names, "csv")]
    want = io.StringIO()
    csv.writer(want).writerows([[csv_field(key), csv_field(name)] for key, name in
                                zip(keys, names, strict=True)])
    assert joined(csv_bytes(texts)) == want.getvalue()
    assert joined(csv_bytes(texts[1:])) == '""\r\n"q"""\r\n""\r\n'
    assert joined(csv_bytes(texts[:1])) == '1\r\n""\r\n3\r\n'
    assert csv_bytes([]) is None
    jsonl = [text_array(keys, "jsonl"), text_array(names, "jsonl")]
    assert joined(jsonl_bytes(["id", "name"], jsonl)) == "".join(
        json_text({"id": key, "name": name}) + "\n" for key, name in zip(keys, names, strict=True))
    assert joined(jsonl_bytes(["name"], jsonl[1:])) == '{"name":""}\n{"name":"q\\""}\n{"name":null}\n'
    assert joined(jsonl_bytes(["id", "x", "id"], [*jsonl, jsonl[1]])) == (
        '{"id":"","x":""}\n{"id":"q\\"","x":"q\\""}\n{"id":null,"x":null}\n')
    assert jsonl_bytes([], []) is None
    with pytest.raises(ValueError):  # a name with no texts
        jsonl_bytes(["id", "name"], jsonl[:1])
    assert joined(csv_bytes([pa.array([], pa.string())] * 2)) == ""
    assert joined(jsonl_bytes(["id"], [pa.array([], pa.string())])) == ""


@pytest.mark.mutation_first
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("seed", range(24))
def test_lines_of_generated_columns_are_the_row_writers(fmt: str, seed: int) -> None:
    """The lines joined in Arrow (`write_texts`) are the row writer's bytes for columns of
    every type a table holds, one or several, names given twice among them: nulls, quotes,
    commas, CR and LF, unicode, empty texts. Every column here has its texts in Arrow, so
    nothing goes to the row writer unseen."""
    rng = random.Random(seed)
    table = arrow_table(rng, rng.randint(0, 80))
    names = list(table.column_names)
    if len(names) > 1 and seed % 3 == 0:
        names[rng.randrange(1, len(names))] = names[0]
    texts = [text_array(column, fmt) for column in table.columns]  # type: ignore[arg-type]
    assert all(text is not None for text in texts)
    records = [list(row) for row in
               zip(*(column.to_pylist() for column in table.columns), strict=True)]
    want = records_bytes(fmt, names, records)
    got = io.BytesIO()
    fast = text_encoder(fmt, got, names, "out")  # type: ignore[arg-type]
    assert fast.write_texts(texts)  # type: ignore[arg-type]
    fast.finish()
    assert got.getvalue() == want


@pytest.mark.mutation_first
def test_a_pull_types_a_time_column_when_its_times_have_one_offset() -> None:
    """A found column of aware times is typed (written a column at a time) when every time
    has one UTC offset — one fixed zone, two zone objects of one offset, one named zone
    outside its changes — and written as it is when the offsets differ (Arrow would put
    them all in the first one's zone)."""
    paris = ZoneInfo("Europe/Paris")
    winter, summer = datetime(2024, 1, 2, tzinfo=paris), datetime(2024, 7, 2, tzinfo=paris)
    plus2 = timezone(timedelta(hours=2))
    for values in ([STAMPS[0], None, STAMPS[1]], [STAMPS[0], STAMPS[1].replace(
            tzinfo=timezone(timedelta(0)))], [winter, None, winter.replace(day=3)],
                   [datetime(2024, 1, 2, tzinfo=plus2)] * 2):
        typed = _typed_or_as_is(values)
        assert isinstance(typed, pa.Array) and typed.to_pylist() == values
    for values in ([winter, summer], [STAMPS[0], None, datetime(2024, 1, 2, tzinfo=plus2)]):
        assert _typed_or_as_is(values) is values


@pytest.mark.mutation_first
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_chunk_of_rows_is_its_columns_texts(fmt: str) -> None:
    """`write_rows` takes rows [start, stop) as each column's texts: the keys' slice, and the
    found rows' texts sliced (every row found) or taken by the found index (nulls for the
    rest), with one key and no feature too."""
    stamps = [STAMPS[n % 3] for n in range(7)]
    names = [f"n{n}" for n in range(7)]
    keys: dict[str, list[Any]] = {"id": list(range(7)), "city": [TEXTS[n] for n in range(7)]}
    every: list[Any] = [(stamp, name) for stamp, name in zip(stamps, names, strict=True)]
    some = [None if n % 3 == 1 else row for n, row in enumerate(every)]
    for rows in (every, as_found_rows(every), some, as_found_rows(some)):
        chunks = _column_texts(RowView("out", keys, rows, ("name",)), fmt)  # type: ignore[arg-type]
        texts = None if chunks is None else chunks(2, 5)
        found: list[Any] = list(rows)[2:5]
        assert texts is not None and [column.to_pylist() for column in texts] == [
            exact_texts(keys["id"][2:5], fmt), exact_texts(keys["city"][2:5], fmt),
            exact_texts([row and row[0] for row in found], fmt),
            exact_texts([row and row[1] for row in found], fmt)]
    only_keys = _column_texts(RowView("out", {"id": [1, 2]}, [(STAMPS[0],), None], ()), fmt)  # type: ignore[arg-type]
    texts = None if only_keys is None else only_keys(0, 2)
    assert texts is not None and [column.to_pylist() for column in texts] == [
        exact_texts([1, 2], fmt), exact_texts([STAMPS[0], None], fmt)]


# Times Python holds only with their own offset: in UTC (as Arrow holds them) year 0 and
# year 10000 (a DynamoDB text such as 9999-12-31T23:00:00-05:00), beside the years' edges.
PAST_UTC = [datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
            datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))]
EDGE_STAMPS = [STAMPS[3], STAMPS[5], datetime(1, 1, 1, 6, tzinfo=timezone(timedelta(hours=5)))]


@pytest.mark.mutation_first
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("seed", range(4))
def test_a_pull_writes_times_past_utcs_years_as_they_are(tmp_path: Path, fmt: str,
                                                         seed: int) -> None:
    """A pull's column of such times (one offset: Arrow types it, as the Parquet output, but
    cannot give them back to Python) is written value by value with its offset, the row
    writer's bytes; Arrow's own path writes the UTC edges."""
    rng = random.Random(seed)
    rows = [None if rng.random() < 0.2 else
            (rng.choice(EDGE_STAMPS), rng.choice([PAST_UTC[seed % 2], None]))
            for _ in range(rng.randint(2, 30))]
    rows.append((STAMPS[0], PAST_UTC[seed % 2]))
    keys = {"id": list(range(len(rows)))}
    typed = typed_column([row[1] for row in rows if row is not None])
    assert typed.type.tz in ("+05:00", "-05:00")  # one Arrow type: Parquet holds the column
    view = RowView("out", keys, rows, ("when",))
    write_rows(str(tmp_path / f"out.{fmt}"), keys, rows, ["when"])
    assert (tmp_path / f"out.{fmt}").read_bytes() == exact_bytes(fmt, view)
    assert text_array(typed, fmt) is None  # type: ignore[arg-type]  # ... by the row writer
    utc = pa.array(STAMPS[3:4] + STAMPS[5:] + [None], pa.timestamp("us", tz="UTC"))
    assert _arrow_texts(utc, fmt) is not None  # type: ignore[arg-type]
    assert text_array(utc, fmt).to_pylist() == exact_texts(utc.to_pylist(), fmt)  # type: ignore[arg-type, union-attr]


@pytest.mark.mutation_first
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("names", [["id", "event_timestamp", "f"], ["event_timestamp"]])
@pytest.mark.parametrize("stamp", PAST_UTC, ids=["year0", "year10000"])
def test_a_table_refuses_a_utc_year_python_cannot_write(fmt: str, names: list[str],
                                                        stamp: datetime) -> None:
    """A job's (Arrow) UTC time outside the years 1 to 9999 is an OutputError naming its
    row and column, with one column or several (the column of times is written row by row:
    `text_array` declines it); before, year 0 was written as 0000-12-31T19:00:00+00:00 with
    several columns and was a bare OverflowError with one."""
    rows = 5
    columns = {"id": pa.array(range(rows)), "f": pa.array([0.5] * rows),
               "event_timestamp": pa.array([STAMPS[3], None, STAMPS[5], stamp, STAMPS[0]],
                                           pa.timestamp("us", tz="UTC"))}
    table = pa.table({name: columns[name] for name in names})
    assert _iso_utc(table.column("event_timestamp").combine_chunks()) is None
    assert _iso_utc(table.column("event_timestamp").slice(0, 3).combine_chunks()) is not None
    encoder = text_encoder(fmt, io.BytesIO(), names, "out")  # type: ignore[arg-type]
    with pytest.raises(OutputError) as refused:
        encoder.write_table(table, 11)
    year = "0000-12-31 19:00:00" if stamp.year == 1 else "10000-01-01 04:00:00"
    assert str(refused.value).startswith(
        f"out: row 14: column 'event_timestamp' holds {year}.000000Z (timestamp[us, tz=UTC]), "
        "outside the years 1 to 9999")


def as_found_twice(rng: random.Random, rows: list[Any]) -> FoundRows:
    """The rows as a read holds them when items come back in any order and some twice (the
    same item): the found columns no shorter than the output even with rows missing."""
    items = {n: row for n, row in enumerate(rows) if row is not None}
    slots = [*items, *rng.sample(sorted(items), len(items) // 2)]
    while len(slots) < len(rows):
        slots.append(rng.choice(slots))
    rng.shuffle(slots)
    width = len(rows[slots[0]])
    columns = [[items[slot][c] for slot in slots] for c in range(width)]
    positions = [n if row is not None else len(rows) for n, row in enumerate(rows)]
    return FoundRows(positions, len(rows) + 1, slots, columns)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("seed", range(12))
def test_columns_taken_into_order_before_their_texts(tmp_path: Path, fmt: str,
                                                     seed: int) -> None:
    """Found columns no shorter than the output are put in order as Arrow arrays, then made
    text (`_texts_in_order`): the row writer's bytes, missing rows' nulls included."""
    rng = random.Random(seed)
    keys, rows, features = generated(rng, rng.randint(2, 60), typed=seed % 2 == 1)
    if all(row is None for row in rows):
        rows[0] = (STAMPS[0], *[KINDS[name[2:]](rng) for name in features])
    found = as_found_twice(rng, rows)
    assert len(found.columns[0]) >= len(rows) and list(found) == rows
    want = exact_bytes(fmt, RowView("out", keys, as_typed(rows), tuple(features)))
    write_rows(str(tmp_path / f"out.{fmt}"), keys, found, features)
    assert (tmp_path / f"out.{fmt}").read_bytes() == want
