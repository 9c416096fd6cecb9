"""The columnar read path agrees with the exact one it stands in for, on generated inputs.

- Keys: `unique_keys` (one Feast join key de-duplicated in Arrow before hashing) gives the
  keys of `keys_for`, each once, in first-seen order, with each row's index; or declines.
- Wire keys: the JSON fragment of a request's keys is byte for byte what orjson makes of
  the per-key dicts; keys that would need escaping get the dicts.
- Rows: `FoundRows` (found columns + row indexes) reads as the list of tuples, and the
  Arrow table built from its columns with one `take` equals the row-by-row one.
- A whole read against the lean endpoint: the same rows, stats and requests whether the
  reader or `unique_keys` de-duplicates, on the fast and the botocore transport.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pytest

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout, PlainLayout
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.found import FoundRows, found_mask
from featurepull.dynamo.layouts import unique_keys
from featurepull.io import rows_to_table
from featurepull.io._columnar import columnar_table
from featurepull.io._row_view import RowView
from featurepull.io.tables import arrow_batches, arrow_schema
from tests.conftest import REGION

TEXT = ["a", "b", "é", "日本", "a b", '"q"', "\\", "\U0001f600", "x" * 40, "0", "-1"]


def generated_column(rng: random.Random, kind: str, size: int) -> list[Any]:
    if kind == "int64":
        pool = [0, 1, -1, 2**63 - 1, -(2**63), *rng.sample(range(10**6), 20)]
    elif kind == "int32":
        pool = [0, 1, -1, 2**31 - 1, -(2**31), *rng.sample(range(1000), 10)]
    elif kind == "unix_timestamp":
        pool = [0, 1_700_000_000, -5, 2**40]
    else:
        pool = TEXT
    return [rng.choice(pool) for _ in range(size)]


def keys_by_row(keys: Any, positions: Any) -> list[Any]:
    return [keys[p] for p in (positions.to_pylist() if positions is not None else
                              range(len(keys)))]


@pytest.mark.parametrize("kind", ["int64", "int32", "unix_timestamp", "string"])
@pytest.mark.parametrize("seed", range(3))
def test_unique_keys_are_the_keys_of_every_row_once(kind: str, seed: int) -> None:
    rng = random.Random(seed)
    layout = FeastLayout({"k": kind})
    column = generated_column(rng, kind, rng.randint(0, 300))
    keys, positions = unique_keys(layout, {"k": column})
    assert positions is not None
    assert keys_by_row(keys, positions) == layout.keys_for({"k": column})
    assert len(set(keys)) == len(keys)
    assert list(keys) == list(dict.fromkeys(layout.keys_for({"k": column})))  # first seen


@pytest.mark.parametrize("column", [
    [1, "1", 1],          # a mixed column: "1" is a string key, 1 is not
    [1, True],            # a bool is no int64
    [1.0, 1],             # nor a float
    [1, None],
])
def test_unique_keys_declines_what_it_cannot_vouch_for(column: list[Any]) -> None:
    layout = FeastLayout({"k": "int64"})
    try:
        expected: Any = layout.keys_for({"k": column})
    except EntityKeyError as exc:
        expected = str(exc)
    try:
        keys, positions = unique_keys(layout, {"k": column})
        got: Any = keys_by_row(keys, positions)
    except EntityKeyError as exc:
        got = str(exc)
    assert got == expected
    if not isinstance(expected, str):
        assert positions is None


def test_unique_keys_of_compound_and_plain_keys_are_every_rows() -> None:
    compound = FeastLayout({"a": "int64", "b": "string"})
    columns = {"a": [1, 1, 2], "b": ["x", "x", "y"]}
    keys, positions = unique_keys(compound, columns)  # de-duplicated serialized keys
    every_row = compound.keys_for(columns)
    assert (list(keys), positions.to_pylist()) == ([every_row[0], every_row[2]], [0, 0, 1])
    plain = PlainLayout([("id", "S")])
    assert unique_keys(plain, {"id": ["a", "a"]}) == (["a", "a"], None)


def test_a_wire_fragment_is_the_json_of_the_dicts() -> None:
    layout = FeastLayout({"k": "string"})
    keys = layout.keys_for({"k": TEXT})
    fragment = layout.wire_keys_json(keys)
    assert fragment is not None
    assert orjson.dumps({"Keys": fragment}) == orjson.dumps(
        {"Keys": [layout.wire_key(key) for key in keys]})
    # Anything but plain hex would need escaping (or is not a Feast id): the dicts go.
    assert layout.wire_keys_json(['ab"c']) is None
    assert layout.wire_keys_json(["é"]) is None
    assert layout.wire_keys_json([1]) is None
    assert PlainLayout([("id", "S")]).wire_keys_json(["abc"]) is None


def random_found_rows(rng: random.Random) -> tuple[FoundRows, list[Any]]:
    """A FoundRows, and the list of tuples it stands for."""
    unique = rng.randint(0, 40)
    rows_count = rng.randint(unique, unique * 3) if unique else 0
    positions = list(range(unique)) + [rng.randrange(unique) for _ in range(rows_count - unique)]
    rng.shuffle(positions)
    slots = rng.sample(range(unique), rng.randint(0, unique))
    base = datetime(2026, 1, 1, tzinfo=UTC)
    values: list[Any] = [None, 1, 2.5, "é", True, b"\x00", [1, 2], {"a": 1}]
    kinds = [rng.choice(values[1:]) for _ in range(3)]
    columns: list[list[Any]] = [[base + timedelta(seconds=slot) for slot in slots]]
    for kind in kinds:
        columns.append([None if rng.random() < 0.2 else kind for _ in slots])
    by_key: list[Any] = [None] * unique
    for slot, row in zip(slots, zip(*columns, strict=True), strict=True):
        by_key[slot] = row
    as_arrow = rng.random() < 0.5
    found = FoundRows(pa.array(positions, pa.int32()) if as_arrow else positions, unique,
                      slots, columns)
    return found, [by_key[p] for p in positions]


@pytest.mark.parametrize("seed", range(30))
def test_found_rows_read_as_the_rows_they_stand_for(seed: int) -> None:
    rng = random.Random(seed)
    found, rows = random_found_rows(rng)
    fresh, _ = random_found_rows(random.Random(seed))
    assert fresh.found_count == sum(row is not None for row in rows)  # before materialized
    assert found_mask(fresh) == found_mask(rows) == [row is not None for row in rows]
    assert len(found) == len(rows)
    assert found == rows and list(found) == rows
    assert found[: len(rows) // 2] == rows[: len(rows) // 2]
    features = ("f0", "f1", "f2")
    keys = {"id": list(range(len(rows)))}
    table = columnar_table(RowView("t", keys, fresh, features))
    view = RowView("t", keys, rows, features)
    exact = pa.Table.from_batches(list(arrow_batches(view, arrow_schema(view))),
                                  schema=arrow_schema(view))
    if table is not None:  # None: columnar_table declined (the row path then runs)
        assert table.schema == exact.schema
        assert table.to_pylist() == exact.to_pylist()
    assert rows_to_table(keys, fresh, list(features)).to_pylist() == exact.to_pylist()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=300, table="found.driver_stats", latency_ms=1) as running:
        yield running


@pytest.mark.parametrize("transport", ["fast", "botocore"])
def test_a_read_of_distinct_keys_is_the_read_of_every_key(endpoint: EndpointProcess,
                                                          transport: str) -> None:
    rng = random.Random(5)
    ids = [rng.randrange(450) for _ in range(700)]  # repeats, and a third missing
    layout = FeastLayout({"driver_id": "int64"})
    settings = DynamoSettings(region=REGION, endpoint_url=endpoint.url, transport=transport,
                              batch_size=30, max_read_workers=4)
    features = ["city", "conv_rate", "avg_daily_trips", "last_trip_at"]
    endpoint.reset_stats()
    every = BatchReader("found.driver_stats", layout, settings).read(
        layout.keys_for({"driver_id": ids}), features)
    wire_every = endpoint.stats()
    keys, positions = unique_keys(layout, {"driver_id": ids})
    endpoint.reset_stats()
    distinct = BatchReader("found.driver_stats", layout, settings).read(
        keys, features, positions=positions)
    wire_distinct = endpoint.stats()
    assert list(distinct.rows) == list(every.rows)
    assert sum(row is not None for row in every.rows) == every.stats.found > 0
    assert every.stats.missing > 0
    for name in ("keys", "unique_keys", "found", "missing", "requests"):
        assert getattr(distinct.stats, name) == getattr(every.stats, name), name
    assert (wire_distinct["batch_get_item"], wire_distinct["keys"]) == (
        wire_every["batch_get_item"], wire_every["keys"]) == (
        -(-len(set(ids)) // 30), len(set(ids)))
    view = RowView("t", {"driver_id": ids}, distinct.rows, tuple(features))
    exact = RowView("t", {"driver_id": ids}, list(every.rows), tuple(features))
    table = columnar_table(view)
    assert table is not None
    assert table.equals(pa.Table.from_batches(list(arrow_batches(exact, arrow_schema(exact))),
                                              schema=arrow_schema(exact)))
