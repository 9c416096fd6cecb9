"""Keys made ahead of a read (`unique_keys_ahead`, `BatchReader.read(keys_ready=...)`).

- `unique_keys_ahead` gives `unique_keys`'s keys and positions: where it makes them as they
  are asked for (one int Feast join key, no value twice), `ready(n)` makes the first n,
  whatever n; any other column (a repeat, text) gets every key made (`ready` None).
- A read whose keys are not all made asks for each key before it sends it: given a list
  that holds only the keys asked for, it reads what a read of all the keys reads.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from featurepull.dynamo.layouts import unique_keys, unique_keys_ahead
from tests.conftest import REGION

LAYOUT = FeastLayout({"driver_id": "int64"})


@pytest.mark.parametrize(("seed", "size", "first"), [
    (0, 40_000, 3_200), (1, 40_000, 1), (2, 50_001, 0), (3, 700, 3_200), (4, 16_384, 16_384)])
def test_keys_made_ahead_are_unique_keys(seed: int, size: int, first: int) -> None:
    rng = random.Random(seed)
    column = pa.array(rng.sample(range(-(2**40), 2**40), size), pa.int64())
    expected, expected_positions = unique_keys(LAYOUT, {"driver_id": column})
    keys, positions, ready = unique_keys_ahead(LAYOUT, {"driver_id": column}, first)
    assert ready is not None
    for count in [*sorted(rng.sample(range(size + 1), 5)), size]:
        ready(count)
        assert keys[:count] == expected[:count], count
    assert keys == expected and positions.equals(expected_positions)


@pytest.mark.parametrize(("key_type", "column", "ahead"), [
    ("int64", pa.array([5, 7, 5, 9], pa.int64()), False),  # a repeat: the hash table's keys
    ("string", pa.array(["a", "b"]), False),
    ("int64", [3, 1, 2], True),  # a list is one Arrow column too
    ("int32", pa.array([3, 1, 2], pa.int32()), True),
])
def test_a_column_gets_its_keys_made_ahead_only_when_it_can(key_type: str, column: Any, ahead: bool) -> None:
    layout = FeastLayout({"driver_id": key_type})
    keys, positions, ready = unique_keys_ahead(layout, {"driver_id": column}, 1)
    expected, expected_positions = unique_keys(layout, {"driver_id": column})
    assert (ready is not None) == ahead
    if ready is not None:
        ready(len(expected))
    assert keys == expected and positions.equals(expected_positions)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=300, table="ahead.driver_stats", latency_ms=1) as running:
        yield running


def test_a_read_sends_no_key_before_it_is_made(endpoint: EndpointProcess) -> None:
    ids = random.Random(7).sample(range(450), 420)  # a third missing, no repeats
    keys, positions = unique_keys(LAYOUT, {"driver_id": pa.array(ids, pa.int64())})
    settings = DynamoSettings(region=REGION, endpoint_url=endpoint.url, batch_size=30,
                              max_read_workers=4)
    features = ["city", "conv_rate", "avg_daily_trips", "last_trip_at"]
    whole = BatchReader("ahead.driver_stats", LAYOUT, settings).read(
        keys, features, positions=positions)
    being_made = [""] * len(keys)  # "" is no key: DynamoDB refuses it
    asked: list[int] = []

    def ready(count: int) -> None:
        asked.append(count)
        being_made[:count] = keys[:count]

    endpoint.reset_stats()
    ahead = BatchReader("ahead.driver_stats", LAYOUT, settings).read(
        being_made, features, positions=positions, keys_ready=ready)
    assert list(ahead.rows) == list(whole.rows)
    assert ahead.stats.found == whole.stats.found > 0
    assert endpoint.stats()["keys"] == len(keys)
    assert asked == sorted(asked) and asked[-1] == len(keys)
