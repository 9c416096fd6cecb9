"""featurepull's online store answers ``online_read`` and ``online_read_async`` exactly as
Feast's DynamoDB store does, on tables Feast wrote: every Value kind, compound keys, unknown
keys, projections; and, where Feast's fails, duplicate keys in one call."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import boto3
import botocore.exceptions
import pytest
from feast.infra.online_stores.dynamodb import DynamoDBOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from featurepull.dynamo import ReadError
from featurepull.feast_store import FeaturepullOnlineStore
from tests.conftest import REGION
from tests.feast_store.conftest import (
    COMPOUND_ROWS,
    EVERY_TYPE_FEATURES,
    EVERY_TYPE_ROWS,
    FeastTables,
    compound_key,
    every_type_row,
    int64_key,
)


def test_the_samples_cover_every_kind_of_feast_value() -> None:
    kinds = [field.name for field in Value.DESCRIPTOR.oneofs_by_name["val"].fields]
    assert sorted(EVERY_TYPE_FEATURES) == sorted(kinds)


def _mixed_keys(present: int, unknown: int, seed: int) -> list[Any]:
    rows = [*range(present), *range(10**6, 10**6 + unknown)]
    random.Random(seed).shuffle(rows)
    return [int64_key(row) for row in rows]


@pytest.mark.parametrize(("count", "transport"), [(60, "fast"), (230, "fast"),
                                                  (230, "botocore")])
def test_every_value_kind_reads_as_feast_reads_it(
        feast_tables: FeastTables, feast_store: DynamoDBOnlineStore,
        plugin: FeaturepullOnlineStore, transport: str, count: int) -> None:
    # Feast reads one request through boto3's resource API and more through its client
    # API: both of its paths are compared. A fifth of the keys are unknown.
    keys = _mixed_keys(EVERY_TYPE_ROWS, count // 5, seed=count)[:count]
    view = feast_tables.every_type
    expected = feast_store.online_read(feast_tables.config("feast"), view, keys,
                                       EVERY_TYPE_FEATURES)
    got = plugin.online_read(feast_tables.config("featurepull", transport=transport), view,
                             keys, EVERY_TYPE_FEATURES)
    assert got == expected
    known = [key.entity_values[0].int64_val < EVERY_TYPE_ROWS for key in keys]
    assert [row[0] is not None for row in got] == known
    assert 0 < sum(known) < count
    for key, (_, values) in zip(keys, got, strict=True):
        row = key.entity_values[0].int64_val
        if row < EVERY_TYPE_ROWS:  # Feast's own messages, equal to what was written
            assert values == every_type_row(row)
            assert all(type(value) is Value for value in values.values())


def test_a_projection_returns_only_the_requested_features(
        feast_tables: FeastTables, feast_store: DynamoDBOnlineStore,
        plugin: FeaturepullOnlineStore) -> None:
    rows = [3, 4, 10, 17, 10**7]  # 3, 10 and 17 lack half their features; 10**7 is unknown
    keys = [int64_key(row) for row in rows]
    view, wanted = feast_tables.every_type, ["map_val", "json_val", "double_val"]
    expected = feast_store.online_read(feast_tables.config("feast"), view, keys, wanted)
    got = plugin.online_read(feast_tables.config("featurepull"), view, keys, wanted)
    assert got == expected
    assert [sorted(values) if values else None for _, values in got] == [
        *(sorted(set(wanted) & set(every_type_row(row))) for row in rows[:-1]), None]
    assert len(got[0][1]) < len(got[1][1]) == len(wanted)


def test_without_requested_features_every_feature_of_the_view(
        feast_tables: FeastTables, feast_store: DynamoDBOnlineStore,
        plugin: FeaturepullOnlineStore) -> None:
    keys = [int64_key(row) for row in range(0, EVERY_TYPE_ROWS, 13)]
    view = feast_tables.every_type
    expected = feast_store.online_read(feast_tables.config("feast"), view, keys)
    assert plugin.online_read(feast_tables.config("featurepull"), view, keys) == expected


def test_compound_keys_of_every_kind_hash_as_feast_hashes_them(
        feast_tables: FeastTables, feast_store: DynamoDBOnlineStore,
        plugin: FeaturepullOnlineStore) -> None:
    keys = [compound_key(row) for row in range(COMPOUND_ROWS + 20)]
    random.Random(5).shuffle(keys)
    view = feast_tables.compound
    expected = feast_store.online_read(feast_tables.config("feast"), view, keys,
                                       ["label", "score"])
    got = plugin.online_read(feast_tables.config("featurepull"), view, keys,
                             ["label", "score"])
    assert got == expected
    assert sum(row[0] is not None for row in got) == COMPOUND_ROWS


def test_unknown_keys_and_no_keys(feast_tables: FeastTables,
                                  feast_store: DynamoDBOnlineStore,
                                  plugin: FeaturepullOnlineStore) -> None:
    view, config = feast_tables.every_type, feast_tables.config("featurepull")
    keys = [int64_key(row) for row in (10**8, 10**8 + 1)]
    assert plugin.online_read(config, view, keys, ["int64_val"]) == [(None, None)] * 2
    assert feast_store.online_read(feast_tables.config("feast"), view, keys,
                                   ["int64_val"]) == [(None, None)] * 2
    assert plugin.online_read(config, view, [], ["int64_val"]) == []


def test_duplicate_keys_in_one_call(feast_tables: FeastTables,
                                    feast_store: DynamoDBOnlineStore,
                                    plugin: FeaturepullOnlineStore) -> None:
    rows = [5, 9, 5, 10**6, 5, 9, 10**6, 250, *range(100, 200)]
    keys = [int64_key(row) for row in rows]
    view, wanted = feast_tables.every_type, ["string_val", "list_val"]
    # Feast sends the duplicates to DynamoDB, which refuses the whole request.
    with pytest.raises(botocore.exceptions.ClientError, match="duplicates"):
        feast_store.online_read(feast_tables.config("feast"), view, keys, wanted)
    got = plugin.online_read(feast_tables.config("featurepull"), view, keys, wanted)
    one_each = {row: feast_store.online_read(feast_tables.config("feast"), view,
                                             [int64_key(row)], wanted)[0]
                for row in set(rows)}
    assert got == [one_each[row] for row in rows]
    assert got[0][1] is not got[2][1]  # each row its own dict, as Feast gives


def test_online_read_async_answers_as_feasts(feast_tables: FeastTables,
                                             feast_store: DynamoDBOnlineStore,
                                             plugin: FeaturepullOnlineStore) -> None:
    keys = _mixed_keys(EVERY_TYPE_ROWS, 40, seed=3)[:150]
    view = feast_tables.every_type

    async def both() -> tuple[Any, Any]:
        try:
            expected = await feast_store.online_read_async(
                feast_tables.config("feast"), view, keys, EVERY_TYPE_FEATURES)
        finally:
            await feast_store.close()
        got = await plugin.online_read_async(feast_tables.config("featurepull"), view, keys,
                                             EVERY_TYPE_FEATURES)
        return expected, got

    expected, got = asyncio.run(both())
    assert got == expected
    known = [key.entity_values[0].int64_val < EVERY_TYPE_ROWS for key in keys]
    assert [row[0] is not None for row in got] == known
    assert 0 < sum(known) < len(keys)


def test_an_item_that_is_not_a_feast_value_is_named(feast_tables: FeastTables,
                                                     plugin: FeaturepullOnlineStore) -> None:
    config = feast_tables.config("featurepull")
    view = feast_tables.every_type
    row = EVERY_TYPE_ROWS + 5
    [entity_id] = plugin._to_entity_ids(config, [int64_key(row)])
    ddb = boto3.client("dynamodb", endpoint_url=feast_tables.endpoint_url, region_name=REGION)
    table = f"{feast_tables.project}.{view.name}"
    ddb.put_item(TableName=table, Item={
        "entity_id": {"S": entity_id}, "event_ts": {"S": "2026-03-01 00:00:00+00:00"},
        "values": {"M": {"int64_val": {"B": b"\xff\xff\xff"}}}})
    try:
        with pytest.raises(ReadError, match=f"{entity_id}.*not a serialized Feast Value"):
            plugin.online_read(config, view, [int64_key(1), int64_key(row)], ["int64_val"])
    finally:
        ddb.delete_item(TableName=table, Key={"entity_id": {"S": entity_id}})


@pytest.mark.parametrize(("keys", "message"), [
    ([EntityKey(join_keys=["driver_id"], entity_values=[Value(double_val=1.5)])],
     r"join keys driver_id \(double_val\) cannot be hashed as Feast hashes keys"),
    ([int64_key(1), EntityKey(join_keys=["driver_id"], entity_values=[Value(string_val="1")])],
     r"entity key 2 has join keys \['driver_id'\] of kinds \['string_val'\]"),
])
def test_keys_feast_could_not_have_written_are_refused_by_name(
        feast_tables: FeastTables, plugin: FeaturepullOnlineStore, keys: list[Any],
        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plugin.online_read(feast_tables.config("featurepull"), feast_tables.every_type, keys,
                           ["int64_val"])
