"""A Feast feature repository whose ``feature_store.yaml`` names featurepull's store:
``apply`` creates the tables and ``write_to_online_store`` writes them (both Feast's code,
inherited), and ``get_online_features`` answers exactly as the same repository configured
with Feast's own DynamoDB store."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import uvicorn
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.feature_server import get_app
from feast.repo_config import RepoConfig
from feast.types import Array, Float32, Float64, Int64, String, UnixTimestamp

from featurepull.feast_store import STORE_TYPE, FeaturepullOnlineStore
from tests.conftest import REGION, unique_name

DRIVERS = 400
RIDERS = 30
YAML = """\
project: {project}
provider: local
registry: {registry}
entity_key_serialization_version: 3
online_store:
  type: {store_type}
  region: {region}
  endpoint_url: {endpoint_url}
offline_store:
  type: file
"""
FEATURES = ["drivers:conv_rate", "drivers:city", "drivers:trips", "drivers:ratings",
            "drivers:last_trip", "pairs:score"]


def _objects() -> list[Any]:
    source = FileSource(path="unused.parquet", timestamp_field="event_timestamp")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.STRING)
    drivers = FeatureView(name="drivers", entities=[driver], source=source, ttl=None,
                          schema=[Field(name="driver_id", dtype=Int64),
                                  Field(name="conv_rate", dtype=Float64),
                                  Field(name="city", dtype=String),
                                  Field(name="trips", dtype=Int64),
                                  Field(name="ratings", dtype=Array(Float32)),
                                  Field(name="last_trip", dtype=UnixTimestamp)])
    pairs = FeatureView(name="pairs", entities=[driver, rider], source=source, ttl=None,
                        schema=[Field(name="driver_id", dtype=Int64),
                                Field(name="rider_id", dtype=String),
                                Field(name="score", dtype=Float64)])
    return [driver, rider, drivers, pairs]


def _frames() -> dict[str, pd.DataFrame]:
    base = datetime(2026, 5, 1, tzinfo=UTC)
    ids = list(range(DRIVERS))
    drivers = pd.DataFrame({
        "driver_id": ids,
        "event_timestamp": [base + timedelta(minutes=d) for d in ids],
        "conv_rate": [d / 400 for d in ids],
        "city": [f"city-{d % 9}" for d in ids],
        "trips": [d * 3 for d in ids],
        "ratings": [[1.5, d % 5 + 0.25] for d in ids],
        "last_trip": [base - timedelta(hours=d) for d in ids],
    })
    pairs = pd.DataFrame({
        "driver_id": [d for d in range(0, DRIVERS, 4) for _ in range(RIDERS // 10)],
        "rider_id": [f"rider-{r}" for _ in range(0, DRIVERS, 4) for r in range(RIDERS // 10)],
        "event_timestamp": base,
        "score": [0.5 + i / 1000 for i in range(DRIVERS // 4 * (RIDERS // 10))],
    })
    return {"drivers": drivers, "pairs": pairs}


@pytest.fixture(scope="module")
def repo(endpoint_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A feature repository configured with featurepull's store, applied and written."""
    path = tmp_path_factory.mktemp("feast-repo")
    (path / "feature_store.yaml").write_text(YAML.format(
        project=unique_name("repo"), registry=path / "registry.db", store_type=STORE_TYPE,
        region=REGION, endpoint_url=endpoint_url))
    store = FeatureStore(repo_path=str(path))
    objects = _objects()
    store.apply(objects)
    for view, frame in _frames().items():
        store.write_to_online_store(view, frame)
    yield path
    store.teardown()


def _stores(repo: Path) -> tuple[FeatureStore, FeatureStore]:
    """The repository as written (featurepull's store), and the same repository with the
    one yaml line naming Feast's own store instead."""
    mine = FeatureStore(repo_path=str(repo))
    values = mine.config.model_dump(by_alias=True, exclude_none=True)
    values["online_store"] = {**mine.config.online_store.model_dump(), "type": "dynamodb"}
    for name in ("retry_deadline_s", "transport", "max_rcu_per_s", "adaptive_concurrency",
                 "join_key_name_length"):
        values["online_store"].pop(name)
    feast = FeatureStore(config=RepoConfig(**values), repo_path=str(repo))
    return mine, feast


def _entity_rows() -> list[dict[str, Any]]:
    rows = [{"driver_id": d, "rider_id": f"rider-{d % 7}"} for d in range(0, DRIVERS + 50, 3)]
    # Duplicates and unknown entities, as a scoring service sends them.
    return [*rows, rows[4], rows[4], {"driver_id": 10**9, "rider_id": "nobody"}, rows[0]]


def test_get_online_features_answers_as_with_feasts_store(repo: Path) -> None:
    mine, feast = _stores(repo)
    assert isinstance(mine._get_provider().online_store, FeaturepullOnlineStore)
    assert type(feast._get_provider().online_store).__name__ == "DynamoDBOnlineStore"
    rows = _entity_rows()
    expected = feast.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    got = mine.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    assert got == expected
    assert got["conv_rate"][1] == 3 / 400 and got["city"][-2] is None
    assert sum(score is not None for score in got["score"]) > 10


def test_get_online_features_async_answers_as_with_feasts_store(repo: Path) -> None:
    mine, feast = _stores(repo)
    rows = _entity_rows()[-70:]  # unknown drivers, duplicates, and an unknown entity

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        expected = await feast.get_online_features_async(features=FEATURES, entity_rows=rows)
        got = await mine.get_online_features_async(features=FEATURES, entity_rows=rows)
        await feast._get_provider().online_store.close()
        return expected.to_dict(), got.to_dict()

    expected, got = asyncio.run(both())
    assert got == expected
    known = [row["driver_id"] < DRIVERS for row in rows]
    assert [rate is not None for rate in got["conv_rate"]] == known
    assert 0 < sum(known) < len(rows)


def _served(store: FeatureStore, request: dict[str, Any]) -> Any:
    """POST ``request`` to /get-online-features of Feast's feature server (its FastAPI app,
    served by uvicorn on a free port) for ``store``."""
    server = uvicorn.Server(uvicorn.Config(get_app(store), log_level="warning"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.started, "the feature server did not start"
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/get-online-features"
            post = urllib.request.Request(url, data=json.dumps(request).encode(),
                                          headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(post, timeout=30) as response:
                return json.loads(response.read())
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_the_feature_server_answers_as_with_feasts_store(repo: Path) -> None:
    mine, feast = _stores(repo)
    drivers = [*range(0, DRIVERS + 40, 9), 5, 5, 10**9]
    request = {"features": FEATURES[:5], "entities": {"driver_id": drivers}}
    expected, got = _served(feast, request), _served(mine, request)
    assert got == expected
    statuses = got["results"][1]["statuses"]
    assert statuses.count("PRESENT") == sum(d < DRIVERS for d in drivers)
