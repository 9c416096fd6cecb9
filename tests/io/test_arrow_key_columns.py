"""Key columns that stay Arrow from file to shard agree with the Python-list path they
replace, on generated inputs.

- `rows_to_table` with Arrow key columns (a worker's shard keys, as stored) is the table of
  the same keys as Python lists: same columns, same types (ints widened to int64 as
  inference widens them), same values; a row only the row path can judge gets the same
  message.
- `write_rows` with Arrow key columns (`pull` hands it its entity file's arrays) writes the
  file of the same keys as Python lists, byte for byte, in every format and on the row path.
- A streamed submit's shard tables from a CSV file's Arrow batches are the tables of its
  Python-list batches, and a bad key is refused with the same message.
"""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest

from featurepull.dynamo import FeastLayout, PlainLayout
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.found import FoundRows
from featurepull.io import OutputError, rows_to_table, write_rows
from featurepull.io._csv_stream import stream_csv
from featurepull.io._entity_table import EntityStream
from featurepull.io._row_view import CHUNK_ROWS
from featurepull.tasks.create import _ARROW_KEY_TYPES
from featurepull.tasks.streaming import streamed_shards

STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def key_values(rng: random.Random, arrow_type: pa.DataType, size: int) -> list[Any]:
    if pa.types.is_integer(arrow_type):
        high = 2**(arrow_type.bit_width - (1 if pa.types.is_signed_integer(arrow_type)
                                           else 0)) - 1
        low = -high - 1 if pa.types.is_signed_integer(arrow_type) else 0
        return [rng.choice([low, high, 0, rng.randint(low, high)]) for _ in range(size)]
    if pa.types.is_floating(arrow_type):
        return [rng.choice([0.5, -1.0, 1e300, float("nan")]) for _ in range(size)]
    if pa.types.is_boolean(arrow_type):
        return [rng.random() < 0.5 for _ in range(size)]
    if pa.types.is_null(arrow_type):
        return [None] * size
    if pa.types.is_binary(arrow_type):
        return [bytes([rng.randint(0, 255)]) * rng.randint(0, 3) for _ in range(size)]
    return [rng.choice(["a", "é", "", "日本", "x" * 30]) for _ in range(size)]


def found_rows(rng: random.Random, size: int) -> FoundRows:
    unique = size
    slots = rng.sample(range(unique), rng.randint(0, unique))
    columns = [[STAMP] * len(slots), [rng.random() for _ in slots],
               [rng.choice(["u", None]) for _ in slots]]
    return FoundRows(list(range(size)), unique, slots, columns)


@pytest.mark.parametrize("arrow_type", [
    pa.int8(), pa.int32(), pa.int64(), pa.uint32(), pa.uint64(), pa.string(),
    pa.large_string(), pa.binary(), pa.float64(), pa.bool_(), pa.null()])
@pytest.mark.parametrize("seed", range(2))
def test_a_table_of_arrow_keys_is_the_table_of_their_values(arrow_type: pa.DataType,
                                                             seed: int) -> None:
    rng = random.Random(f"{arrow_type}{seed}")
    size = rng.randint(0, 300)
    values = key_values(rng, arrow_type, size)
    rows = found_rows(rng, size)
    expected = table_or_message({"k": values, "j": list(range(size))}, rows)
    for column in (pa.array(values, arrow_type),
                   pa.chunked_array([values[:5], values[5:]], arrow_type)):
        got = table_or_message({"k": column, "j": pa.array(range(size), pa.int64())}, rows)
        if isinstance(expected, str):  # a uint64 beyond int64: refused alike
            assert got == expected
            continue
        assert isinstance(got, pa.Table)
        assert got.schema == expected.schema
        if arrow_type != pa.float64():  # NaN is not NaN
            assert got.equals(expected)
        assert got.column("k").to_pylist() == expected.column("k").to_pylist() or (
            arrow_type == pa.float64())


def table_or_message(key_columns: dict[str, Any], rows: FoundRows) -> pa.Table | str:
    try:
        return rows_to_table(key_columns, rows, ["f", "g"])
    except OutputError as exc:
        return str(exc)


def test_a_row_only_the_row_path_judges_has_the_same_message_with_arrow_keys() -> None:
    rows: list[Any] = [(STAMP, 1.0), (STAMP, 2.0, "extra")]
    messages = []
    for keys in ([1, 2], pa.array([1, 2])):
        with pytest.raises(OutputError) as caught:
            rows_to_table({"k": keys}, rows, ["f"], source="job x shard 0")
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "row 2 has 3 values" in messages[0]


def csv_stream(text: str) -> EntityStream:
    stream = stream_csv(io.BytesIO(text.encode()), "entities.csv")
    assert stream is not None and stream.arrow_batches is not None
    return stream


def lists_only(stream: EntityStream) -> EntityStream:
    return EntityStream(stream.source, stream.types, stream.num_rows, stream.batches)


@pytest.mark.parametrize("seed", range(3))
def test_streamed_shards_from_arrow_batches_are_those_of_the_lists(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 5_000)
    lines = ["id,name,empty"] + [f"{rng.randint(-(2**62), 2**62)},{rng.choice(['a', 'é'])},"
                                 for _ in range(size)]
    text = "\n".join(lines) + "\n"
    shard_size = rng.randint(1, 1_500)
    for layout, columns in ((FeastLayout({"id": "int64"}), ["id"]),
                            (FeastLayout({"id": "int64", "name": "string"}), ["id", "name"]),
                            (PlainLayout([("name", "S")]), ["name", "empty"])):
        arrow = list(streamed_shards(csv_stream(text), layout, columns, shard_size,
                                     _ARROW_KEY_TYPES))
        python = list(streamed_shards(lists_only(csv_stream(text)), layout, columns,
                                      shard_size, _ARROW_KEY_TYPES))
        assert len(arrow) == len(python) == -(-size // shard_size)
        for got, expected in zip(arrow, python, strict=True):
            assert got.schema == expected.schema
            assert got.equals(expected)


@pytest.mark.parametrize("kind,value", [("int32", 2**31), ("int32", -(2**31) - 1),
                                        ("unix_timestamp", 5)])
def test_a_bad_streamed_key_gets_the_message_of_the_lists(kind: str, value: int) -> None:
    text = "id\n1\n2\n" + f"{value}\n" + "3\n"
    layout = FeastLayout({"id": kind})
    outcomes = []
    for stream in (csv_stream(text), lists_only(csv_stream(text))):
        try:
            outcomes.append(list(streamed_shards(stream, layout, ["id"], 2,
                                                 _ARROW_KEY_TYPES)))
        except EntityKeyError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1] or (
        isinstance(outcomes[0], list) and all(a.equals(b) for a, b in
                                              zip(outcomes[0], outcomes[1], strict=True)))
    if kind == "int32":
        assert "entity row 3" in outcomes[0]


def written(folder: Any, fmt: str, key_columns: dict[str, Any], rows: Any) -> bytes | str:
    """The file `write_rows` writes in ``folder``, or its message (without the folder)."""
    folder.mkdir(exist_ok=True)
    path = folder / f"out.{fmt}"
    try:
        write_rows(str(path), key_columns, rows, ["f", "g"], overwrite=True)
    except OutputError as exc:
        return str(exc).replace(str(folder), "")
    return path.read_bytes()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
@pytest.mark.parametrize(("arrow_type", "size"), [
    (pa.int64(), CHUNK_ROWS + 1_000), (pa.string(), 300), (pa.int64(), 1)])
def test_a_file_of_arrow_keys_is_the_file_of_their_values(
        tmp_path: Any, fmt: str, arrow_type: pa.DataType, size: int) -> None:
    # `pull` hands write_rows its entity file's int64 and string arrays; Parquet takes each
    # row group's rows into order while the one before is written (several row groups).
    rng = random.Random(f"{arrow_type}{size}")
    values = key_values(rng, arrow_type, size)
    rows = found_rows(rng, size)
    expected = written(tmp_path / "lists", fmt, {"k": values}, rows)
    assert isinstance(expected, bytes)
    for column in (pa.array(values, arrow_type),
                   pa.chunked_array([values[:5], values[5:]], arrow_type)):
        assert written(tmp_path / "arrow", fmt, {"k": column}, rows) == expected


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_rows_only_the_row_path_writes_are_written_alike_with_arrow_keys(
        tmp_path: Any, fmt: str) -> None:
    other_zone = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    malformed: list[Any] = [(STAMP, 1.0, None), (STAMP, 2.0, "u", "extra")]
    zoned: list[Any] = [(STAMP, 1.0, None), None, (other_zone, 2.5, "u")]
    for rows in (malformed, zoned):
        keys = list(range(len(rows)))
        expected = written(tmp_path / "lists", fmt, {"k": keys}, rows)
        assert written(tmp_path / "arrow", fmt, {"k": pa.array(keys)}, rows) == expected
