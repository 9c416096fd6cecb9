"""featurepull's Feast online store on a view whose join-key name is not ASCII, written by
Feast's own DynamoDBOnlineStore: with ``join_key_name_length: bytes`` (how this Feast
packs it) it reads what Feast reads; unset, it refuses before any request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from feast import Entity, FeatureView, Field, ValueType
from feast.infra.online_stores.dynamodb import DynamoDBOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Bytes, Int64

from featurepull.dynamo.errors import EntityKeyError
from featurepull.feast_store import FeaturepullOnlineStore
from tests.conftest import refused_port
from tests.feast_store.conftest import _SOURCE, FeastTables, write_rows

KEY = "fahrer_größe"


def key(row: int) -> EntityKey:
    return EntityKey(join_keys=[KEY], entity_values=[Value(int64_val=row)])


@pytest.fixture(scope="module")
def view(feast_tables: FeastTables) -> Iterator[FeatureView]:
    entity = Entity(name="fahrer", join_keys=[KEY], value_type=ValueType.INT64)
    view = FeatureView(name="fahrer_stats", entities=[entity], source=_SOURCE,
                       schema=[Field(name=KEY, dtype=Int64), Field(name="score", dtype=Bytes)])
    config = feast_tables.config("feast")
    store = DynamoDBOnlineStore()
    store.update(config, tables_to_delete=[], tables_to_keep=[view], entities_to_delete=[],
                 entities_to_keep=[entity], partial=False)
    write_rows(config, view, 20, key, lambda row: {"score": Value(double_val=row / 4)})
    yield view
    store.teardown(config, [view], [entity])


def test_bytes_reads_what_feast_wrote(feast_tables: FeastTables, view: FeatureView) -> None:
    keys = [key(row) for row in (3, 19, 500, 0)]
    expected = DynamoDBOnlineStore().online_read(feast_tables.config("feast"), view, keys)
    got = FeaturepullOnlineStore().online_read(
        feast_tables.config("featurepull", join_key_name_length="bytes"), view, keys)
    assert got == expected
    assert [row[0] is not None for row in got] == [True, True, False, True]


def test_unset_is_refused_before_any_request(feast_tables: FeastTables,
                                             view: FeatureView) -> None:
    with refused_port() as port, pytest.raises(EntityKeyError, match="join_key_name_length"):
        FeaturepullOnlineStore().online_read(
            feast_tables.config("featurepull", f"http://127.0.0.1:{port}"), view, [key(1)])
