"""`featurepull pull` as a user runs it: a real process against a real HTTP DynamoDB.
Bad input gets a clear message, a non-zero exit code, and no output file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import REGION, unique_name
from tests.faultproxy import FaultPlan, FaultProxy
from tests.feast_writer import (
    create_feast_table,
    expected_event_ts,
    expected_python,
    write_feast_rows,
)

FEATURES = "score,tier"
WRITTEN_AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def stored(driver: int) -> dict[str, tuple[str, object]]:
    return {"score": ("double_val", driver / 4), "tier": ("string_val", f"t{driver % 3}")}


@pytest.fixture(scope="module")
def project(ddb: Any) -> str:
    """A Feast project with one feature view (40 drivers) and one plain table."""
    name = unique_name("cli")
    create_feast_table(ddb, f"{name}.drivers")
    write_feast_rows(ddb, f"{name}.drivers",
                     [({"driver_id": ("int64", d)}, WRITTEN_AT, stored(d)) for d in range(40)])
    ddb.create_table(TableName=f"{name}.users", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "user", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "user", "AttributeType": "S"}])
    return name


def run_pull(endpoint: str, *args: str, check_exit: int | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "featurepull", "pull", "--endpoint-url", endpoint,
           "--region", REGION, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    if check_exit is not None:
        assert proc.returncode == check_exit, proc.stderr
    return proc


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in {"entities.csv",
                                                                     "entities.jsonl"})


def test_pull_writes_rows_in_input_order(endpoint_url: str, project: str, tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    ids = [7, 3, 500, 7, 0, 39]
    entities.write_text("driver_id\n" + "\n".join(map(str, ids)) + "\n")
    out = tmp_path / "features.parquet"
    proc = run_pull(endpoint_url, "--project", project, "--table", "drivers", "--features",
                    FEATURES, "--entities", str(entities), "--output", str(out), "--json",
                    check_exit=0)
    summary = json.loads(proc.stdout)
    assert summary["rows_written"] == 6 and summary["found"] == 5 and summary["missing"] == 1
    table = pq.read_table(out).to_pylist()
    assert [row["driver_id"] for row in table] == ids
    for driver, row in zip(ids, table, strict=True):
        if driver >= 40:
            assert row == {"driver_id": driver, "event_timestamp": None, "score": None,
                           "tier": None}
        else:
            assert row["score"] == expected_python(*stored(driver)["score"])
            assert row["tier"] == expected_python(*stored(driver)["tier"])
            # The time written, not a transform of the value read back.
            assert row["event_timestamp"] == expected_event_ts(WRITTEN_AT) == WRITTEN_AT


def test_existing_output_is_refused_unless_overwrite(endpoint_url: str, project: str,
                                                     tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n1\n")
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    args = ["--project", project, "--table", "drivers", "--features", FEATURES,
            "--entities", str(entities), "--output", str(out)]
    proc = run_pull(endpoint_url, *args, check_exit=2)
    assert "exists; pass --overwrite" in proc.stderr
    assert out.read_text() == "precious\n"
    run_pull(endpoint_url, *args, "--overwrite", check_exit=0)
    assert out.read_text().startswith("driver_id,event_timestamp,score,tier")


BAD_INPUT = {
    "unknown table": (["--table", "nosuchview"], "driver_id\n1\n",
                      ["nosuchview", "does not exist", REGION, "endpoint http://127.0.0.1"]),
    "feast layout on a table without entity_id": (
        ["--table", "users"], "driver_id\n1\n", ["keyed by user HASH (S)", "--layout plain"]),
    "entity file missing the join-key column": (
        ["--table", "drivers", "--join-keys", "driver_id"], "id\n1\n",
        ["entities.csv", "no column 'driver_id'", "columns are 'id'"]),
    "unsupported key type": (["--table", "drivers"], '{"driver_id": 1.5}\n',
                             ["entities.jsonl", "'driver_id' has type float", "--join-key-types"]),
    "empty entity file": (["--table", "drivers"], "", ["entities.csv", "empty"]),
    "batch size over 100": (["--table", "drivers", "--batch-size", "101"], "driver_id\n1\n",
                            ["dynamodb.batch_size", "101", "less than or equal to 100"]),
    "unknown key type name": (["--table", "drivers", "--join-key-types", "driver_id=float"],
                              "driver_id\n1\n", ["'float'", "int64, int32, string, bytes"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_refused_clearly(endpoint_url: str, project: str, tmp_path: Path,
                                      case: str) -> None:
    args, content, phrases = BAD_INPUT[case]
    suffix = ".jsonl" if content.startswith("{") else ".csv"
    entities = tmp_path / f"entities{suffix}"
    entities.write_text(content)
    out = tmp_path / "out.parquet"
    proc = run_pull(endpoint_url, "--project", project, "--features", FEATURES,
                    "--entities", str(entities), "--output", str(out), *args)
    assert proc.returncode == 2, proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path) == []


def test_key_over_dynamodb_limit_is_refused(endpoint_url: str, project: str,
                                            tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("user\nalice\n" + "u" * 2049 + "\n")
    out = tmp_path / "out.parquet"
    proc = run_pull(endpoint_url, "--layout", "plain", "--table", f"{project}.users",
                    "--features", "plan", "--entities", str(entities), "--output", str(out))
    assert proc.returncode == 2
    assert "entity row 2, column 'user'" in proc.stderr
    assert "2049 bytes; DynamoDB allows at most 2048" in proc.stderr
    assert leftovers(tmp_path) == []


@pytest.fixture
def throttling_proxy(endpoint_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(endpoint_url, FaultPlan(throttle_rate=1.0)) as proxy:
        yield proxy


def test_read_failure_exits_1_and_writes_nothing(throttling_proxy: FaultProxy, project: str,
                                                 tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n1\n2\n3\n")
    out = tmp_path / "out.parquet"
    proc = run_pull(throttling_proxy.url, "--project", project, "--table", "drivers",
                    "--features", FEATURES, "--entities", str(entities), "--output", str(out),
                    "--retry-deadline", "0.5")
    assert proc.returncode == 1
    assert "3 of 3 keys" in proc.stderr and f"{project}.drivers" in proc.stderr
    assert "No rows were written" in proc.stderr
    assert leftovers(tmp_path) == []
