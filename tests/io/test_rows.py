"""write_rows on real files: read each output back and check every value, type and order."""

from __future__ import annotations

import base64
import csv
import enum
import itertools
import json
import math
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.io import OutputError, open_sink, rows_to_table, unify_schemas, write_rows
from featurepull.io.rows import CHUNK_ROWS
from tests.conftest import dictionary_pages
from tests.io.conftest import FileSizeLimit

TS1 = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
TS2 = datetime(2024, 5, 2, 8, 0, tzinfo=timezone(timedelta(hours=2)))  # 06:00 UTC
SEEN = datetime(2023, 1, 1, tzinfo=UTC)

FEATURES = ["trips", "rating", "name", "blob", "active", "tags", "profile", "seen", "unused"]
# Input row 1 is a missing entity; input rows 0 and 3 are the same entity (duplicates are kept).
KEYS: dict[str, list[Any]] = {"driver_id": [1001, 1002, 1003, 1001], "city": ["p", "q", "r", "p"]}
ROWS: list[tuple[Any, ...] | None] = [
    (TS1, 12, 4.5, "Ann", b"\x00\xff", True, [1, 2], {"level": 3, "vip": "yes"}, SEEN, None),
    None,
    (TS2, 0, -1.25, 'Bo, "B"', b"", False, [], {"level": None, "vip": "no"}, None, None),
    (TS1, 12, 4.5, "Ann", b"\x00\xff", True, [1, 2], {"level": 3, "vip": "yes"}, SEEN, None),
]


def raises(path: Path | str, *fragments: str) -> Any:
    """pytest.raises for an OutputError whose message names `path` and every fragment."""
    pattern = "".join(f"(?=.*{re.escape(str(part))})" for part in (path, *fragments))
    return pytest.raises(OutputError, match=re.compile(pattern, re.DOTALL))


def leftovers(directory: Path) -> list[str]:
    """Temporary files write_rows left behind."""
    return [name for name in os.listdir(directory) if ".tmp-" in name]


# --- round trips --------------------------------------------------------------------------


def test_parquet_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    assert write_rows(str(path), KEYS, ROWS, FEATURES) == 4
    table = pq.read_table(path)
    assert table.column_names == ["driver_id", "city", "event_timestamp", *FEATURES]
    schema = {field.name: field.type for field in table.schema}
    assert schema["driver_id"] == pa.int64()
    assert schema["city"] == pa.string()
    assert schema["event_timestamp"] == pa.timestamp("us", tz="UTC")
    assert schema["trips"] == pa.int64()
    assert schema["rating"] == pa.float64()
    assert schema["name"] == pa.string()
    assert schema["blob"] == pa.binary()
    assert schema["active"] == pa.bool_()
    assert schema["tags"] == pa.list_(pa.int64())
    assert pa.types.is_struct(schema["profile"])
    assert pa.types.is_timestamp(schema["seen"])
    assert schema["unused"] == pa.null()
    records = table.to_pylist()
    for record, row, key, city in zip(records, ROWS, KEYS["driver_id"], KEYS["city"], strict=True):
        assert record["driver_id"] == key
        assert record["city"] == city
        if row is None:
            assert all(record[name] is None for name in ["event_timestamp", *FEATURES])
            continue
        assert record["event_timestamp"] == row[0]  # the same instant, stored as UTC
        assert [record[name] for name in FEATURES] == list(row[1:])
    # The key columns without dictionaries (a job's parts and finisher write them so too).
    pages = dictionary_pages(path)
    assert (pages["driver_id"], pages["city"], pages["trips"]) == ({False}, {False}, {True})


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    assert write_rows(str(path), KEYS, ROWS, FEATURES) == 4
    with open(path, newline="", encoding="utf-8") as stream:
        lines = list(csv.reader(stream))
    assert lines[0] == ["driver_id", "city", "event_timestamp", *FEATURES]
    ann = [
        "2024-05-01T12:30:15.123456+00:00",
        "12",
        "4.5",
        "Ann",
        base64.b64encode(b"\x00\xff").decode(),
        "true",
        "[1,2]",
        '{"level":3,"vip":"yes"}',
        "2023-01-01T00:00:00+00:00",
        "",
    ]
    bo = ["2024-05-02T08:00:00+02:00", "0", "-1.25", 'Bo, "B"', "", "false", "[]"]
    bo += ['{"level":null,"vip":"no"}', "", ""]
    assert lines[1:] == [
        ["1001", "p", *ann],
        ["1002", "q", *[""] * 10],
        ["1003", "r", *bo],
        ["1001", "p", *ann],
    ]
    assert datetime.fromisoformat(bo[0]) == TS2


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    assert write_rows(str(path), KEYS, ROWS, FEATURES) == 4
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [list(record) for record in records] == [
        ["driver_id", "city", "event_timestamp", *FEATURES]
    ] * 4
    ann = {
        "driver_id": 1001,
        "city": "p",
        "event_timestamp": "2024-05-01T12:30:15.123456+00:00",
        "trips": 12,
        "rating": 4.5,
        "name": "Ann",
        "blob": "AP8=",
        "active": True,
        "tags": [1, 2],
        "profile": {"level": 3, "vip": "yes"},
        "seen": "2023-01-01T00:00:00+00:00",
        "unused": None,
    }
    assert records[0] == ann
    assert records[1] == {"driver_id": 1002, "city": "q"} | {
        name: None for name in ["event_timestamp", *FEATURES]
    }
    assert records[2]["event_timestamp"] == "2024-05-02T08:00:00+02:00"
    assert records[2]["name"] == 'Bo, "B"'
    assert records[2]["blob"] == ""
    assert records[2]["profile"] == {"level": None, "vip": "no"}
    assert records[3] == ann
    assert base64.b64decode(records[0]["blob"]) == b"\x00\xff"


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_text_has_the_column_type_as_a_jobs_finisher_writes_it(tmp_path: Path,
                                                                name: str) -> None:
    # A DynamoDB number column holding 1 and 1.5 is double in Parquet; its text is the
    # floats' (1.0), the bytes a job's finisher writes from parts typed apart (int64, double).
    keys = {"k": [1, 2, 3, 4, 5], "city": ["a,b", 'say "hi"', "c", "", "é"]}
    rows: list[tuple[Any, ...] | None] = [
        (TS1, 1, 7), (TS1, 150000000000000000, 2**53 + 1), (TS1, -0.0, -(2**63)),
        (TS1, 6.02214076e23, 8), None]
    path = tmp_path / name
    write_rows(str(path), keys, rows, ["x", "big"])
    shards = [rows_to_table({name: values[:2] for name, values in keys.items()}, rows[:2],
                            ["x", "big"]),
              rows_to_table({name: values[2:] for name, values in keys.items()}, rows[2:],
                            ["x", "big"])]
    assert [shard.schema.field("x").type for shard in shards] == [pa.int64(), pa.float64()]
    finished = tmp_path / f"finished{path.suffix}"
    with open_sink(str(finished), unify_schemas([shard.schema for shard in shards])) as sink:
        for shard in shards:
            sink.write(shard)
    assert finished.read_bytes() == path.read_bytes()
    if name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as stream:
            lines = list(csv.reader(stream))[1:]
        assert [line[1] for line in lines] == keys["city"]
        fields = [line[3:] for line in lines]
    else:
        records = [json.loads(line, parse_float=str, parse_int=str)
                   for line in path.read_text(encoding="utf-8").splitlines()]
        assert [record["city"] for record in records] == keys["city"]
        fields = [[record["x"] or "null", record["big"] or "null"] for record in records]
    null = "" if name.endswith(".csv") else "null"
    assert fields == [["1.0", "7"], ["1.5e+17", str(2**53 + 1)], ["-0.0", str(-(2**63))],
                      ["6.02214076e+23", "8"], [null, null]]


def test_text_of_a_column_no_arrow_type_holds_is_each_value(tmp_path: Path) -> None:
    # 2**53 + 1 beside 1.5 has no Parquet column (Parquet refuses it); text keeps each value
    # as it is, and the other number columns are still written as their double column.
    rows: list[tuple[Any, ...] | None] = [(TS1, 2**53 + 1, 1, "a"), (TS1, 1.5, 2.5, 3), None]
    path = tmp_path / "out.csv"
    write_rows(str(path), {"k": [1, 2, 3]}, rows, ["wide", "x", "mixed"])
    assert path.read_text().splitlines()[1:] == [
        f"1,{TS1.isoformat()},{2**53 + 1},1.0,a", f"2,{TS1.isoformat()},1.5,2.5,3", "3,,,,"]
    with raises(tmp_path / "out.parquet", "'wide'", 2**53 + 1):
        write_rows(str(tmp_path / "out.parquet"), {"k": [1, 2, 3]}, rows, ["wide", "x", "mixed"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_keeps_what_each_value_says_where_the_column_type_would_not(
        tmp_path: Path, fmt: str) -> None:
    # Arrow types strings among bytes as bytes (the string would be written as base64) and
    # datetimes in several zones in the first one's (another wall-clock time): text keeps
    # each value, the string as it is and each datetime in its own zone.
    east = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    west = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=-7)))
    rows: list[tuple[Any, ...] | None] = [(TS1, b"x", east), (TS1, "plain", west), None]
    path = tmp_path / f"out.{fmt}"
    write_rows(str(path), {"k": [1, 2, 3]}, rows, ["mixed", "when"])
    text = path.read_text()
    assert base64.b64encode(b"x").decode() in text and "plain" in text
    assert "2024-01-01T12:00:00+05:30" in text and "2024-01-01T12:00:00-07:00" in text
    assert base64.b64encode(b"plain").decode() not in text


def test_nested_bytes_and_datetimes_are_text_in_csv_and_jsonl(tmp_path: Path) -> None:
    rows: list[tuple[Any, ...] | None] = [(TS1, [b"\x01", TS2], {"at": TS1, "raw": b"\x02"})]
    write_rows(str(tmp_path / "n.csv"), {"k": [1]}, rows, ["l", "d"])
    write_rows(str(tmp_path / "n.jsonl"), {"k": [1]}, rows, ["l", "d"])
    with open(tmp_path / "n.csv", newline="") as stream:
        fields = list(csv.reader(stream))[1]
    expected_list = ["AQ==", "2024-05-02T08:00:00+02:00"]
    expected_dict = {"at": "2024-05-01T12:30:15.123456+00:00", "raw": "Ag=="}
    assert json.loads(fields[2]) == expected_list
    assert json.loads(fields[3]) == expected_dict
    record = json.loads((tmp_path / "n.jsonl").read_text())
    assert record["l"] == expected_list
    assert record["d"] == expected_dict


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def test_non_finite_floats_are_null_in_jsonl_and_kept_in_csv(tmp_path: Path) -> None:
    rows: list[tuple[Any, ...] | None] = [(TS1, math.nan, math.inf, [-math.inf, 1.5])]
    write_rows(str(tmp_path / "f.jsonl"), {"k": [1]}, rows, ["a", "b", "l"])
    write_rows(str(tmp_path / "f.csv"), {"k": [1]}, rows, ["a", "b", "l"])
    record = json.loads((tmp_path / "f.jsonl").read_text(), parse_constant=_no_constants)
    assert (record["a"], record["b"], record["l"]) == (None, None, [None, 1.5])
    with open(tmp_path / "f.csv", newline="") as stream:
        fields = list(csv.reader(stream))[1]
    assert math.isnan(float(fields[2]))
    assert float(fields[3]) == math.inf
    assert json.loads(fields[4], parse_constant=_no_constants) == [None, 1.5]


class Level(enum.IntEnum):
    GOLD = 3


class Ratio(float):
    pass


def test_subclasses_of_int_float_str_are_written_as_their_values(tmp_path: Path) -> None:
    rows: list[tuple[Any, ...] | None] = [(TS1, Level.GOLD, Ratio(0.5), True)]
    write_rows(str(tmp_path / "s.csv"), {"k": [1]}, rows, ["level", "ratio", "flag"])
    with open(tmp_path / "s.csv", newline="") as stream:
        assert list(csv.reader(stream))[1][2:] == ["3", "0.5", "true"]


@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.jsonl"])
def test_zero_rows_still_write_the_columns(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_rows(str(path), {"id": []}, [], ["f"]) == 0
    if name.endswith(".parquet"):
        assert pq.read_table(path).column_names == ["id", "event_timestamp", "f"]
        assert pq.read_table(path).num_rows == 0
    elif name.endswith(".csv"):
        assert path.read_bytes() == b"id,event_timestamp,f\r\n"
    else:
        assert path.read_bytes() == b""


def test_large_outputs_are_written_in_chunks_and_keep_order(tmp_path: Path) -> None:
    total = 2 * CHUNK_ROWS + 17
    keys: dict[str, list[Any]] = {"id": list(range(total))}
    rows: list[tuple[Any, ...] | None] = [
        None if i % 7 == 0 else (TS1, i * 2) for i in range(total)
    ]
    parquet_path = tmp_path / "big.parquet"
    assert write_rows(str(parquet_path), keys, rows, ["double"]) == total
    parquet = pq.ParquetFile(parquet_path)
    assert parquet.metadata.num_row_groups == 3
    assert dictionary_pages(parquet_path) == {"id": {False}, "event_timestamp": {True},
                                              "double": {True}}
    table = parquet.read()
    assert table.column("id").to_pylist() == keys["id"]
    expected = [None if row is None else row[1] for row in rows]
    assert table.column("double").to_pylist() == expected
    csv_path = tmp_path / "big.csv"
    assert write_rows(str(csv_path), keys, rows, ["double"]) == total
    with open(csv_path, newline="") as stream:
        lines = list(csv.reader(stream))[1:]
    assert [line[2] for line in lines] == ["" if v is None else str(v) for v in expected]
    # Every row found: the found rows' texts are sliced a chunk at a time, not taken.
    found = [(TS1, i * 2) for i in range(total)]
    assert write_rows(str(tmp_path / "all.csv"), keys, found, ["double"]) == total
    with open(tmp_path / "all.csv", newline="") as stream:
        lines = list(csv.reader(stream))[1:]
    assert [(line[0], line[2]) for line in lines] == [(str(i), str(i * 2)) for i in range(total)]


# --- Parquet typing errors ----------------------------------------------------------------


def test_parquet_feature_mixing_int_and_str_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    rows: list[tuple[Any, ...] | None] = [(TS1, 1), None, (TS1, "2")]
    with raises(path, "feature column 'score'", "int (row 1)", "str (row 3)"):
        write_rows(str(path), {"id": [1, 2, 3]}, rows, ["score"])
    assert os.listdir(tmp_path) == []


def test_type_conflict_in_a_later_chunk_keeps_the_old_output(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    path.write_bytes(b"previous output")
    total = CHUNK_ROWS + 10
    rows: list[tuple[Any, ...] | None] = [(TS1, i) for i in range(total)]
    rows[-1] = (TS1, "oops")  # only the second chunk's conversion can notice this
    keys: dict[str, list[Any]] = {"id": list(range(total))}
    with raises(path, "feature column 'n'", "int (row", f"str (row {total})"):
        write_rows(str(path), keys, rows, ["n"], overwrite=True)
    assert path.read_bytes() == b"previous output"
    assert leftovers(tmp_path) == []


def test_parquet_key_column_mixing_types(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    with raises(path, "key column 'id'", "int (row 1)", "str (row 2)"):
        write_rows(str(path), {"id": [1, "b"]}, [None, None], ["f"])
    assert os.listdir(tmp_path) == []


def test_parquet_nested_conflict_and_unsupported_values(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    nested: list[tuple[Any, ...] | None] = [(TS1, [1]), (TS1, ["a"])]
    with raises(path, "feature column 'tags'", "list (row 1)", "list (row 2)"):
        write_rows(str(path), {"id": [1, 2]}, nested, ["tags"])
    odd: list[tuple[Any, ...] | None] = [(TS1, object())]
    with raises(path, "feature column 'f'", "type object (row 1)"):
        write_rows(str(path), {"id": [1]}, odd, ["f"])
    assert os.listdir(tmp_path) == []


# --- destination and atomicity ------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.jsonl"])
def test_existing_output_is_refused_unless_overwrite(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"keep me")
    with raises(path, "exists; pass --overwrite to replace it"):
        write_rows(str(path), {"id": [1]}, [None], ["f"])
    assert path.read_bytes() == b"keep me"
    assert write_rows(str(path), {"id": [1]}, [None], ["f"], overwrite=True) == 1
    assert path.read_bytes() != b"keep me"
    assert leftovers(tmp_path) == []


def test_output_has_the_usual_file_mode(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.write_text("")
    write_rows(str(tmp_path / "out.csv"), {"id": [1]}, [None], ["f"])
    assert os.stat(tmp_path / "out.csv").st_mode == os.stat(reference).st_mode


def test_missing_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "out.csv"
    with raises(path, "does not exist"):
        write_rows(str(path), {"id": [1]}, [None], ["f"])


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "out.jsonl"
    with raises(path, "does not exist"):
        write_rows(str(path), {"id": [1]}, [None], ["f"])


def test_output_path_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.mkdir()
    with raises(path, "is a directory"):
        write_rows(str(path), {"id": [1]}, [None], ["f"], overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_unwritable_directory(tmp_path: Path) -> None:
    directory = tmp_path / "locked"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        path = directory / "out.csv"
        with raises(path, "cannot write", str(directory)):
            write_rows(str(path), {"id": [1]}, [None], ["f"])
    finally:
        directory.chmod(0o700)


@pytest.mark.parametrize("name", ["out.txt", "out.json", "out.parquet.tmp", "out"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with raises(path, ".csv, .parquet, .jsonl"):
        write_rows(str(path), {"id": [1]}, [None], ["f"])
    assert os.listdir(tmp_path) == []


# --- malformed input ----------------------------------------------------------------------


def test_rows_that_do_not_match_the_request(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with raises(path, "key column 'id' has 2 values for 1 rows"):
        write_rows(str(path), {"id": [1, 2]}, [None], ["f"])
    with raises(path, "row 2 has 2 values", "2 features"):
        write_rows(str(path), {"id": [1, 2]}, [(TS1, 1, 2), (TS1, 1)], ["f", "g"])
    with raises(path, "row 1", "timezone-aware"):
        write_rows(str(path), {"id": [1]}, [(datetime(2024, 1, 1), 1)], ["f"])
    with raises(path, "'event_timestamp' would appear twice"):
        write_rows(str(path), {"id": [1]}, [None], ["event_timestamp"])
    with raises(path, "'id' would appear twice"):
        write_rows(str(path), {"id": [1]}, [None], ["id"])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_unsupported_value_type_in_text_formats(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    rows: list[tuple[Any, ...] | None] = [(TS1, 1, "ok"), (TS1, 2, {1.5})]
    with raises(path, "row 2", "feature column 'g'", "type set"):
        write_rows(str(path), {"id": [1, 2]}, rows, ["f", "g"])
    assert os.listdir(tmp_path) == []


def test_found_row_without_an_event_time_writes_a_null_timestamp(tmp_path: Path) -> None:
    # A plain table without an event-time attribute: the item exists, its time is unknown.
    path = tmp_path / "out.parquet"
    write_rows(str(path), {"id": [1, 2]}, [(None, 5), None], ["f"])
    assert pq.read_table(path).to_pylist() == [
        {"id": 1, "event_timestamp": None, "f": 5},
        {"id": 2, "event_timestamp": None, "f": None},
    ]


def test_a_write_the_disk_refuses_names_the_output_and_its_directory(
    tmp_path: Path, file_size_limit: FileSizeLimit
) -> None:
    """An OS error while rows are written (a full disk; here a file size limit) is an
    OutputError naming the output and the directory to check, and nothing is left: written a
    column at a time, or row by row (an event time not in UTC), where closing the file fails
    again on the buffered rest, which must not replace the error."""
    keys: dict[str, list[Any]] = {"id": list(range(2_000))}
    for name, stamp in itertools.product(("out.csv", "out.jsonl"), (TS1, TS2)):
        rows: list[tuple[Any, ...] | None] = [(stamp, "x" * 600)] * 2_000
        path = tmp_path / name
        with file_size_limit(64 * 1024), pytest.raises(OutputError) as raised:
            write_rows(str(path), keys, rows, ["name"])
        assert str(raised.value) == (f"{path}: cannot write the output (File too large); "
                                     f"check that {tmp_path} is writable and has free space")
        assert os.listdir(tmp_path) == []
