"""Tables written by Feast itself (its DynamoDBOnlineStore's ``update`` and
``online_write_batch``) on the session's moto server, and the RepoConfigs that read them
through Feast's store or through featurepull's.

- ``every_type``: one int64 join key, one feature per field of Feast's ``Value`` oneof
  (named after the field), some rows missing some features;
- ``compound``: five join keys, one of each kind Feast can hash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.online_stores.dynamodb import DynamoDBOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.repo_config import RepoConfig
from feast.types import Bytes, Int64

from featurepull.feast_store import STORE_TYPE, FeaturepullOnlineStore
from tests.conftest import REGION, unique_name

StoreKind = Literal["feast", "featurepull"]
EVERY_TYPE_ROWS = 300  # three full BatchGetItem requests and a part
COMPOUND_ROWS = 150
BASE_TS = datetime(2026, 3, 1, tzinfo=UTC)
_SOURCE = FileSource(path="unused.parquet", timestamp_field="event_timestamp")


def value_samples(row: int) -> dict[str, Value]:
    """One Value of every kind Feast 0.67 has, varying with ``row``."""
    m = {"k": Value(int64_val=row), "s": Value(string_val=f"s{row}")}
    return {
        "bytes_val": Value(bytes_val=bytes([row % 256, 0, 255])),
        "string_val": Value(string_val=f"Montréal-{row}"),
        "int32_val": Value(int32_val=-row),
        "int64_val": Value(int64_val=row * 2**33),
        "double_val": Value(double_val=row / 7),
        "float_val": Value(float_val=row / 4),
        "bool_val": Value(bool_val=row % 2 == 0),
        "unix_timestamp_val": Value(unix_timestamp_val=1_700_000_000 + row),
        "bytes_list_val": Value(bytes_list_val={"val": [b"a", bytes([row % 256])]}),
        "string_list_val": Value(string_list_val={"val": ["x", str(row)]}),
        "int32_list_val": Value(int32_list_val={"val": [row, -1]}),
        "int64_list_val": Value(int64_list_val={"val": [row, 2**40]}),
        "double_list_val": Value(double_list_val={"val": [0.5, row / 3]}),
        "float_list_val": Value(float_list_val={"val": [1.5, row / 8]}),
        "bool_list_val": Value(bool_list_val={"val": [True, row % 3 == 0]}),
        "unix_timestamp_list_val": Value(unix_timestamp_list_val={"val": [row, 1_800_000_000]}),
        "null_val": Value(null_val=0),
        "map_val": Value(map_val={"val": m}),
        "map_list_val": Value(map_list_val={"val": [{"val": m}, {"val": {}}]}),
        "bytes_set_val": Value(bytes_set_val={"val": [b"q", b"r"]}),
        "string_set_val": Value(string_set_val={"val": ["a", f"b{row}"]}),
        "int32_set_val": Value(int32_set_val={"val": [row, 3]}),
        "int64_set_val": Value(int64_set_val={"val": [row, 4]}),
        "double_set_val": Value(double_set_val={"val": [row / 9]}),
        "float_set_val": Value(float_set_val={"val": [row / 16]}),
        "bool_set_val": Value(bool_set_val={"val": [False]}),
        "unix_timestamp_set_val": Value(unix_timestamp_set_val={"val": [row]}),
        "json_val": Value(json_val=f'{{"row": {row}}}'),
        "json_list_val": Value(json_list_val={"val": ["{}", f"[{row}]"]}),
        "struct_val": Value(struct_val={"val": m}),
        "struct_list_val": Value(struct_list_val={"val": [{"val": m}]}),
        "uuid_val": Value(uuid_val=f"00000000-0000-4000-8000-{row:012d}"),
        "time_uuid_val": Value(time_uuid_val=f"00000000-0000-1000-8000-{row:012d}"),
        "uuid_list_val": Value(uuid_list_val={"val": ["u1", "u2"]}),
        "time_uuid_list_val": Value(time_uuid_list_val={"val": ["t1"]}),
        "uuid_set_val": Value(uuid_set_val={"val": ["u3"]}),
        "time_uuid_set_val": Value(time_uuid_set_val={"val": ["t2"]}),
        "list_val": Value(list_val={"val": [Value(int64_val=row), Value(string_val="z")]}),
        "set_val": Value(set_val={"val": [Value(double_val=0.25)]}),
        "decimal_val": Value(decimal_val=f"{row}.125"),
        "decimal_list_val": Value(decimal_list_val={"val": ["1.5", f"{row}"]}),
        "decimal_set_val": Value(decimal_set_val={"val": ["2.5"]}),
        "scalar_map_val": Value(scalar_map_val={"val": [
            {"key": {"int64_key": row}, "value": Value(string_val="v")}]}),
        "zoned_timestamp_val": Value(zoned_timestamp_val={
            "unix_timestamp": 1_700_000_000 + row, "zone": "Europe/Lisbon"}),
    }


EVERY_TYPE_FEATURES = list(value_samples(0))


def every_type_row(row: int) -> dict[str, Value]:
    """The stored features of row ``row``: every kind, but every 7th row lacks half of
    them (Feast writes only the features a row has)."""
    values = value_samples(row)
    if row % 7 == 3:
        values = {name: v for i, (name, v) in enumerate(values.items()) if i % 2}
    return values


def int64_key(row: int) -> EntityKey:
    return EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=row)])


def compound_key(row: int) -> EntityKey:
    """Five join keys of the five kinds, deliberately not in name order (Feast sorts)."""
    return EntityKey(
        join_keys=["zone", "account", "device", "day", "shard"],
        entity_values=[Value(string_val=f"zone-{row % 5}-é"), Value(int64_val=row * 10**10),
                       Value(bytes_val=bytes([row % 256, 7])),
                       Value(unix_timestamp_val=1_700_000_000 + row * 86_400),
                       Value(int32_val=-row)])


@dataclass
class FeastTables:
    """The project the tables live in, its views, and how to configure a store on them."""

    project: str
    endpoint_url: str
    registry: str
    every_type: FeatureView
    compound: FeatureView

    def config(self, kind: StoreKind, endpoint_url: str | None = None,
               **online: Any) -> RepoConfig:
        """A RepoConfig whose online store is Feast's DynamoDB store or featurepull's."""
        store = {"type": "dynamodb" if kind == "feast" else STORE_TYPE, "region": REGION,
                 "endpoint_url": endpoint_url or self.endpoint_url, **online}
        return RepoConfig(project=self.project, provider="local", registry=self.registry,
                          online_store=store, entity_key_serialization_version=3)


def _views() -> tuple[list[Entity], FeatureView, FeatureView]:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    every_type = FeatureView(
        name="every_type", entities=[driver], source=_SOURCE,
        # online_read never looks at dtypes: Bytes stands in for each feature's real type.
        schema=[Field(name="driver_id", dtype=Int64),
                *(Field(name=name, dtype=Bytes) for name in EVERY_TYPE_FEATURES)])
    kinds = {"zone": ValueType.STRING, "account": ValueType.INT64, "device": ValueType.BYTES,
             "day": ValueType.UNIX_TIMESTAMP, "shard": ValueType.INT32}
    entities = [Entity(name=name, join_keys=[name], value_type=kind)
                for name, kind in kinds.items()]
    compound = FeatureView(name="compound", entities=entities, source=_SOURCE,
                           schema=[Field(name="score", dtype=Bytes),
                                   Field(name="label", dtype=Bytes)])
    return [driver, *entities], every_type, compound


def write_rows(config: RepoConfig, view: FeatureView, rows: int,
               key: Callable[[int], EntityKey],
               features: Callable[[int], dict[str, Value]]) -> None:
    """Rows ``0..rows-1`` written by Feast's own DynamoDBOnlineStore."""
    data = [(key(row), features(row), BASE_TS + timedelta(seconds=row, microseconds=row),
             None) for row in range(rows)]
    DynamoDBOnlineStore().online_write_batch(config, view, data, None)


@pytest.fixture(scope="session")
def feast_tables(endpoint_url: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[FeastTables]:
    entities, every_type, compound = _views()
    registry = str(tmp_path_factory.mktemp("feast-registry") / "registry.db")
    tables = FeastTables(unique_name("feast"), endpoint_url, registry, every_type, compound)
    config = tables.config("feast")
    store = DynamoDBOnlineStore()
    store.update(config, tables_to_delete=[], tables_to_keep=[every_type, compound],
                 entities_to_delete=[], entities_to_keep=entities, partial=False)
    write_rows(config, every_type, EVERY_TYPE_ROWS, int64_key, every_type_row)
    write_rows(config, compound, COMPOUND_ROWS, compound_key,
               lambda row: {"score": Value(double_val=row / 3),
                            "label": Value(string_val=f"label-{row}")})
    yield tables
    store.teardown(config, [every_type, compound], entities)


@pytest.fixture
def feast_store() -> DynamoDBOnlineStore:
    return DynamoDBOnlineStore()


@pytest.fixture
def plugin() -> FeaturepullOnlineStore:
    return FeaturepullOnlineStore()
