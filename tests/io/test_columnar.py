"""The columnar fast paths agree with the exact, value-by-value paths they stand in for.

- CSV entity files: pyarrow.csv plus vectorised typing (`read_csv_fast`) gives the same table
  as the csv-module reader, or declines, and then `read_entities` raises the exact reader's
  message. Checked on generated files full of the cases the typing rules are about.
- Output rows: `columnar_table` (found rows converted once, then `take`n into order) gives the
  same schema and values as the row-by-row conversion, or declines.
"""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from featurepull.io import EntityFileError, read_entities, rows_to_table
from featurepull.io._columnar import _all_utc, columnar_table
from featurepull.io._csv_entities import _read_csv_exactly, read_csv_fast
from featurepull.io._row_view import RowView
from featurepull.io.tables import arrow_batches, arrow_schema

# Values the typing rules tell apart: plain integers, int64's edges, ids that only look like
# integers, empties, non-ASCII digits and text.
TOKENS = ["0", "1", "17", "-5", "007", "-0", "+3", "1.0", "1_00", " 1", "1 ", "abc", "é",
          "\uff11", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
          "99999999999999999999", "", "", "x y", "-"]


def exact(data: bytes, required: tuple[str, ...]) -> Any:
    """What the csv-module reader makes of a file: its table or its error message."""
    try:
        return _read_csv_exactly(io.BytesIO(data), "f.csv", required)
    except EntityFileError as exc:
        return str(exc)


def generated_file(rng: random.Random) -> bytes:
    width = rng.randint(1, 3)
    header = [f"c{i}" for i in range(width)]
    lines = [",".join(header)]
    for _ in range(rng.randint(0, 6)):
        fields = [rng.choice(TOKENS) for _ in range(width)]
        if rng.random() < 0.05:
            fields.append("extra")  # a ragged row
        lines.append(",".join(fields))
    if rng.random() < 0.1:
        lines.insert(rng.randint(1, len(lines)), "")  # a blank line
    end = rng.choice(["\n", "\r\n", "\r"])  # a lone CR: the csv module's line numbers
    text = end.join(lines) + (end if rng.random() < 0.8 else "")
    data = text.encode()
    return (b"\xef\xbb\xbf" + data) if rng.random() < 0.1 else data


@pytest.mark.parametrize("seed", range(4))
def test_fast_csv_reader_agrees_with_the_csv_module(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    fast_taken = 0
    for case in range(150):
        data = generated_file(rng)
        required = ("c0",) if rng.random() < 0.5 else ()
        path = tmp_path / f"{case}.csv"
        path.write_bytes(data)
        expected = exact(data, required)
        if isinstance(expected, str):
            with pytest.raises(EntityFileError) as caught:
                read_entities(str(path), required)
            # The message names the file it was given; the exact reader was given "f.csv".
            assert str(caught.value).replace(str(path), "f.csv") == expected, data
            continue
        got = read_entities(str(path), required)
        assert (got.columns, got.types, got.notes) == (
            expected.columns, expected.types, expected.notes), data
        fast_taken += read_csv_fast(io.BytesIO(data), "f.csv", required) is not None
    assert fast_taken > 20  # the fast path did the work, not only the fallback


def test_fast_csv_reader_takes_plain_files_and_declines_quotes() -> None:
    plain = b"driver_id,city\n1,Paris\n22,\n-3,Lyon\n"
    table = read_csv_fast(io.BytesIO(plain), "f.csv", ("driver_id",))
    assert table is not None
    assert table.columns == {"driver_id": [1, 22, -3], "city": ["Paris", None, "Lyon"]}
    assert table.types == {"driver_id": "int64", "city": "string"}
    assert read_csv_fast(io.BytesIO(b'id\n"1"\n'), "f.csv", ()) is None


def test_fast_csv_mixed_column_note_names_the_lines() -> None:
    table = read_csv_fast(io.BytesIO(b"id\n1\n2\nabc\n"), "f.csv", ())
    assert table is not None and table.types == {"id": "mixed"}
    assert table.notes == {"id": "mixes integers (line 2: '1') and other text (line 4: 'abc')"}


# --- output rows ----------------------------------------------------------------------------

TS = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
VALUES: list[Any] = [None, 0, 7, -2, 1.5, "Ann", "", b"\x00", True, [1, 2], {"a": 1}]


def row_path(keys: dict[str, list[Any]], rows: list[Any], features: list[str]) -> pa.Table:
    view = RowView("rows", keys, rows, tuple(features))
    view.validate()
    schema = arrow_schema(view)
    return pa.Table.from_batches(list(arrow_batches(view, schema)), schema=schema)


def random_rows(rng: random.Random, count: int, width: int) -> list[Any]:
    kinds = [rng.choice(VALUES) for _ in range(width)]  # one kind per column: typeable
    found = [(TS + timedelta(seconds=rng.randint(0, 9)),
              *[rng.choice([kind, None]) for kind in kinds]) for _ in range(rng.randint(0, 4))]
    return [rng.choice([*found, None]) if found else None for _ in range(count)]


@pytest.mark.parametrize("seed", range(3))
def test_columnar_table_is_the_row_by_row_table(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        count, width = rng.randint(1, 40), rng.randint(0, 3)
        features = [f"f{i}" for i in range(width)]
        rows = random_rows(rng, count, width)
        keys = {"id": [rng.randint(0, 5) for _ in range(count)]}
        expected = row_path(keys, rows, features)
        table = columnar_table(RowView("rows", keys, rows, tuple(features)))
        assert table is not None
        assert table.schema.equals(expected.schema), (rows, table.schema, expected.schema)
        assert table.to_pylist() == expected.to_pylist()


def test_columnar_table_declines_what_the_row_path_must_explain() -> None:
    other_zone = datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=2)))
    for rows in ([(TS, 1), (TS, "a")],      # a column pyarrow cannot type
                 [(TS, 1, 2)],              # a malformed row
                 [(other_zone, 1)]):        # a timestamp to check row by row
        assert columnar_table(RowView("rows", {"id": [1] * len(rows)}, rows, ("f",))) is None
    # The public conversion still takes it, through the row path: same table as before.
    table = rows_to_table({"id": [1]}, [(other_zone, 1)], ["f"])
    assert table.column("event_timestamp").to_pylist() == [other_zone]


class Stamp(datetime):
    """A datetime of another type (pandas' Timestamp is one): checked row by row."""


# Event times the UTC check tells apart: UTC, zones of offset 0 (a `datetime.timezone`, or
# not), other offsets, naive times, values that are not datetimes.
EVENT_TIMES: list[Any] = [None, TS, TS.replace(tzinfo=timezone(timedelta(0))),
                          TS.replace(tzinfo=timezone(timedelta(0), "Z")),
                          TS.replace(tzinfo=ZoneInfo("UTC")),
                          TS.replace(tzinfo=timezone(timedelta(hours=2))), TS.replace(tzinfo=None),
                          Stamp(2024, 5, 1, tzinfo=UTC), "2024-05-01T00:00:00+00:00",
                          TS.date(), 0]


def is_utc(value: Any) -> bool:
    """The per-value check: None, or a datetime (not a subclass) in a zone of offset 0."""
    return value is None or (type(value) is datetime and type(value.tzinfo) is timezone
                             and value.utcoffset() == timedelta(0))


@pytest.mark.parametrize("seed", range(3))
def test_the_utc_check_is_the_per_value_check(seed: int) -> None:
    """`_all_utc` (types and zones at C speed) says what the per-value check says, on
    generated event-time columns; where it lets the columnar table be built, that table is
    the row path's."""
    rng = random.Random(seed)
    for _ in range(200):
        usual = rng.sample(EVENT_TIMES[:4], rng.randint(0, 4))
        stamps = [rng.choice(usual or [None]) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.5:
            stamps.insert(rng.randint(0, len(stamps)), rng.choice(EVENT_TIMES))
        assert _all_utc(stamps) == all(map(is_utc, stamps)), stamps
        rows = [None if stamp is None and rng.random() < 0.5 else (stamp, 1) for stamp in stamps]
        table = columnar_table(RowView("rows", {"id": list(range(len(rows)))}, rows, ("f",)))
        assert (table is not None) == all(map(is_utc, (row[0] for row in rows if row)))
        if table is not None:
            expected = row_path({"id": list(range(len(rows)))}, rows, ["f"])
            assert table.schema.equals(expected.schema)
            assert table.to_pylist() == expected.to_pylist()
