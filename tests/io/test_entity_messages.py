"""The whole message of each refusal of a CSV, JSONL or Parquet entity file, and what a file
the readers accept leaves out or notes (test_entities.py checks the typing rules and the parts of
each message a user acts on; these pin the rest: the fix, the line or row, the source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.io import EntityFileError, read_entities
from featurepull.io.entities import stream_entities

FIX_EMPTY = ("is empty; every entity needs a value in each key column, so fill it in or drop "
             "that row")


def refusal(tmp_path: Path, name: str, data: bytes | pa.Table,
            required: tuple[str, ...] = ()) -> str:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        pq.write_table(data, path)
    with pytest.raises(EntityFileError) as caught:
        read_entities(str(path), required)
    return str(caught.value).replace(str(tmp_path), "DIR")


@pytest.mark.parametrize(("data", "required", "message"), [
    (b'{"id": 1}\n{"id": 2,}\n', (),
     "DIR/e.jsonl: line 2 is not valid JSON (Expecting property name enclosed in double quotes "
     "at column 10); write one JSON object per line"),
    (b'{"id": 1}\n{"id": "\xff"}\n', (),
     "DIR/e.jsonl: line 2 is not UTF-8 text (invalid start byte); save the file as UTF-8"),
    (b'{"id": 1}\n[1, 2]\n', (),
     'DIR/e.jsonl: line 2 is a JSON list, not an object; write one object per line, e.g. '
     '{"driver_id": 1001}'),
    (b'{"tags": [1], "id": 5}\n', ("tags",),
     "DIR/e.jsonl: line 1: column 'tags' holds a JSON array; entity keys must be numbers, "
     "strings or booleans"),
    (b"\n  \n", (),
     "DIR/e.jsonl has no entity rows, only blank lines; write one JSON object per line"),
    (b'{"tags": [1], "meta": {"a": 1}}\n', (),
     "DIR/e.jsonl: no column can hold entity keys ('tags' holds a JSON array on line 1; 'meta' "
     'holds a JSON object on line 1); write each key as a JSON number or string, e.g. '
     '{"driver_id": 1001}'),
    # The first line with an empty key, not the first column found empty.
    (b'{"a": 1, "b": ""}\n{"a": null, "b": "x"}\n', ("a", "b"),
     f"DIR/e.jsonl: line 1: required column 'b' {FIX_EMPTY}"),
    (b'{"id": 9223372036854775807}\n{"id": 9223372036854775808}\n', (),
     "DIR/e.jsonl: line 2: column 'id' value 9223372036854775808 does not fit in int64; "
     "write it as a string"),
])
def test_jsonl_refusals(tmp_path: Path, data: bytes, required: tuple[str, ...],
                        message: str) -> None:
    assert refusal(tmp_path, "e.jsonl", data, required) == message


def test_jsonl_columns_after_a_left_out_one_are_kept_and_the_left_out_ones_noted(
        tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text('{"tags": [1], "id": 9223372036854775807}\n{"id": 6, "x": {"a": 1}}\n'
                    '{"id": 7, "x": 3}\n')
    table = read_entities(str(path))
    assert (table.source, table.columns, table.types) == (
        str(path), {"id": [9223372036854775807, 6, 7]}, {"id": "int64"})
    assert table.notes == {"tags": "holds a JSON array on line 1",
                           "x": "holds a JSON object on line 2"}


@pytest.mark.parametrize(("table", "required", "message"), [
    (pa.table({"tags": pa.array([[1]]), "m": pa.array([{"a": 1}])}), (),
     "DIR/e.parquet: no column can hold entity keys (found tags (list<element: int64>), m "
     "(struct<a: int64>)); entity keys must be integer, string, binary, float or bool columns"),
    (pa.table({"id": pa.array([2**64 - 1], pa.uint64())}), (),
     "DIR/e.parquet: row 1: column 'id' value 18446744073709551615 does not fit in int64; "
     "store the column as int64 or string"),
    (pa.table({"id": pa.array([b"a", b""], pa.binary())}), ("id",),
     f"DIR/e.parquet: row 2: required column 'id' {FIX_EMPTY}"),
    (pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["id", "id"]), (),
     "DIR/e.parquet: column 'id' appears twice; rename one of them"),
])
def test_parquet_refusals(tmp_path: Path, table: pa.Table, required: tuple[str, ...],
                          message: str) -> None:
    assert refusal(tmp_path, "e.parquet", table, required) == message


def test_parquet_rows_are_counted_across_batches(tmp_path: Path) -> None:
    """140,000 rows are three batches of the reader: the empty key is named by its row in
    the file, not in its batch."""
    rows = 140_000
    table = pa.table({"id": pa.array([f"k{n}" for n in range(rows - 1)] + [""])})
    assert refusal(tmp_path, "e.parquet", table, ("id",)) == (
        f"DIR/e.parquet: row {rows}: required column 'id' {FIX_EMPTY}")


def test_unreadable_parquet_names_the_reason(tmp_path: Path) -> None:
    fix = "check that it is a complete Parquet file, or give it the extension of its real format"
    assert refusal(tmp_path, "e.parquet", b"id\n1\n") == (
        "DIR/e.parquet: cannot read it as Parquet (Parquet file size is 5 bytes, smaller than "
        f"the minimum file footer (8 bytes)); {fix}")
    # A readable footer and a damaged page: the refusal comes while the rows are read.
    path = tmp_path / "damaged.parquet"
    pq.write_table(pa.table({"id": [f"key-{n}" for n in range(5_000)]}), path,
                   use_dictionary=False)
    page = pq.ParquetFile(path).metadata.row_group(0).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[page + 40:page + 400] = b"\xab" * 360
    assert refusal(tmp_path, "damaged.parquet", bytes(data)) == (
        "DIR/damaged.parquet: cannot read it as Parquet (Couldn't deserialize thrift: "
        "Variable-length int over 10 bytes.\nDeserializing page header failed.\n); " + fix)


def test_parquet_table_and_stream_name_their_source_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"id": [3, 1, 2]}), path)
    assert read_entities(str(path)).source == str(path)
    with stream_entities(str(path)) as stream:
        assert stream is not None
        batches: list[Any] = list(stream.batches(["id"]))
        assert (stream.source, stream.num_rows, stream.types, batches) == (
            str(path), 3, {"id": "int64"}, [{"id": [3, 1, 2]}])


@pytest.mark.parametrize(("data", "required", "message"), [
    # Quotes send a file to the csv module's reader; these are its messages.
    (b'id,"city"\n1,Paris\n', ("driver",),
     "DIR/e.csv: required column(s) 'driver' not found; the file has 'id', 'city'; rename the "
     "column in the file or ask for the key columns it has"),
    (b'id,city\n1,"Par"is\n2,"x\n', (),
     "DIR/e.csv: line 2: malformed CSV (',' expected after '\"'); check the quoting on that "
     "line"),
    (b"id,\xffcity\n1,x\n", (),
     "DIR/e.csv: not UTF-8 text near line 1 (invalid start byte); save the file as UTF-8"),
    (b"id,city\n1,Paris,extra\n", (),
     "DIR/e.csv: line 2 has 3 fields but the header has 2; give every row one value per column "
     "and quote values that contain commas"),
    (b"id,city\n1,Paris\n\n2,Lyon\n", (),
     "DIR/e.csv: line 3 is blank, which is not a row; every line after the header must be one "
     "entity: delete the blank line, or fill in the entity it stands for"),
])
def test_csv_refusals(tmp_path: Path, data: bytes, required: tuple[str, ...],
                      message: str) -> None:
    assert refusal(tmp_path, "e.csv", data, required) == message


@pytest.mark.parametrize(("data", "columns", "notes"), [
    # Text that pyarrow would take for null is text; only an empty field is null.
    (b"id,city\n1,NA\n2,NULL\n3,\n", {"id": [1, 2, 3], "city": ["NA", "NULL", None]}, {}),
    # A row over two lines: lines are counted as the csv module does (where a row ends).
    (b'id,note\n1,"two\nlines"\n7,x\nabc,y\n',
     {"id": ["1", "7", "abc"], "note": ["two\nlines", "x", "y"]},
     {"id": "mixes integers (line 3: '1') and other text (line 5: 'abc')"}),
    # Rows over several lines before (and after) the rows a note names.
    (b'id,note\n1,x\n7,"a\nb"\n8,"c\nd\ne"\nabc,y\n',
     {"id": ["1", "7", "8", "abc"], "note": ["x", "a\nb", "c\nd\ne", "y"]},
     {"id": "mixes integers (line 2: '1') and other text (line 8: 'abc')"}),
    (b'id,note\nabc,"a\nb"\nx,"c\nd"\n5,y\n',
     {"id": ["abc", "x", "5"], "note": ["a\nb", "c\nd", "y"]},
     {"id": "mixes integers (line 6: '5') and other text (line 3: 'abc')"}),
    # The int64 bounds are integers.
    (b'id,note\n-9223372036854775808,"a"\nabc,y\n',
     {"id": ["-9223372036854775808", "abc"], "note": ["a", "y"]},
     {"id": "mixes integers (line 2: '-9223372036854775808') and other text (line 3: 'abc')"}),
    (b'id,note\n9223372036854775807,"a"\nabc,y\n',
     {"id": ["9223372036854775807", "abc"], "note": ["a", "y"]},
     {"id": "mixes integers (line 2: '9223372036854775807') and other text (line 3: 'abc')"}),
])
def test_csv_values_and_notes(tmp_path: Path, data: bytes, columns: dict[str, list[Any]],
                              notes: dict[str, str]) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(data)
    table = read_entities(str(path))
    assert (table.source, table.columns, table.notes) == (str(path), columns, notes)
