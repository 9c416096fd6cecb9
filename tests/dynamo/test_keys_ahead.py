"""Keys hashed beside the read that sends them (featurepull.dynamo.keys_ahead): the read's
first requests go out before its last keys are hashed, observed at the fault proxy with no
clock, and what is read, and what a bad key raises, is what the plain keys give."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pytest

from featurepull.bench.endpoint import EndpointProcess
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from featurepull.dynamo.errors import EntityKeyError, RetryDeadlineExceeded
from featurepull.dynamo.keys_ahead import KeysAhead
from featurepull.dynamo.layouts import unique_keys
from tests.conftest import REGION
from tests.faultproxy import FaultPlan, FaultProxy

LAYOUT = FeastLayout({"driver_id": "int64"})
TABLE = "cli.drivers"  # cli_endpoint's 1,000 drivers
FEATURES = ["conv_rate", "city"]
SLOTS, BATCH = 4, 50  # the read's first requests: 200 keys
# Drivers found and not, each once, shuffled the same way every run.
IDS = [(i * 7919) % 3_000 for i in range(3_000)]


def settings(url: str, **more: Any) -> DynamoSettings:
    return DynamoSettings(region=REGION, endpoint_url=url, max_read_workers=SLOTS,
                          batch_size=BATCH, adaptive_concurrency=False, **more)


def plain_keys() -> list[str]:
    keys, _ = unique_keys(LAYOUT, {"driver_id": pa.array(IDS, pa.int64())})
    return list(keys)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["turns", "thread"])
def test_the_first_requests_go_out_before_the_last_keys_are_hashed(
        cli_endpoint: EndpointProcess, mode: str) -> None:
    # The last chunk is hashed only once the read's first SLOTS requests are held at the
    # proxy: a reader that waited for every key would send nothing (the wait times out).
    # Between the loop's turns ("turns") the hashing blocks the loop, which has written its
    # requests by then (on connections kept from the read before); a thread blocks alone.
    keys = plain_keys()
    held: list[frozenset[str]] = []
    # (The proxy stops first, letting what it holds go: a failing read ends.)
    with ThreadPoolExecutor(1) as pool, FaultProxy(cli_endpoint.url) as proxy:

        def hash_range(start: int, count: int) -> list[Any]:
            if start + count == len(keys):
                held.extend(proxy.wait_held(SLOTS, timeout=30))
                proxy.release()
            return list(keys[start:start + count])

        reader = BatchReader(TABLE, LAYOUT, settings(proxy.url))
        clean = reader.read(keys, FEATURES)  # and SLOTS connections kept for the next read
        proxy.plan = FaultPlan(hold=True)
        ahead = KeysAhead(len(keys), keys[:SLOTS * BATCH], hash_range, chunk=1_000)
        if mode == "thread":
            ahead.start()
        reading = pool.submit(reader.read, ahead, FEATURES,
                              positions=pa.array(range(len(keys)), pa.int32()))
        result = reading.result(timeout=60)
    first = {json.dumps({"entity_id": {"S": key}}, sort_keys=True)
             for key in keys[:SLOTS * BATCH]}
    assert len(held) == SLOTS and frozenset().union(*held) == first  # the first keys only
    assert result.rows == clean.rows
    assert (result.stats.keys, result.stats.unique_keys) == (len(keys), len(keys))
    assert ahead.hashed == keys


def test_unique_keys_ahead_are_the_plain_keys() -> None:
    column = pa.array(IDS + IDS[:500], pa.int64())  # repeated: de-duplicated, then hashed
    plain, positions = unique_keys(LAYOUT, {"driver_id": column})
    keys, ahead_positions = unique_keys(LAYOUT, {"driver_id": column}, ahead=SLOTS * BATCH)
    assert isinstance(keys, KeysAhead)
    with keys:
        assert len(keys) == len(plain) == 3_000
        assert len(keys.hashed) >= SLOTS * BATCH
        assert keys[-1] == plain[-1] and keys[5:9] == plain[5:9]
        assert list(keys) == plain and keys.hashed == plain
    assert ahead_positions.equals(positions)
    # A read that needs no more than its first keys gets a plain list.
    few, _ = unique_keys(LAYOUT, {"driver_id": column[:100]}, ahead=SLOTS * BATCH)
    assert few == plain[:100] and not isinstance(few, KeysAhead)


def test_a_stopped_hashing_is_finished_by_whoever_needs_the_keys() -> None:
    keys = plain_keys()
    asked: list[int] = []

    def hash_range(start: int, count: int) -> list[Any]:
        asked.append(start)
        return list(keys[start:start + count])

    ahead = KeysAhead(len(keys), keys[:10], hash_range, chunk=1_000)
    ahead.close()  # never started: the caller's thread hashes what it asks for
    assert ahead[2_500] == keys[2_500] and asked == [10, 1_010, 2_010]
    assert list(ahead) == keys


def test_a_bad_key_past_the_first_requests_fails_as_before() -> None:
    values: list[Any] = list(range(5_000))
    values[4_500] = None
    with pytest.raises(EntityKeyError) as plain:
        unique_keys(LAYOUT, {"driver_id": values}, "ids.csv")
    with pytest.raises(EntityKeyError) as ahead:
        unique_keys(LAYOUT, {"driver_id": values}, "ids.csv", ahead=SLOTS * BATCH)
    assert str(ahead.value) == str(plain.value)
    assert "entity row 4501" in str(plain.value)


def test_a_read_that_fails_leaves_no_hashing_behind(cli_endpoint: EndpointProcess) -> None:
    keys = plain_keys()
    errors = 0

    def hash_range(start: int, count: int) -> list[Any]:
        return list(keys[start:start + count])

    ahead = KeysAhead(len(keys), keys[:SLOTS * BATCH], hash_range, chunk=10).start()
    with FaultProxy(cli_endpoint.url, FaultPlan(error_rate=1.0)) as proxy:
        try:
            BatchReader(TABLE, LAYOUT, settings(proxy.url, retry_deadline_s=0.05,
                                                retry_base_delay_s=0.001,
                                                retry_max_delay_s=0.002)).read(
                ahead, FEATURES, positions=pa.array(range(len(keys)), pa.int32()))
        except RetryDeadlineExceeded:
            errors += 1
    assert errors == 1
    assert not any(thread.name == "featurepull-keys-ahead" for thread in threading.enumerate())
