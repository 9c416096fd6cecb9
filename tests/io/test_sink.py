"""open_sink on real files: shards streamed into one output, atomically, as write_rows writes."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.io import (
    OutputError,
    check_destination,
    open_sink,
    rows_to_table,
    unify_schemas,
    write_rows,
)
from tests.conftest import dictionary_pages
from tests.io.conftest import FileSizeLimit

TS = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
SEEN = datetime(2023, 1, 1, tzinfo=UTC)
FEATURES = ["trips", "rating", "name"]

# Three shards typed apart: shard 1's rating is all null, shard 2's doubles, shard 3's ints.
Shard = tuple[dict[str, list[Any]], list[tuple[Any, ...] | None]]
SHARDS: list[Shard] = [
    ({"id": [1, 2, 3]}, [(TS, 10, None, "a"), None, (TS, 11, None, "b")]),
    ({"id": [4, 5]}, [(TS, 12, 0.5, "c"), (TS, 13, 1.25, None)]),
    ({"id": [6, 7]}, [(TS, 14, 3, "d"), None]),
]


def raises(path: Path | str, *fragments: str) -> Any:
    """pytest.raises for an OutputError whose message names `path` and every fragment."""
    pattern = "".join(f"(?=.*{re.escape(str(part))})" for part in (path, *fragments))
    return pytest.raises(OutputError, match=re.compile(pattern, re.DOTALL))


def shard_tables(shards: list[Shard], features: list[str]) -> list[pa.Table]:
    return [
        rows_to_table(keys, rows, features, source=f"shard {number}")
        for number, (keys, rows) in enumerate(shards, start=1)
    ]


def stream(path: Path, tables: list[pa.Table], **options: Any) -> int:
    """Write the tables through one sink, as the job finisher does; the rows written."""
    with open_sink(str(path), unify_schemas([t.schema for t in tables]), **options) as sink:
        for table in tables:
            sink.write(table)
    return sink.rows_written


# --- streaming shards ---------------------------------------------------------------------


def test_three_shards_become_one_parquet_file_with_unified_types_in_order(
    tmp_path: Path,
) -> None:
    tables = shard_tables(SHARDS, FEATURES)
    assert [t.schema.field("rating").type for t in tables] == [pa.null(), pa.float64(), pa.int64()]
    path = tmp_path / "out.parquet"
    assert stream(path, tables) == 7
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 3  # one per shard, as they came
    table = parquet.read()
    assert table.schema.field("rating").type == pa.float64()
    assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.column("id").to_pylist() == [1, 2, 3, 4, 5, 6, 7]
    assert table.column("rating").to_pylist() == [None, None, None, 0.5, 1.25, 3.0, None]
    assert table.column("name").to_pylist() == ["a", None, "b", "c", None, "d", None]
    assert table.column("event_timestamp").to_pylist() == [TS, None, TS, TS, TS, TS, None]


# Values that survive Arrow unchanged: UTC datetimes, one type per column across shards.
TEXT_FEATURES = ["n", "x", "s", "blob", "ok", "tags", "profile", "seen", "empty"]
TEXT_SHARDS: list[Shard] = [
    (
        {"k": [1, 2]},
        [
            (TS, 7, 0.1, 'Bo, "B"\nnext', b"\x00\xff", True, [1, 2], {"at": SEEN, "v": "é"}, SEEN,
             None),
            None,
        ],
    ),
    ({"k": [3]}, [(TS, -1, float("inf"), "", b"", False, [], {"at": None, "v": None}, None, None)]),
    ({"k": [4, 5]}, [None, (TS + timedelta(days=1), 0, -2.5, "z", b"\x01", None, None, None,
                            SEEN, None)]),
]


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_streamed_text_is_byte_identical_to_write_rows(tmp_path: Path, name: str) -> None:
    streamed = tmp_path / f"streamed-{name}"
    assert stream(streamed, shard_tables(TEXT_SHARDS, TEXT_FEATURES)) == 5
    keys: dict[str, list[Any]] = {"k": [k for shard, _ in TEXT_SHARDS for k in shard["k"]]}
    rows = [row for _, shard_rows in TEXT_SHARDS for row in shard_rows]
    direct = tmp_path / f"direct-{name}"
    write_rows(str(direct), keys, rows, TEXT_FEATURES)
    assert streamed.read_bytes() == direct.read_bytes()
    assert streamed.read_bytes().count(b"\n") >= 5


def test_csv_header_is_written_once_and_even_with_no_tables(tmp_path: Path) -> None:
    table = rows_to_table({"id": [1]}, [None], ["f"])
    path = tmp_path / "out.csv"
    with open_sink(str(path), table.schema) as sink:
        sink.write(table)
        sink.write(table)
    assert path.read_bytes() == b"id,event_timestamp,f\r\n1,,\r\n1,,\r\n"
    empty = tmp_path / "empty.csv"
    with open_sink(str(empty), table.schema):
        pass
    assert empty.read_bytes() == b"id,event_timestamp,f\r\n"


def test_parquet_with_no_tables_has_the_schema(tmp_path: Path) -> None:
    schema = rows_to_table({"id": [1]}, [None], ["f"]).schema
    path = tmp_path / "out.parquet"
    with open_sink(str(path), schema) as sink:
        assert sink.rows_written == 0
    assert pq.read_table(path).schema.equals(schema)
    assert pq.read_table(path).num_rows == 0


def test_parquet_key_columns_are_plain_and_nested_features_keep_dictionaries(
        tmp_path: Path) -> None:
    # A key column has no dictionary; every other leaf keeps one, those of nested
    # features too (the writer names them by their leaf paths).
    table = pa.table({"k": [1, 2, 1], "tags": [["a"], ["b"], ["a"]],
                      "s": [{"a": 1, "b": [2]}, {"a": 2, "b": []}, None], "f": [1.5, 2.5, 1.5]})
    path = tmp_path / "out.parquet"
    with open_sink(str(path), table.schema, keys=["k"]) as sink:
        sink.write(table)
    assert dictionary_pages(path) == {"k": {False}, "tags.list.element": {True},
                                      "s.a": {True}, "s.b.list.element": {True}, "f": {True}}
    assert pq.read_table(path).to_pylist() == table.to_pylist()


def test_write_counts_rows_and_refuses_after_the_block(tmp_path: Path) -> None:
    table = rows_to_table({"id": [1, 2]}, [None, None], ["f"])
    with open_sink(str(tmp_path / "out.jsonl"), table.schema) as sink:
        sink.write(table)
        assert sink.rows_written == 2
        sink.write(table.slice(0, 1))
        assert sink.rows_written == 3
    with pytest.raises(RuntimeError, match="the sink is closed"):
        sink.write(table)


# --- atomicity ----------------------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if ".tmp-" in name]


@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.jsonl"])
def test_an_error_mid_stream_leaves_no_file_and_no_temporary_file(
    tmp_path: Path, name: str
) -> None:
    tables = shard_tables(SHARDS, FEATURES)
    path = tmp_path / name
    with pytest.raises(KeyError, match="shard 2 vanished"), open_sink(
        str(path), unify_schemas([t.schema for t in tables])
    ) as sink:
        sink.write(tables[0])
        assert leftovers(tmp_path)  # the rows so far are only in the temporary file
        raise KeyError("shard 2 vanished")
    assert os.listdir(tmp_path) == []


def test_an_error_mid_stream_keeps_the_old_output(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    path.write_bytes(b"previous output")
    tables = shard_tables(SHARDS, FEATURES)
    with pytest.raises(RuntimeError), open_sink(str(path), tables[0].schema, overwrite=True) as s:
        s.write(tables[0])
        raise RuntimeError("worker lost")
    assert path.read_bytes() == b"previous output"
    assert leftovers(tmp_path) == []


def test_a_table_that_cannot_be_cast_fails_the_output(tmp_path: Path) -> None:
    first = rows_to_table({"id": [1]}, [(TS, "a")], ["f"])
    second = rows_to_table({"id": [2]}, [(TS, 1.5)], ["f"])
    path = tmp_path / "out.parquet"
    with raises(path, "column 'f' is double in this table", "output's string"), open_sink(
        str(path), first.schema
    ) as sink:
        sink.write(first)
        sink.write(second)
    assert os.listdir(tmp_path) == []


def test_a_list_of_ints_a_double_cannot_hold_is_refused_with_arrows_reason(
        tmp_path: Path) -> None:
    ints = rows_to_table({"id": [1]}, [(TS, [2**60 + 1])], ["f"])
    doubles = rows_to_table({"id": [2]}, [(TS, [0.5])], ["f"])
    path = tmp_path / "out.jsonl"
    with raises(path, "column 'f' is list<item: int64> in this table",
                f"Integer value {2**60 + 1} not in range"), \
            open_sink(str(path), unify_schemas([ints.schema, doubles.schema])) as sink:
        sink.write(doubles)
        sink.write(ints)
    assert os.listdir(tmp_path) == []


def test_ints_a_double_cannot_hold_exactly_are_refused(tmp_path: Path) -> None:
    ints = rows_to_table({"id": [1]}, [(TS, 2**60 + 1)], ["f"])
    doubles = rows_to_table({"id": [2]}, [(TS, 0.5)], ["f"])
    path = tmp_path / "out.parquet"
    with raises(path, "column 'f' is int64 in this table", "output's double",
                f"Integer value {2**60 + 1} is outside"), \
            open_sink(str(path), unify_schemas([ints.schema, doubles.schema])) as sink:
        sink.write(doubles)
        sink.write(ints)
    assert os.listdir(tmp_path) == []


def test_a_table_with_other_columns_is_refused(tmp_path: Path) -> None:
    first = rows_to_table({"id": [1]}, [None], ["f"])
    other = rows_to_table({"id": [1]}, [None], ["g"])
    path = tmp_path / "out.csv"
    with raises(path, "['id', 'event_timestamp', 'g']", "['id', 'event_timestamp', 'f']"), \
            open_sink(str(path), first.schema) as sink:
        sink.write(other)
    assert os.listdir(tmp_path) == []


def test_a_value_text_cannot_hold_names_the_row_and_column(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2], "event_timestamp": pa.array([None, None], pa.null()),
                      "day": [None, datetime(2024, 1, 1).date()]})
    path = tmp_path / "out.csv"
    with raises(path, "row 2", "feature column 'day'", "type date"), open_sink(
        str(path), table.schema
    ) as sink:
        sink.write(table)
    assert os.listdir(tmp_path) == []


# --- destination checks, on entry ---------------------------------------------------------

SCHEMA = pa.schema([("id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC"))])


@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.jsonl"])
def test_existing_output_is_refused_before_the_block_runs(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"keep me")
    entered = False
    with raises(path, "exists; pass --overwrite to replace it"), open_sink(str(path), SCHEMA):
        entered = True
    assert not entered
    assert path.read_bytes() == b"keep me"
    with open_sink(str(path), SCHEMA, overwrite=True):
        pass
    assert path.read_bytes() != b"keep me"


def test_bad_destinations_are_refused_on_entry(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    cases = [
        (tmp_path / "no" / "out.csv", "does not exist"),
        (tmp_path / "dir.csv", "is a directory"),
        (tmp_path / "out.txt", ".csv, .parquet, .jsonl"),
    ]
    for path, fragment in cases:
        with raises(path, fragment), open_sink(str(path), SCHEMA, overwrite=True):
            pytest.fail("the block must not run")
    assert sorted(os.listdir(tmp_path)) == ["dir.csv"]


def test_check_destination_refuses_what_open_sink_would_and_writes_nothing(
    tmp_path: Path,
) -> None:
    existing = tmp_path / "old.parquet"
    existing.write_bytes(b"x")
    with raises(existing, "exists; pass --overwrite"):
        check_destination(str(existing), False)
    check_destination(str(existing), True)
    with raises(tmp_path / "out.json", ".csv, .parquet, .jsonl"):
        check_destination(str(tmp_path / "out.json"))
    with raises(tmp_path / "x" / "out.csv", "does not exist"):
        check_destination(str(tmp_path / "x" / "out.csv"))
    check_destination(str(tmp_path / "new.jsonl"))
    assert os.listdir(tmp_path) == ["old.parquet"]


def test_the_cast_refusal_is_one_whole_message(tmp_path: Path) -> None:
    # The whole text, not fragments: a reader of the log gets exactly this.
    first = rows_to_table({"id": [1]}, [(TS, "a")], ["f"])
    second = rows_to_table({"id": [2]}, [(TS, 1.5)], ["f"])
    path = tmp_path / "out.csv"
    with pytest.raises(OutputError) as caught, open_sink(str(path), first.schema) as sink:
        sink.write(second)
    assert str(caught.value) == (
        f"{path}: column 'f' is double in this table and cannot be cast to the output's "
        "string; open the sink with unify_schemas() of every table's schema")


def test_a_write_the_disk_refuses_names_the_output_and_its_directory(
    tmp_path: Path, file_size_limit: FileSizeLimit
) -> None:
    """An OS error while a table is written (a full disk; here a file size limit) is an
    OutputError naming the output and the directory to check, and nothing is left."""
    table = pa.table({"id": list(range(2_000)), "name": ["x" * 600] * 2_000})
    path = tmp_path / "out.csv"
    with file_size_limit(64 * 1024), pytest.raises(OutputError) as raised, open_sink(
            str(path), table.schema) as sink:
        sink.write(table)
    assert str(raised.value) == (f"{path}: cannot write the output (File too large); check "
                                 f"that {tmp_path} is writable and has free space")
    assert os.listdir(tmp_path) == []
