"""Keys from Arrow columns agree with the exact per-row path, on generated inputs.

- `unique_keys` of an Arrow column (a shard's keys as stored, an entity file's column) gives
  what it gives for the same values as a Python list, and both are `keys_for` of each row;
  a column with no value twice (de-duplicated by one sort) is the same as one with repeats
  (a hash table): first-seen order, each row's index.
- `columns_encodable` of an Arrow column says what it says of its Python values, or
  declines ("not sure"), in which case the exact path raises the same message.
- `FoundRows.found_index` (a scatter and a take) is Arrow's `index_in` of each row's key
  among the found ones: the first found item of a key, null where none.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from featurepull.dynamo import FeastLayout, PlainLayout
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.feast_keys import EntityKeyEncoder
from featurepull.dynamo.found import FoundRows
from featurepull.dynamo.layouts import unique_keys

ARROW_INTS = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(),
              pa.uint64()]


def outcome(call: Any) -> Any:
    """What a call returns, or the message of the EntityKeyError it raises."""
    try:
        return call()
    except EntityKeyError as exc:
        return f"EntityKeyError: {exc}"


def by_row(keys: Any, positions: Any) -> list[Any]:
    if positions is None:
        return list(keys)
    return [keys[p] for p in positions.to_pylist()]


def distinct_ints(rng: random.Random, size: int, low: int, high: int) -> list[int]:
    return rng.sample(range(low, high), size)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("repeats", [False, True])
def test_int_keys_from_arrow_or_a_list_are_every_rows_key(seed: int, repeats: bool) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 2_000)
    values = distinct_ints(rng, size, -(2**40), 2**40)
    values += [-(2**63), 2**63 - 1]
    if repeats:
        values += rng.choices(values, k=rng.randint(1, 50))
    rng.shuffle(values)
    layout = FeastLayout({"k": "int64"})
    exact = layout.keys_for({"k": values})
    for column in (values, pa.array(values, pa.int64()),
                   pa.chunked_array([values[:7], values[7:]], pa.int64())):
        keys, positions = unique_keys(layout, {"k": column})
        assert positions is not None
        assert by_row(keys, positions) == exact
        assert list(keys) == list(dict.fromkeys(exact))  # each once, first seen first
        assert positions.type == pa.int32()  # as dictionary_encode's indices


@pytest.mark.parametrize("arrow_type", ARROW_INTS)
def test_any_arrow_int_type_hashes_as_its_values(arrow_type: pa.DataType) -> None:
    rng = random.Random(str(arrow_type))
    info_high = {8: 127, 16: 2**15 - 1, 32: 2**31 - 1, 64: 2**63 - 1}[arrow_type.bit_width]
    low = 0 if pa.types.is_unsigned_integer(arrow_type) else -info_high - 1
    high = info_high if pa.types.is_signed_integer(arrow_type) else min(2 * info_high + 1,
                                                                         2**63 - 1)
    values = [low, high, *(rng.randint(low, high) for _ in range(300))]
    for kind in ("int64", "int32", "unix_timestamp"):
        layout = FeastLayout({"k": kind})
        expected = outcome(lambda: layout.keys_for({"k": values}))  # noqa: B023
        column = pa.array(values, arrow_type)
        got = outcome(lambda: by_row(*unique_keys(layout, {"k": column})))  # noqa: B023
        assert got == expected, kind
        assert outcome(lambda: layout.keys_for({"k": column})) == expected  # noqa: B023
        assert outcome(lambda: layout.check_keys({"k": column})) == outcome(  # noqa: B023
            lambda: layout.check_keys({"k": values}))  # noqa: B023


@pytest.mark.parametrize("column", [
    pa.array([1, None, 3], pa.int64()),            # a null key
    pa.array([True, False]),                       # a bool is no int
    pa.array([1.0, 2.0]),                          # nor a float
    pa.array([2**31, 1], pa.int64()),              # beyond int32 (int32 key)
    pa.array([2**63, 1], pa.uint64()),             # beyond int64
    pa.array(["1", "2"]),                          # text for an int key
    pa.array([b"a", b"b"]),
])
@pytest.mark.parametrize("kind", ["int64", "int32"])
def test_an_arrow_column_it_cannot_vouch_for_gets_the_exact_message(
        column: pa.Array, kind: str) -> None:
    layout = FeastLayout({"k": kind})
    values = column.to_pylist()
    encoder = EntityKeyEncoder({"k": kind})
    # Arrow vouches for these exactly where their Python values would be vouched for (only
    # the int64 column beyond int32, for an int64 key): never for a key that cannot encode.
    assert encoder.columns_encodable([column]) == encoder.columns_encodable([values])
    expected = outcome(lambda: layout.keys_for({"k": values}, "f.csv"))
    assert outcome(lambda: layout.keys_for({"k": column}, "f.csv")) == expected
    assert outcome(lambda: by_row(*unique_keys(layout, {"k": column}, "f.csv"))) == expected
    assert outcome(lambda: layout.check_keys({"k": column}, "f.csv")) == outcome(
        lambda: layout.check_keys({"k": values}, "f.csv"))


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string()])
@pytest.mark.parametrize("seed", range(3))
def test_text_keys_from_arrow_are_every_rows_key(arrow_type: pa.DataType, seed: int) -> None:
    rng = random.Random(seed)
    pool = ["a", "é", "日本", "\U0001f600", "", "0", "x" * 50, *map(str, range(40))]
    values = [rng.choice(pool) for _ in range(rng.randint(1, 400))]
    layout = FeastLayout({"k": "string"})
    exact = layout.keys_for({"k": values})
    keys, positions = unique_keys(layout, {"k": pa.array(values, arrow_type)})
    assert by_row(keys, positions) == exact
    assert list(keys) == list(dict.fromkeys(exact))
    with_null = pa.array([*values, None], arrow_type)
    assert outcome(lambda: layout.keys_for({"k": with_null}, "f")) == outcome(
        lambda: layout.keys_for({"k": with_null.to_pylist()}, "f"))


def test_bytes_compound_and_plain_keys_from_arrow_are_those_of_the_values() -> None:
    rng = random.Random(7)
    ids = [rng.randint(0, 50) for _ in range(200)]
    names = [rng.choice(["a", "b", "é"]) for _ in range(200)]
    blobs = [bytes([rng.randint(0, 255)]) * rng.randint(1, 3) for _ in range(200)]
    arrow = {"id": pa.array(ids), "name": pa.array(names), "blob": pa.array(blobs)}
    python = {"id": ids, "name": names, "blob": blobs}
    for layout in (FeastLayout({"blob": "bytes"}), FeastLayout({"id": "int64",
                                                                "name": "string"}),
                   PlainLayout([("id", "N"), ("name", "S")]), PlainLayout([("blob", "B")])):
        expected = layout.keys_for(python)
        assert layout.keys_for(arrow) == expected
        assert by_row(*unique_keys(layout, arrow)) == expected
        layout.check_keys(arrow)


@pytest.mark.parametrize("seed", range(6))
def test_found_index_is_index_in_of_each_rows_key(seed: int) -> None:
    rng = random.Random(seed)
    unique = rng.randint(0, 500)
    found = rng.sample(range(unique), rng.randint(0, unique))
    if found and seed % 2:  # a key answered twice: the first item is its row
        found.insert(rng.randint(0, len(found)), rng.choice(found))
    positions: Any = [rng.randrange(unique) for _ in range(rng.randint(0, 800))] if unique \
        else []
    if seed % 3 == 0:
        positions = pa.array(positions, pa.int32())
    rows = FoundRows(positions, unique, found, [[None] * len(found)])
    index = rows.found_index()
    expected = pc.index_in(pa.array(positions, pa.int64()) if isinstance(positions, list)
                           else positions, value_set=pa.array(found, pa.int64()))
    assert index.to_pylist() == expected.to_pylist()
    assert rows.found_mask() == [row is not None for row in rows]


def test_without_numpy_keys_and_found_index_are_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The console pull runs pyarrow without numpy (featurepull.cli): the hash-table paths.
    rng = random.Random(11)
    values = distinct_ints(rng, 500, 0, 10**9)
    layout = FeastLayout({"k": "int64"})
    unique = 500
    found = rng.sample(range(unique), 60)
    with_numpy = (unique_keys(layout, {"k": values}),
                  FoundRows(list(range(unique)), unique, found, [found]).found_index())
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now raises ImportError
    keys, positions = unique_keys(layout, {"k": values})
    assert list(keys) == list(with_numpy[0][0])
    assert positions.to_pylist() == with_numpy[0][1].to_pylist()
    index = FoundRows(list(range(unique)), unique, found, [found]).found_index()
    assert index.to_pylist() == with_numpy[1].to_pylist()
