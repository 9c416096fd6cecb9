"""rows_to_table and unify_schemas: the Arrow form of feature rows, and reconciling shards."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.io import OutputError, rows_to_table, unify_schemas, write_rows
from featurepull.io.rows import CHUNK_ROWS

TS1 = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
TS2 = datetime(2024, 5, 2, 8, 0, tzinfo=timezone(timedelta(hours=2)))
FEATURES = ["trips", "rating", "name", "blob", "active", "tags", "profile", "unused"]
KEYS: dict[str, list[Any]] = {"driver_id": [1001, 1002, 1003], "city": ["p", "q", "r"]}
ROWS: list[tuple[Any, ...] | None] = [
    (TS1, 12, 4.5, "Ann", b"\x00\xff", True, [1, 2], {"level": 3, "vip": "yes"}, None),
    None,
    (TS2, 0, -1.25, "Bo", b"", False, [], {"level": None, "vip": "no"}, None),
]


def raises(*fragments: str) -> Any:
    """pytest.raises for an OutputError whose message holds every fragment."""
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in fragments)
    return pytest.raises(OutputError, match=re.compile(pattern, re.DOTALL))


def schema(**types: Any) -> pa.Schema:
    return pa.schema(list(types.items()))


# --- rows_to_table ------------------------------------------------------------------------


def test_table_is_what_write_rows_puts_in_parquet(tmp_path: Path) -> None:
    table = rows_to_table(KEYS, ROWS, FEATURES)
    path = tmp_path / "out.parquet"
    write_rows(str(path), KEYS, ROWS, FEATURES)
    written = pq.read_table(path)
    assert table.schema.equals(written.schema)
    assert table.to_pylist() == written.to_pylist()


def test_table_columns_types_and_values() -> None:
    table = rows_to_table(KEYS, ROWS, FEATURES)
    assert table.column_names == ["driver_id", "city", "event_timestamp", *FEATURES]
    types = {field.name: field.type for field in table.schema}
    assert types["driver_id"] == pa.int64()
    assert types["event_timestamp"] == pa.timestamp("us", tz="UTC")
    assert types["rating"] == pa.float64()
    assert types["blob"] == pa.binary()
    assert types["tags"] == pa.list_(pa.int64())
    assert types["unused"] == pa.null()
    records = table.to_pylist()
    assert records[1] == {"driver_id": 1002, "city": "q"} | dict.fromkeys(
        ["event_timestamp", *FEATURES]
    )
    assert records[2]["event_timestamp"] == TS2  # the same instant, in UTC
    assert records[0]["profile"] == {"level": 3, "vip": "yes"}


def test_empty_rows_give_an_empty_table_with_the_columns() -> None:
    table = rows_to_table({"id": []}, [], ["f"])
    assert table.num_rows == 0
    assert table.column_names == ["id", "event_timestamp", "f"]
    assert table.schema.field("f").type == pa.null()


def test_large_rows_keep_order_across_chunks() -> None:
    total = CHUNK_ROWS + 5
    rows: list[tuple[Any, ...] | None] = [None if i % 3 else (TS1, i) for i in range(total)]
    table = rows_to_table({"id": list(range(total))}, rows, ["n"])
    assert table.column("id").to_pylist() == list(range(total))
    assert table.column("n").to_pylist() == [None if i % 3 else i for i in range(total)]


def test_mixed_types_name_the_source_column_and_rows() -> None:
    rows: list[tuple[Any, ...] | None] = [(TS1, 1), None, (TS1, "2")]
    with raises("shard 4: feature column 'score'", "int (row 1)", "str (row 3)"):
        rows_to_table({"id": [1, 2, 3]}, rows, ["score"], source="shard 4")
    with raises("rows: key column 'id'", "int (row 1)", "str (row 2)"):
        rows_to_table({"id": [1, "b"]}, [None, None], ["f"])


def test_malformed_rows_are_refused() -> None:
    with raises("rows: row 1 has 3 values", "1 features"):
        rows_to_table({"id": [1]}, [(TS1, 1, 2)], ["f"])
    with raises("row 1", "timezone-aware"):
        rows_to_table({"id": [1]}, [(datetime(2024, 1, 1), 1)], ["f"])
    with raises("'id' would appear twice"):
        rows_to_table({"id": [1]}, [None], ["id"])


# --- unify_schemas ------------------------------------------------------------------------


def test_null_columns_take_the_type_another_schema_has() -> None:
    unified = unify_schemas([schema(id=pa.int64(), f=pa.null()), schema(id=pa.int64(), f=pa.string())])
    assert unified == schema(id=pa.int64(), f=pa.string())


def test_int64_and_double_become_double() -> None:
    schemas = [schema(f=pa.int64()), schema(f=pa.null()), schema(f=pa.float64())]
    assert unify_schemas(schemas) == schema(f=pa.float64())


def test_lists_and_structs_are_unified_inside() -> None:
    first = schema(tags=pa.list_(pa.null()), profile=pa.struct([("a", pa.int64()), ("b", pa.null())]))
    second = schema(tags=pa.list_(pa.float64()), profile=pa.struct([("a", pa.null()), ("b", pa.string())]))
    assert unify_schemas([first, second]) == schema(
        tags=pa.list_(pa.float64()), profile=pa.struct([("a", pa.int64()), ("b", pa.string())])
    )


def test_timestamps_in_different_zones_become_utc() -> None:
    schemas = [schema(seen=pa.timestamp("us", tz="+02:00")), schema(seen=pa.null()),
               schema(seen=pa.timestamp("us", tz="UTC"))]
    assert unify_schemas(schemas) == schema(seen=pa.timestamp("us", tz="UTC"))


def test_one_schema_is_itself() -> None:
    only = schema(id=pa.string(), event_timestamp=pa.timestamp("us", tz="UTC"), f=pa.null())
    assert unify_schemas([only]) == only


def test_a_real_conflict_names_the_column_and_the_schemas() -> None:
    schemas = [schema(id=pa.int64(), f=pa.string()), schema(id=pa.int64(), f=pa.null()),
               schema(id=pa.int64(), f=pa.int64())]
    with raises("column 'f' is int64 in schema 3 but string in schemas 1-2"):
        unify_schemas(schemas)
    with raises("column 'f' is bool in schema 2 but int64 in schema 1"):
        unify_schemas([schema(f=pa.int64()), schema(f=pa.bool_())])


def test_schemas_must_name_the_same_columns_in_order() -> None:
    with raises("schema 2 has the columns ['b', 'a']", "schema 1 has ['a', 'b']"):
        unify_schemas([schema(a=pa.int64(), b=pa.int64()), schema(b=pa.int64(), a=pa.int64())])


def test_no_schemas_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one schema"):
        unify_schemas([])
