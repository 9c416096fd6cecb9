"""Bad read budgets, through the command line: exit 2 naming the setting and what is
allowed, before anything is read or written. The endpoint counts every BatchGetItem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint

TABLE = "demo.driver_stats"


@pytest.fixture(scope="module")
def on_demand() -> Iterator[EndpointProcess]:
    """An on-demand table with no maximum read throughput."""
    with start_endpoint(drivers=1_000, table=TABLE) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def on_demand_with_maximum() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=1_000, table=TABLE, on_demand_max_rcu=4_000) as endpoint:
        yield endpoint


def _pull(endpoint: EndpointProcess, tmp_path: Path, *extra: str,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    entities = tmp_path / "drivers.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(range(500), pa.int64())}), entities)
    return subprocess.run(
        [sys.executable, "-m", "featurepull", "pull", "--project", "demo", "--table",
         "driver_stats", "--features", ",".join(FEATURES), "--entities", str(entities),
         "--output", str(tmp_path / "out.parquet"), "--endpoint-url", endpoint.url,
         "--region", "us-east-1", "--json", *extra],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value", ["0", "-5", "150%", "abc", "0%"])
def test_a_bad_budget_is_refused_before_anything_is_read(
        on_demand: EndpointProcess, tmp_path: Path, value: str) -> None:
    before = on_demand.stats()["batch_get_item"]
    done = _pull(on_demand, tmp_path, f"--max-rcu-per-s={value}")
    assert done.returncode == 2, done.stderr
    assert "dynamodb.max_rcu_per_s" in done.stderr and "FEATUREPULL_DYNAMODB__MAX_RCU_PER_S" in done.stderr
    assert "a number of RCU per second above 0" in done.stderr
    assert "at most 100 of the table's read capacity" in done.stderr
    assert on_demand.stats()["batch_get_item"] == before
    assert not (tmp_path / "out.parquet").exists()


def test_a_bad_budget_in_the_environment_is_refused_too(on_demand: EndpointProcess,
                                                        tmp_path: Path) -> None:
    done = _pull(on_demand, tmp_path, env={"FEATUREPULL_DYNAMODB__MAX_RCU_PER_S": "abc"})
    assert done.returncode == 2
    assert "dynamodb.max_rcu_per_s" in done.stderr and "'abc'" in done.stderr


def test_a_percentage_of_an_on_demand_table_without_a_maximum_asks_for_a_number(
        on_demand: EndpointProcess, tmp_path: Path) -> None:
    before = on_demand.stats()["batch_get_item"]
    done = _pull(on_demand, tmp_path, "--max-rcu-per-s", "50%")
    assert done.returncode == 2, done.stderr
    assert (f"dynamodb.max_rcu_per_s=50%: table {TABLE} is on-demand with no maximum read "
            "throughput") in done.stderr
    assert "give a number of RCU per second instead" in done.stderr
    assert on_demand.stats()["batch_get_item"] == before
    assert not (tmp_path / "out.parquet").exists()
    # A number works on the same table.
    done = _pull(on_demand, tmp_path, "--max-rcu-per-s", "1500")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["budget_rcu_per_s"] == 1500


def test_a_percentage_of_an_on_demand_maximum(on_demand_with_maximum: EndpointProcess,
                                              tmp_path: Path) -> None:
    done = _pull(on_demand_with_maximum, tmp_path, "--max-rcu-per-s", "25%")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["budget_rcu_per_s"] == 1000 and summary["rows_written"] == 500
