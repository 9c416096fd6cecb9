"""A real Feast repo on the session's moto server: ``feast apply`` (``FeatureStore.apply``)
writes the registry file and creates the tables, ``write_to_online_store`` writes the rows,
and ``get_online_features`` gives the answers featurepull's output is compared with.

- ``driver_hourly_stats`` (join key ``driver_id``, int64; TTL 2 h): every third driver's
  row is 5 hours old, so stale;
- ``customer_profile`` (``customer_id``, string; TTL 1 day): ``tier``, and ``trips`` — a
  name ``driver_hourly_stats`` has too;
- ``driver_customer`` (compound key ``driver_id`` + ``customer_id``; no TTL);
- feature service ``scoring``: ``conv_rate`` and ``tier``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

from featurepull.local import RedisService
from tests.conftest import REGION, unique_name
from tests.tasks.conftest import Fleet, fleet

DRIVERS = 60
CUSTOMERS = 40
ENTITY_ROWS = 300


@dataclass
class FeastRepo:
    """A Feast repo directory, its store, and an entity file with its rows."""

    path: Path
    yaml: Path
    project: str
    store: FeatureStore
    entities: Path
    rows: list[dict[str, Any]]

    def online(self, features: list[str] | str, full_feature_names: bool = False
               ) -> dict[str, list[Any]]:
        """What Feast's get_online_features answers for the entity rows."""
        chosen: Any = (self.store.get_feature_service(features)
                       if isinstance(features, str) else features)
        response = self.store.get_online_features(features=chosen, entity_rows=self.rows,
                                                  full_feature_names=full_feature_names)
        return dict(response.to_dict())


def write_yaml(path: Path, project: str, endpoint_url: str, registry: str) -> Path:
    """A feature_store.yaml naming Feast's DynamoDB online store at ``endpoint_url``."""
    path.mkdir(parents=True, exist_ok=True)
    yaml = path / "feature_store.yaml"
    yaml.write_text(f"project: {project}\nregistry: {registry}\nprovider: local\n"
                    f"online_store:\n  type: dynamodb\n  region: {REGION}\n"
                    f"  endpoint_url: {endpoint_url}\n"
                    "entity_key_serialization_version: 3\n")
    return yaml


def written_view(yaml: Path, key: str, drivers: int) -> Iterator[Path]:
    """The repo of ``yaml`` with one view, ``fahrer_stats`` (``score``: driver / 4), keyed by
    ``key`` and written by Feast for drivers 0..drivers-1; yields ``yaml``, then tears the
    repo's tables down."""
    store = FeatureStore(repo_path=str(yaml.parent))
    source = FileSource(path=str(yaml.parent / "unused.parquet"),
                        timestamp_field="event_timestamp")
    fahrer = Entity(name="fahrer", join_keys=[key], value_type=ValueType.INT64)
    view = FeatureView(name="fahrer_stats", entities=[fahrer], ttl=timedelta(0),
                       source=source, schema=[Field(name=key, dtype=Int64),
                                              Field(name="score", dtype=Float64)])
    store.apply([fahrer, view])
    store.write_to_online_store("fahrer_stats", pd.DataFrame({
        key: list(range(drivers)), "score": [d / 4 for d in range(drivers)],
        "event_timestamp": [datetime.now(UTC)] * drivers}))
    yield yaml
    store.teardown()


@contextmanager
def encoding_worker(redis_server: RedisService, endpoint_url: str, version: int,
                    name_length: str) -> Iterator[Fleet]:
    """A fleet of one worker whose own key encoding is ``version`` and ``name_length``."""
    with fleet(redis_server, endpoint_url) as running:
        running.env["FEATUREPULL_JOIN_KEY_NAME_LENGTH"] = name_length
        running.env["FEATUREPULL_ENTITY_KEY_SERIALIZATION_VERSION"] = str(version)
        running.start_worker(concurrency=1)
        yield running


def _objects(path: Path) -> list[Any]:
    source = FileSource(path=str(path / "unused.parquet"), timestamp_field="event_timestamp")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    stats = FeatureView(name="driver_hourly_stats", entities=[driver], ttl=timedelta(hours=2),
                        source=source,
                        schema=[Field(name="driver_id", dtype=Int64),
                                Field(name="conv_rate", dtype=Float64),
                                Field(name="trips", dtype=Int64)])
    profile = FeatureView(name="customer_profile", entities=[customer], ttl=timedelta(days=1),
                          source=source,
                          schema=[Field(name="customer_id", dtype=String),
                                  Field(name="tier", dtype=String),
                                  Field(name="trips", dtype=Int64)])
    pair = FeatureView(name="driver_customer", entities=[driver, customer], source=source,
                       schema=[Field(name="driver_id", dtype=Int64),
                               Field(name="customer_id", dtype=String),
                               Field(name="rides", dtype=Int64)])
    service = FeatureService(name="scoring", features=[stats[["conv_rate"]], profile[["tier"]]])
    return [driver, customer, stats, profile, pair, service]


def _write(store: FeatureStore) -> None:
    now = datetime.now(UTC)
    store.write_to_online_store("driver_hourly_stats", pd.DataFrame({
        "driver_id": list(range(DRIVERS)),
        "conv_rate": [i / 7 for i in range(DRIVERS)],
        "trips": [i * 3 for i in range(DRIVERS)],
        "event_timestamp": [now - timedelta(hours=5 if i % 3 == 0 else 0, minutes=10 + i)
                            for i in range(DRIVERS)]}))
    store.write_to_online_store("customer_profile", pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(CUSTOMERS)],
        "tier": [("gold", "silver", "bronze")[i % 3] for i in range(CUSTOMERS)],
        "trips": [1000 + i for i in range(CUSTOMERS)],
        "event_timestamp": [now - timedelta(minutes=i) for i in range(CUSTOMERS)]}))
    store.write_to_online_store("driver_customer", pd.DataFrame({
        "driver_id": list(range(DRIVERS)),
        "customer_id": [f"c{i % CUSTOMERS}" for i in range(DRIVERS)],
        "rides": [i % 5 for i in range(DRIVERS)],
        "event_timestamp": [now - timedelta(days=i) for i in range(DRIVERS)]}))


def entity_rows(seed: int = 5) -> list[dict[str, Any]]:
    """Known and unknown drivers and customers (a fifth unknown), repeated, shuffled; half
    the rows pair a driver with the customer it has rides with."""
    rng = random.Random(seed)
    rows = []
    for _ in range(ENTITY_ROWS // 2):
        driver = rng.randrange(DRIVERS + DRIVERS // 5)
        customer = rng.randrange(CUSTOMERS + CUSTOMERS // 5)
        rows.append({"driver_id": driver, "customer_id": f"c{customer}"})
        rows.append({"driver_id": driver, "customer_id": f"c{driver % CUSTOMERS}"})
    rows += rng.choices(rows, k=ENTITY_ROWS - len(rows))
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="session")
def feast_repo(endpoint_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[FeastRepo]:
    path = tmp_path_factory.mktemp("feast-repo")
    project = unique_name("repo")
    yaml = write_yaml(path, project, endpoint_url, "data/registry.db")
    store = FeatureStore(repo_path=str(path))
    store.apply(_objects(path))
    _write(store)
    rows = entity_rows()
    entities = path / "entities.parquet"
    pq.write_table(pa.table({"customer_id": pa.array([r["customer_id"] for r in rows]),
                             "driver_id": pa.array([r["driver_id"] for r in rows],
                                                   pa.int64())}), entities)
    yield FeastRepo(path, yaml, project, store, entities, rows)
    store.teardown()
