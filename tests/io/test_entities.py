"""read_entities on real files: the typing rules of each format and every error it reports."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.io import (
    EntityFileError,
    EntityTable,
    _csv_stream,
    _jsonl_entities,
    entities,
    read_entities,
)
from featurepull.io.entities import stream_entities


def write_text(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return str(path)


def write_parquet(tmp_path: Path, columns: dict[str, Any], name: str = "entities.parquet") -> str:
    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return str(path)


def raises(path: str, *fragments: str) -> Any:
    """pytest.raises for an EntityFileError whose message names `path` and every fragment."""
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in (path, *fragments))
    return pytest.raises(EntityFileError, match=re.compile(pattern, re.DOTALL))


# --- CSV ---------------------------------------------------------------------------------


def test_csv_integer_column_is_int64_and_keeps_file_order(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "driver_id,city\n1003,Paris\n-7,Lyon\n1003,Nice\n0,Metz\n")
    table = read_entities(path, required=["driver_id"])
    assert isinstance(table, EntityTable)
    assert table.source == path
    assert table.num_rows == 4
    assert table.columns == {
        "driver_id": [1003, -7, 1003, 0],
        "city": ["Paris", "Lyon", "Nice", "Metz"],
    }
    assert table.types == {"driver_id": "int64", "city": "string"}
    assert list(table.columns) == ["driver_id", "city"]


@pytest.mark.parametrize(
    "values",
    [
        ["007", "12"],  # a leading zero: an id, or a number written oddly?
        ["12", "007"],  # ... wherever it appears in the column
        ["-0", "5"],
        ["+7", "5"],
        [" 7", "5"],
        ["1.0", "5"],
        ["1e3", "5"],
        ["1_00", "5"],  # int() takes the underscore; DynamoDB and Feast do not
        ["9223372036854775808", "5"],  # one past int64
        ["12", "abc"],
    ],
)
def test_csv_column_mixing_integers_and_other_text_is_mixed_verbatim(
    tmp_path: Path, values: list[str]
) -> None:
    path = write_text(tmp_path, "e.csv", "id\n" + "\n".join(f'"{v}"' for v in values) + "\n")
    table = read_entities(path)
    assert table.types == {"id": "mixed"}
    assert table.columns == {"id": values}
    first_int = 0 if values[0] in ("12", "5") else 1
    assert table.notes == {"id": f"mixes integers (line {first_int + 2}: {values[first_int]!r}) "
                                 f"and other text (line {3 - first_int}: "
                                 f"{values[1 - first_int]!r})"}


@pytest.mark.parametrize("values", [["007", "0042"], ["abc", "1.0"], ["-0", "1_00"],
                                    ["9223372036854775808", "99999999999999999999"]])
def test_csv_column_without_any_plain_integer_is_string_verbatim(
    tmp_path: Path, values: list[str]
) -> None:
    path = write_text(tmp_path, "e.csv", "id\n" + "\n".join(values) + "\n")
    table = read_entities(path)
    assert (table.types, table.columns, table.notes) == ({"id": "string"}, {"id": values}, {})


def test_csv_mixed_column_notes_count_physical_lines(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", 'id,note\nabc,"two\nlines"\n7,x\n')
    table = read_entities(path)
    assert table.notes == {"id": "mixes integers (line 4: '7') and other text (line 3: 'abc')"}


def test_csv_mixed_column_with_empty_fields_between(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "id,note\n7,x\n,y\nabc,z\n")
    table = read_entities(path)
    assert table.types["id"] == "mixed"
    assert table.notes == {"id": "mixes integers (line 2: '7') and other text (line 4: 'abc')"}


@pytest.mark.parametrize("header", ["id", '"id"'])  # a quote: the csv module's reader
def test_csv_int64_limits_are_int64(tmp_path: Path, header: str) -> None:
    path = write_text(tmp_path, "e.csv", f"{header}\n9223372036854775807\n-9223372036854775808\n")
    table = read_entities(path)
    assert table.types == {"id": "int64"}
    assert table.columns["id"] == [2**63 - 1, -(2**63)]


def test_csv_empty_fields_are_null_and_all_empty_column_is_null_type(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "id,score,note\n1,,\n2,5,\n3,,\n")
    table = read_entities(path, required=["id"])
    assert table.columns == {"id": [1, 2, 3], "score": [None, 5, None], "note": [None] * 3}
    assert table.types == {"id": "int64", "score": "int64", "note": "null"}


def test_csv_quoting_bom_and_crlf(tmp_path: Path) -> None:
    text = '\ufeffid,name\r\n"a,1","two\r\nlines"\r\n"b ""q""",plain\r\n'
    table = read_entities(write_text(tmp_path, "e.csv", text))
    assert table.columns == {"id": ["a,1", 'b "q"'], "name": ["two\r\nlines", "plain"]}
    assert table.types == {"id": "string", "name": "string"}


def test_csv_never_yields_bytes_or_other_types(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "a,b,c\ntrue,1.5,2024-01-01\n")
    assert read_entities(path).types == {"a": "string", "b": "string", "c": "string"}


def test_csv_wrong_field_count_names_the_line(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "id,city\n1,Paris\n2,Lyon,extra\n")
    with raises(path, "line 3", "3 fields", "header has 2"):
        read_entities(path)


def test_csv_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", 'id,note\n1,"multi\nline"\n2\n')
    with raises(path, "line 4", "1 fields"):
        read_entities(path)


@pytest.mark.parametrize("text,line,what", [
    ("id\n1\n\n2\n", 3, "an empty value"),  # pandas writes a one-column null so
    ("id\n1\n2\n\n", 4, "an empty value"),
    ("id,city\n1,Paris\n\r\n2,Lyon\n", 3, "not a row"),
])
def test_csv_blank_line_is_refused_with_its_line(tmp_path: Path, text: str, line: int,
                                                 what: str) -> None:
    path = write_text(tmp_path, "e.csv", text)
    with raises(path, f"line {line} is blank, which is {what}", "delete the blank line"):
        read_entities(path)


def test_csv_malformed_quoting_names_the_line(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", 'id,city\n1,Paris\n2,"Ly"on\n')
    with raises(path, "line 3", "malformed CSV"):
        read_entities(path)


def test_csv_header_without_rows(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "id,city\n")
    with raises(path, "has no entity rows"):
        read_entities(path)


def test_csv_missing_required_column_lists_existing_columns(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "driver,city\n1,Paris\n")
    with raises(path, "'driver_id'", "not found", "'driver', 'city'"):
        read_entities(path, required=["driver_id"])


def test_csv_empty_required_value_names_line_and_column(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "id,city\n1,Paris\n2,\n3,Nice\n")
    read_entities(path, required=["id"])  # city is optional: empty is null
    with raises(path, "line 3", "'city'", "empty"):
        read_entities(path, required=["id", "city"])


def test_csv_header_problems(tmp_path: Path) -> None:
    duplicate = write_text(tmp_path, "dup.csv", "id,id\n1,2\n")
    with raises(duplicate, "'id' appears twice"):
        read_entities(duplicate)
    unnamed = write_text(tmp_path, "unnamed.csv", "id,,x\n1,2,3\n")
    with raises(unnamed, "line 1", "field 2 is empty"):
        read_entities(unnamed)
    blank = write_text(tmp_path, "blank.csv", "\n1\n")
    with raises(blank, "line 1", "header"):
        read_entities(blank)


def test_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(b"id,city\n1,Z\xfcrich\n")
    with raises(str(path), "not UTF-8"):
        read_entities(str(path))


def test_required_as_a_single_string_means_one_column(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "id\n1\n")
    assert read_entities(path, required="id").columns == {"id": [1]}


# --- JSONL --------------------------------------------------------------------------------


def test_jsonl_types_from_json_values(tmp_path: Path) -> None:
    lines = [
        '{"i": 1, "s": "007", "f": 1.5, "b": true, "n": null}',
        "",
        '{"i": -9223372036854775808, "s": "x", "f": 2.0, "b": false, "n": null}',
    ]
    table = read_entities(write_text(tmp_path, "e.jsonl", "\n".join(lines) + "\n"))
    assert table.num_rows == 2
    assert table.columns == {
        "i": [1, -(2**63)],
        "s": ["007", "x"],
        "f": [1.5, 2.0],
        "b": [True, False],
        "n": [None, None],
    }
    assert table.types == {"i": "int64", "s": "string", "f": "float", "b": "bool", "n": "null"}


def test_jsonl_columns_are_the_union_of_keys_and_absent_keys_are_null(tmp_path: Path) -> None:
    text = '{"a": 1}\r\n{"a": 2, "b": "x"}\r\n{"b": "y"}\r\n'
    table = read_entities(write_text(tmp_path, "e.jsonl", text))
    assert table.columns == {"a": [1, 2, None], "b": [None, "x", "y"]}
    assert table.types == {"a": "int64", "b": "string"}


def test_jsonl_column_mixing_integers_and_strings(tmp_path: Path) -> None:
    text = '{"id": 1}\n{"id": 2}\n\n{"id": "3"}\n'
    path = write_text(tmp_path, "e.jsonl", text)
    with raises(path, "line 4", "'id'", "holds a string", "line 1 holds an integer"):
        read_entities(path)


def test_jsonl_column_mixing_integers_and_floats(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.jsonl", '{"id": 1.5}\n{"id": 2}\n')
    with raises(path, "line 2", "'id'", "holds an integer", "line 1 holds a float"):
        read_entities(path)


def test_jsonl_array_or_object_column_is_left_out_unless_required(tmp_path: Path) -> None:
    text = '{"id": 1, "tags": null, "meta": {"a": 1}}\n{"id": 2, "tags": ["x"], "meta": null}\n'
    path = write_text(tmp_path, "e.jsonl", text)
    table = read_entities(path, required=["id"])
    assert table.columns == {"id": [1, 2]}
    assert table.types == {"id": "int64"}
    with raises(path, "line 2", "'tags'", "JSON array", "entity keys must be"):
        read_entities(path, required=["id", "tags"])
    with raises(path, "line 1", "'meta'", "JSON object"):
        read_entities(path, required=["meta"])


def test_jsonl_oversized_integer(tmp_path: Path) -> None:
    big = write_text(tmp_path, "big.jsonl", '{"id": 9223372036854775808}\n')
    with raises(big, "line 1", "'id'", "int64"):
        read_entities(big)


def test_jsonl_malformed_line(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.jsonl", '{"id": 1}\n{"id": 2,}\n')
    with raises(path, "line 2", "not valid JSON", "one JSON object per line"):
        read_entities(path)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.jsonl", '{"id": 1}\n[1, 2]\n')
    with raises(path, "line 2", "not an object"):
        read_entities(path)


def test_jsonl_only_blank_lines(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.jsonl", "\n  \n")
    with raises(path, "has no entity rows"):
        read_entities(path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('{"id": 1}\n{"id": null}\n', "line 2"),
        ('{"id": 1}\n{"other": 5}\n', "line 2"),
        ('{"id": "a"}\n{"id": "b"}\n{"id": ""}\n', "line 3"),
    ],
)
def test_jsonl_empty_required_value_names_line_and_column(
    tmp_path: Path, text: str, line: str
) -> None:
    path = write_text(tmp_path, "e.jsonl", text)
    with raises(path, line, "'id'", "empty"):
        read_entities(path, required=["id"])


def test_jsonl_required_column_absent_everywhere(tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.jsonl", '{"a": 1, "b": 2}\n')
    with raises(path, "'id'", "not found", "'a', 'b'"):
        read_entities(path, required=["id"])


def test_jsonl_values_are_what_the_json_module_reads(tmp_path: Path) -> None:
    # Lines orjson reads differently or refuses (a byte order mark, a lone surrogate,
    # Infinity, 1E400, a float's last digit) are read by the json module: its reading is
    # the rule.
    lines = ['\ufeff{"f": 0.1000000000000000055511151231257827, "s": "\\ud800"}',
             '{"f": 1E400, "s": "\u00e9"}', '{"f": -Infinity, "s": "x"}', '{"f": 5e-324}']
    table = read_entities(write_text(tmp_path, "e.jsonl", "\n".join(lines) + "\n"))
    decoded = [json.loads(line.encode()) for line in lines]
    assert table.columns == {name: [row.get(name) for row in decoded] for name in ("f", "s")}
    assert table.types == {"f": "float", "s": "string"}


def test_jsonl_int64_bounds_are_integers_as_a_columns_first_value(tmp_path: Path) -> None:
    for first in (-(2**63), 2**63 - 1):
        table = read_entities(write_text(tmp_path, "e.jsonl", f'{{"id": {first}}}\n{{"id": 1}}\n'))
        assert (table.columns, table.types) == ({"id": [first, 1]}, {"id": "int64"})


def test_jsonl_batches_of_lines_only_the_json_module_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_jsonl_entities, "_CHUNK_BYTES", 64)  # batches of 2-3 lines
    # orjson refuses NaN: every line of every batch is the json module's to read.
    lines = [f'{{"id": {n}, "w": NaN}}' if n % 5 else "" for n in range(60)]
    table = read_entities(write_text(tmp_path, "e.jsonl", "\n".join(lines) + "\n"))
    assert table.columns["id"] == [n for n in range(60) if n % 5]
    assert all(w != w for w in table.columns["w"])  # NaN


@pytest.mark.parametrize("text", ['{"id": 1}\n{"id": 18446744073709551616}\n',
                                  '{"id": 18446744073709551616}\n'])
def test_jsonl_integer_beyond_64_bits_is_refused_by_its_value(tmp_path: Path,
                                                              text: str) -> None:
    # orjson reads it as a float; it is an integer, too large for int64.
    path = write_text(tmp_path, "e.jsonl", text)
    with raises(path, f"line {text.count(chr(10))}", "value 18446744073709551616 does not fit"):
        read_entities(path)


def test_jsonl_streams_in_batches_once_its_types_are_known(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_jsonl_entities, "_CHUNK_BYTES", 256)  # many batches
    lines = [f'{{"id": {n}, "w": {n / 4}, "tag": ["t"]}}' if n % 7 else "" for n in range(400)]
    path = write_text(tmp_path, "e.jsonl", "\n".join(lines) + "\n")
    with stream_entities(path) as stream:
        assert stream is not None
        assert (stream.types, stream.num_rows) == ({"id": "int64", "w": "float"}, 342)
        assert stream.notes == {"tag": "holds a JSON array on line 2"}
        batches = list(stream.batches(["w", "id"]))
    assert len(batches) > 10
    whole = read_entities(path)
    assert [n for batch in batches for n in batch["id"]] == whole.columns["id"] == [
        n for n in range(400) if n % 7]
    assert [w for batch in batches for w in batch["w"]] == whole.columns["w"]
    # A bad line is refused by the first pass, before any row is read.
    lines[350] = '{"id": 350, "w": 1}'
    write_text(tmp_path, "e.jsonl", "\n".join(lines) + "\n")
    with raises(path, "line 351: column 'w' holds an integer, but line 2 holds a float"), \
            stream_entities(path):
        pass


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_a_file_rewritten_between_its_passes_is_refused(tmp_path: Path, kind: str) -> None:
    # The same rows, other keys (more digits: another size, whatever the clock's grain).
    files = {}
    for name, keys in (("e", range(1, 1_500)), ("rewritten", range(10, 15_000, 10))):
        if kind == "parquet":
            files[name] = write_parquet(tmp_path, {"id": list(keys)}, f"{name}.parquet")
        else:
            line = "{}\n" if kind == "csv" else '{{"id": {}}}\n'
            header = "id\n" if kind == "csv" else ""
            files[name] = write_text(tmp_path, f"{name}.{kind}",
                                     header + "".join(line.format(key) for key in keys))
    path = files["e"]
    with stream_entities(path) as stream:
        assert stream is not None and stream.num_rows == 1_499  # typed: the first pass ran
        reads = [stream.batches, stream.arrow_batches] if kind != "jsonl" else [stream.batches]
        assert stream.arrow_batches is None or kind != "jsonl"
        for read in reads:  # unchanged, each reads from the start as often as asked
            first = next(read(["id"]))["id"]
            assert (first.to_pylist() if isinstance(first, pa.Array) else first)[:2] == [1, 2]
        Path(path).write_bytes(Path(files["rewritten"]).read_bytes())  # in place: still open
        for read in reads:
            if read is not None:  # (for mypy: arrow_batches is there for CSV and Parquet)
                with raises(path, "changed while it was read (its size or modification time "
                            "is not what it was when it was opened); submit it again once it "
                            "is complete") as refused:
                    next(read(["id"]))
                assert refused.value.exit_code == 2


def test_a_file_appended_to_while_its_rows_are_read_is_refused_at_their_end(
        tmp_path: Path) -> None:
    path = write_text(tmp_path, "e.csv", "id\n1\n2\n")
    with stream_entities(path) as stream:
        assert stream is not None
        batches = stream.batches(["id"])
        assert next(batches) == {"id": [1, 2]}
        with open(path, "a") as producer:
            producer.write("3\n")
        with raises(path, "changed while it was read"):
            next(batches)


def test_a_file_changed_while_it_is_read_whole_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_text(tmp_path, "e.jsonl", '{"id": 1}\n{"id": 2}\n')

    def read_as_a_producer_appends(stream: Any, source: str, required: tuple[str, ...]
                                   ) -> EntityTable:
        table = _jsonl_entities.read_jsonl(stream, source, required)  # its two passes
        with open(path, "a") as producer:
            producer.write('{"id": 3}\n')
        return table

    monkeypatch.setitem(entities._READERS, "jsonl", read_as_a_producer_appends)
    with raises(path, "changed while it was read", "submit it again once it is complete"):
        read_entities(path)
    monkeypatch.undo()
    assert read_entities(path).columns == {"id": [1, 2, 3]}  # once nothing writes to it


# --- Parquet ------------------------------------------------------------------------------


def test_parquet_types_follow_the_arrow_schema(tmp_path: Path) -> None:
    columns = {
        "i8": pa.array([1, -2], pa.int8()),
        "i16": pa.array([1, -2], pa.int16()),
        "i32": pa.array([2**31 - 1, -(2**31)], pa.int32()),
        "i64": pa.array([2**63 - 1, None], pa.int64()),
        "u8": pa.array([255, 0], pa.uint8()),
        "u64": pa.array([2**63 - 1, 0], pa.uint64()),
        "s": pa.array(["007", "x"], pa.string()),
        "ls": pa.array(["a", "b"], pa.large_string()),
        "bin": pa.array([b"\x00\xff", b"k"], pa.binary()),
        "lbin": pa.array([b"a", b"b"], pa.large_binary()),
        "f32": pa.array([1.5, -0.25], pa.float32()),
        "f64": pa.array([0.1, 2.0], pa.float64()),
        "flag": pa.array([True, False], pa.bool_()),
        "nothing": pa.array([None, None], pa.null()),
        "dict": pa.array(["p", "q"]).dictionary_encode(),
    }
    table = read_entities(write_parquet(tmp_path, columns), required=["i32", "s"])
    assert table.types == {
        "i8": "int32",
        "i16": "int32",
        "i32": "int32",
        "i64": "int64",
        "u8": "int64",
        "u64": "int64",
        "s": "string",
        "ls": "string",
        "bin": "bytes",
        "lbin": "bytes",
        "f32": "float",
        "f64": "float",
        "flag": "bool",
        "nothing": "null",
        "dict": "string",
    }
    expected = {name: array.to_pylist() for name, array in columns.items()}
    assert table.columns == expected
    assert all(type(v) is float for v in table.columns["f32"])
    assert table.num_rows == 2


def test_parquet_reads_every_row_group_in_order(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"id": list(range(150_000))}), path, row_group_size=40_000)
    table = read_entities(str(path), required=["id"])
    assert table.columns["id"] == list(range(150_000))


def test_parquet_null_in_required_column_names_the_row(tmp_path: Path) -> None:
    ids: list[int | None] = list(range(70_000))
    ids[68_999] = None  # beyond the first read batch: the row number must include the offset
    path = write_parquet(tmp_path, {"id": ids, "note": [None] * 70_000})
    read_entities(path)  # not required: nulls are allowed
    with raises(path, "row 69000", "'id'", "empty"):
        read_entities(path, required=["id"])


def test_parquet_empty_string_in_required_column(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, {"id": ["a", "", "c"]})
    with raises(path, "row 2", "'id'"):
        read_entities(path, required=["id"])


def test_parquet_column_that_cannot_hold_keys(tmp_path: Path) -> None:
    stamps = pa.array([0, 1], pa.timestamp("us", tz="UTC"))
    path = write_parquet(tmp_path, {"id": [1, 2], "event_timestamp": stamps})
    table = read_entities(path, required=["id"])  # not required: left out
    assert table.columns == {"id": [1, 2]}
    with raises(path, "'event_timestamp'", "timestamp[us, tz=UTC]", "cannot hold entity keys"):
        read_entities(path, required=["id", "event_timestamp"])
    only = write_parquet(tmp_path, {"event_timestamp": stamps}, name="only.parquet")
    with raises(only, "no column can hold entity keys", "event_timestamp"):
        read_entities(only)


def test_parquet_uint64_beyond_int64(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, {"id": pa.array([1, 2**64 - 1], pa.uint64())})
    with raises(path, "row 2", "'id'", "int64"):
        read_entities(path)


def test_parquet_missing_required_column(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, {"driver": [1], "city": ["x"]})
    with raises(path, "'driver_id'", "not found", "'driver', 'city'"):
        read_entities(path, required=["driver_id"])


def test_parquet_without_rows(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, {"id": pa.array([], pa.int64())})
    with raises(path, "has no entity rows"):
        read_entities(path)


def test_parquet_unreadable(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"id\n1\n2\n")
    with raises(str(garbage), "cannot read it as Parquet"):
        read_entities(str(garbage))
    good = Path(write_parquet(tmp_path, {"id": list(range(1000))}, name="cut.parquet"))
    good.write_bytes(good.read_bytes()[:-20])
    with raises(str(good), "cannot read it as Parquet"):
        read_entities(str(good))


# --- every format -------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.csv")
    with raises(path, "not found"):
        read_entities(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.jsonl"
    path.mkdir()
    with raises(str(path), "is a directory"):
        read_entities(str(path))


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl", "e.parquet"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = write_text(tmp_path, name, "")
    with raises(path, "is empty", "has no entity rows"):
        read_entities(path)


@pytest.mark.parametrize("name", ["e.txt", "e.json", "e.csv.gz", "entities"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = write_text(tmp_path, name, "id\n1\n")
    with raises(path, ".csv, .parquet, .jsonl"):
        read_entities(path)


def test_extension_is_case_insensitive(tmp_path: Path) -> None:
    assert read_entities(write_text(tmp_path, "E.CSV", "id\n1\n")).columns == {"id": [1]}


def test_a_first_block_stream_declined_in_a_file_changed_meanwhile_is_the_file_changing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A late block the stream leaves to the exact reader, in a file touched since it was
    # opened: not a file to read whole, but one that changed while it was read.
    monkeypatch.setattr(_csv_stream, "_BLOCK_BYTES", 256)  # a tuning constant
    path = tmp_path / "ids.csv"
    path.write_text("id\n" + "".join(f"{n}\n" for n in range(300)) + "abc\n")
    with stream_entities(str(path), first_block=True) as stream:
        assert stream is not None and stream.first_block_types and stream.arrow_batches
        batches = stream.arrow_batches(["id"])
        next(batches)
        os.utime(path, ns=(1, 1))
        with pytest.raises(EntityFileError) as changed:
            list(batches)
    assert str(changed.value) == (
        f"{path}: changed while it was read (its size or modification time is not what it "
        "was when it was opened); submit it again once it is complete")
    assert type(changed.value).__name__ == "EntityFileChanged"
