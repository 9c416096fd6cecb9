"""A job's entity keys are encoded as its submitter chose, whatever the worker's own settings
say: a worker whose ``join_key_name_length`` and ``entity_key_serialization_version`` differ
from the submitter's would hash other ids and read every row as missing, with exit 0.

A Feast repo (``FeatureStore.apply`` and ``write_to_online_store``, Feast 0.67: name lengths
in UTF-8 bytes) with one view keyed by the non-ASCII join key ``fahrer_größe``; the submitter
says ``bytes`` (and version 3, as the yaml does), the worker ``chars`` and version 2. A job of
feature references (``view:feature``) and a one-table job of the same table each find every
row Feast wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from featurepull.cli import main
from featurepull.local import RedisService
from tests.conftest import unique_name
from tests.feast_registry.conftest import encoding_worker, write_yaml, written_view
from tests.tasks.conftest import Fleet

pytestmark = pytest.mark.slow  # starts a worker

KEY = "fahrer_größe"
DRIVERS = 12  # written: drivers 0..11; the entity file also asks for 12..14


@pytest.fixture(scope="module")
def repo(endpoint_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The repo's feature_store.yaml (Feast's own DynamoDB online store, version 3)."""
    path = tmp_path_factory.mktemp("fahrer-repo")
    yield from written_view(write_yaml(path, unique_name("fahrer"), endpoint_url,
                                       "data/registry.db"), KEY, DRIVERS)


@pytest.fixture(scope="module")
def worker(redis_server: RedisService, endpoint_url: str) -> Iterator[Fleet]:
    """One worker whose key encoding is not the submitter's."""
    with encoding_worker(redis_server, endpoint_url, 2, "chars") as running:
        yield running


def submit(worker: Fleet, tmp_path: Path, *args: str) -> tuple[dict[str, Any], Path]:
    entities = tmp_path / "entities.csv"
    entities.write_text(f"{KEY}\n" + "\n".join(map(str, range(DRIVERS + 3))) + "\n",
                        encoding="utf8")
    out = tmp_path / "out.parquet"
    env = {k: v for k, v in worker.env.items() if k.startswith("FEATUREPULL_")}
    env["FEATUREPULL_JOIN_KEY_NAME_LENGTH"] = "bytes"
    env["FEATUREPULL_ENTITY_KEY_SERIALIZATION_VERSION"] = "3"
    result = CliRunner(env=env).invoke(main, [
        "submit", "--entities", str(entities), "--output", str(out), "--wait",
        "--timeout", "60", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.splitlines()[-1]), out


def expected_scores() -> list[float | None]:
    return [d / 4 for d in range(DRIVERS)] + [None] * 3


def test_a_feature_reference_job_reads_with_the_submitters_encoding(
        repo: Path, worker: Fleet, tmp_path: Path) -> None:
    summary, out = submit(worker, tmp_path, "--feature-store-yaml", str(repo),
                          "--features", "fahrer_stats:score")
    assert summary["read"] == {**summary["read"], "found": DRIVERS, "missing": 3}, summary
    assert pq.read_table(out).column("score").to_pylist() == expected_scores()


def test_a_one_table_job_reads_with_the_submitters_encoding(
        repo: Path, worker: Fleet, tmp_path: Path) -> None:
    summary, out = submit(worker, tmp_path, "--feature-store-yaml", str(repo),
                          "--table", "fahrer_stats", "--features", "score")
    assert summary["read"] == {**summary["read"], "found": DRIVERS, "missing": 3}, summary
    assert pq.read_table(out).column("score").to_pylist() == expected_scores()
