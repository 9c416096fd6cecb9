"""Every `featurepull pull` flag, end to end: a real `featurepull pull` process against a real
HTTP endpoint, each flag observed where it acts — on the wire (requests, ConsistentRead,
requests in flight, the SigV4 region, which server answered) or in the output."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import (
    EndpointProcess,
    SyntheticTable,
    expected_features,
    start_endpoint,
)
from featurepull.dynamo import decode_value
from featurepull.dynamo.layouts import parse_event_ts
from tests.conftest import REGION

PROJECT = "fp"
TABLE = f"{PROJECT}.drivers"
DRIVERS = 2_000
KNOWN = list(range(0, 800, 2))  # 400 known drivers
UNKNOWN = [DRIVERS + i for i in range(50)]
IDS = [*KNOWN, *UNKNOWN, *KNOWN[:30]]  # 450 unique keys, 30 repeats
UNIQUE = len(set(IDS))
SOME = "conv_rate,city"


@pytest.fixture(scope="module")
def lean() -> Iterator[EndpointProcess]:
    """The project's feature view behind the lean endpoint; 20 ms per request, so requests
    in flight can be counted."""
    with start_endpoint(drivers=DRIVERS, latency_ms=20, table=TABLE) as endpoint:
        yield endpoint


@pytest.fixture
def wire(lean: EndpointProcess) -> EndpointProcess:
    lean.reset_stats()
    return lean


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flags") / "drivers.csv"
    path.write_text("driver_id\n" + "\n".join(map(str, IDS)) + "\n")
    return path


def pull(*args: str, env: dict[str, str] | None = None,
         expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "featurepull", "pull", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == expect, proc.stderr
    return proc


def pull_lean(endpoint: EndpointProcess, entities: Path, out: Path, *args: str,
              features: str = SOME, expect: int = 0) -> subprocess.CompletedProcess[str]:
    return pull("--project", PROJECT, "--table", "drivers", "--features", features,
                "--entities", str(entities), "--output", str(out), "--endpoint-url",
                endpoint.url, "--region", REGION, *args, expect=expect)


@functools.cache
def synthetic(seed: int) -> SyntheticTable:
    return SyntheticTable(0, seed)


def expected_row(driver: int, features: list[str], seed: int = 0) -> dict[str, Any]:
    if driver >= DRIVERS:
        return {"driver_id": driver, "event_timestamp": None, **dict.fromkeys(features)}
    stored = expected_features(driver, seed)
    return {"driver_id": driver,
            "event_timestamp": parse_event_ts(synthetic(seed).event_ts(driver)),
            **{name: decode_value(stored[name]) for name in features}}


def assert_rows(out: Path, features: list[str], seed: int = 0) -> None:
    rows = pq.read_table(out).to_pylist()
    assert rows == [expected_row(d, features, seed) for d in IDS]


@pytest.mark.parametrize(("flag", "requests"), [([], math.ceil(UNIQUE / 100)),
                                                (["--batch-size", "7"], math.ceil(UNIQUE / 7))])
def test_batch_size_is_the_keys_per_request(wire: EndpointProcess, entities: Path,
                                            tmp_path: Path, flag: list[str],
                                            requests: int) -> None:
    out = tmp_path / "out.parquet"
    proc = pull_lean(wire, entities, out, *flag, "--json")
    stats = wire.stats()
    assert stats["batch_get_item"] == requests and stats["keys"] == UNIQUE
    summary = json.loads(proc.stdout)
    assert summary["requests"] == requests and summary["rows_written"] == len(IDS)
    assert summary["found"] == len(IDS) - len(UNKNOWN) and summary["missing"] == len(UNKNOWN)
    assert_rows(out, SOME.split(","))


def test_without_json_the_summary_is_three_lines_of_text(wire: EndpointProcess,
                                                         entities: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    proc = pull_lean(wire, entities, out)
    first, second, third = proc.stdout.splitlines()
    assert first == f"featurepull: wrote {len(IDS)} rows to {out}"
    assert f"rows={len(IDS)} " in second and f"requests={math.ceil(UNIQUE / 100)} " in second
    assert third.startswith(f"featurepull: {TABLE}: read_mode=batch-get: ~{UNIQUE / 2:,.0f} "
                            "RCU vs ~"), third
    assert out.read_text().splitlines()[0] == "driver_id,event_timestamp,conv_rate,city"


@pytest.mark.parametrize(("flag", "consistent"), [([], False),
                                                  (["--consistent-reads"], True)])
def test_consistent_reads_reach_the_wire(wire: EndpointProcess, entities: Path, tmp_path: Path,
                                         flag: list[str], consistent: bool) -> None:
    pull_lean(wire, entities, tmp_path / "out.parquet", *flag, "--batch-size", "50")
    stats = wire.stats()
    assert stats["batch_get_item"] == math.ceil(UNIQUE / 50)
    assert stats["consistent_reads"] == (stats["batch_get_item"] if consistent else 0)


@pytest.mark.parametrize("workers", [1, 4])
def test_max_read_workers_is_the_requests_in_flight(wire: EndpointProcess, entities: Path,
                                                    tmp_path: Path, workers: int) -> None:
    pull_lean(wire, entities, tmp_path / "out.parquet", "--max-read-workers", str(workers),
              "--batch-size", "20")
    stats = wire.stats()
    assert stats["batch_get_item"] == math.ceil(UNIQUE / 20)
    assert stats["max_in_flight"] == workers


@pytest.mark.parametrize("region", ["eu-west-3"])
def test_region_is_the_signing_scope(wire: EndpointProcess, entities: Path, tmp_path: Path,
                                     region: str) -> None:
    pull_lean(wire, entities, tmp_path / "out.parquet", "--region", region)
    assert set(wire.stats()["regions"]) == {region}  # DescribeTable and BatchGetItem


def test_endpoint_url_names_the_server_that_answers(lean: EndpointProcess, entities: Path,
                                                    tmp_path: Path) -> None:
    with start_endpoint(drivers=DRIVERS, seed=5, table=TABLE) as other:
        lean.reset_stats()
        out = tmp_path / "other.parquet"
        pull_lean(other, entities, out)
        assert other.stats()["batch_get_item"] == math.ceil(UNIQUE / 100)
        assert lean.stats()["batch_get_item"] == 0
    assert_rows(out, SOME.split(","), seed=5)  # the other server's values, not the first's


def test_project_and_table_name_template_name_the_table(wire: EndpointProcess, entities: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    wrong = pull("--project", "other", "--table", "drivers", "--features", SOME, "--entities",
                 str(entities), "--output", str(out), "--endpoint-url", wire.url, "--region",
                 REGION, expect=2)
    assert "table other.drivers" in wrong.stderr and "does not exist" in wrong.stderr
    pull("--project", "other", "--table-name-template", "fp.{table_name}", "--table",
         "drivers", "--features", SOME, "--entities", str(entities), "--output", str(out),
         "--endpoint-url", wire.url, "--region", REGION)
    assert_rows(out, SOME.split(","))
    templated = pull("--project", "fp", "--table-name-template", "{table_name}_{project}",
                     "--table", "drivers", "--features", SOME, "--entities", str(entities),
                     "--output", str(tmp_path / "no.parquet"), "--endpoint-url", wire.url,
                     "--region", REGION, expect=2)
    assert "table drivers_fp" in templated.stderr


def test_retry_deadline_bounds_the_retrying(entities: Path, tmp_path: Path) -> None:
    with start_endpoint(drivers=DRIVERS, table=TABLE, throttle_rate=1.0) as throttling:
        out = tmp_path / "out.parquet"
        proc = pull_lean(throttling, entities, out, "--retry-deadline", "0.3", expect=1)
        assert "retry_deadline_s=0.3" in proc.stderr
        assert f"{UNIQUE} of {UNIQUE} keys of table {TABLE}" in proc.stderr
        assert throttling.stats()["throttled"] > 0
        assert not out.exists()


def test_join_keys_choose_the_key_columns(wire: EndpointProcess, tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id,batch\n" + "".join(f"{d},{d % 7}\n" for d in IDS))
    # Every column is a join key by default: (driver_id, batch) is not this view's key.
    everything = json.loads(pull_lean(wire, entities, tmp_path / "a.parquet", "--json").stdout)
    assert everything["found"] == 0
    chosen = json.loads(pull_lean(wire, entities, tmp_path / "b.parquet", "--join-keys",
                                  "driver_id", "--json").stdout)
    assert chosen["found"] == len(IDS) - len(UNKNOWN)
    assert pq.read_table(tmp_path / "b.parquet").column_names[:2] == ["driver_id",
                                                                      "event_timestamp"]


def test_join_key_types_override_the_column_type(wire: EndpointProcess, tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"  # leading zeros: a string column in a CSV
    entities.write_text("driver_id\n" + "".join(f"{d:05d}\n" for d in IDS))
    as_strings = json.loads(pull_lean(wire, entities, tmp_path / "a.parquet", "--json").stdout)
    assert as_strings["found"] == 0
    as_int64 = json.loads(pull_lean(wire, entities, tmp_path / "b.parquet", "--join-key-types",
                                    "driver_id=int64", "--json").stdout)
    assert as_int64["found"] == len(IDS) - len(UNKNOWN)
    as_int32 = json.loads(pull_lean(wire, entities, tmp_path / "c.parquet", "--join-key-types",
                                    "driver_id=int32", "--json").stdout)
    assert as_int32["found"] == 0  # Feast hashes an Int32 entity differently


def test_scorer_and_with_features(wire: EndpointProcess, entities: Path, tmp_path: Path) -> None:
    env = {"FEATUREPULL_SCORERS": json.dumps(
        [{"name": "linear", "path": "tests.tasks.scorers_for_tests:linear"}])}
    scored, kept = tmp_path / "scored.parquet", tmp_path / "kept.parquet"
    base = ["--project", PROJECT, "--table", "drivers", "--features", "conv_rate,acc_rate",
            "--entities", str(entities), "--endpoint-url", wire.url, "--region", REGION,
            "--scorer", "linear"]
    pull(*base, "--output", str(scored), env=env)
    pull(*base, "--output", str(kept), "--with-features", env=env)
    features = ["conv_rate", "acc_rate"]
    want = []
    for driver in IDS:
        row = expected_row(driver, features)
        found = row["conv_rate"] is not None
        want.append({**row, "score": row["conv_rate"] * 3.0 + row["acc_rate"] if found else None,
                     "seen": found})
    assert pq.read_table(scored).to_pylist() == [
        {"driver_id": r["driver_id"], "score": r["score"], "seen": r["seen"]} for r in want]
    assert pq.read_table(kept).to_pylist() == want
    refused = pull(*base[:-2], "--output", str(tmp_path / "x.parquet"), "--with-features",
                   env=env, expect=2)
    assert "--with-features" in refused.stderr and "--scorer" in refused.stderr


def test_feature_store_yaml_then_config_then_flags(wire: EndpointProcess, entities: Path,
                                                  tmp_path: Path) -> None:
    yaml_file = tmp_path / "feature_store.yaml"
    yaml_file.write_text(f"project: {PROJECT}\nonline_store:\n  type: dynamodb\n"
                         f"  region: ap-south-1\n  endpoint_url: {wire.url}\n"
                         "  batch_size: 40\n  consistent_reads: true\n")
    config = tmp_path / "featurepull.toml"
    config.write_text("[dynamodb]\nbatch_size = 30\nregion = 'eu-north-1'\n")
    base = ["--table", "drivers", "--features", SOME, "--entities", str(entities),
            "--overwrite", "--output", str(tmp_path / "out.parquet")]

    def run(*args: str) -> dict[str, Any]:
        wire.reset_stats()
        pull(*base, *args)
        return wire.stats()

    from_yaml = run("--feature-store-yaml", str(yaml_file))
    assert set(from_yaml["regions"]) == {"ap-south-1"}
    assert from_yaml["batch_get_item"] == from_yaml["consistent_reads"] == math.ceil(UNIQUE / 40)
    assert_rows(tmp_path / "out.parquet", SOME.split(","))
    with_config = run("--feature-store-yaml", str(yaml_file), "--config", str(config))
    assert set(with_config["regions"]) == {"eu-north-1"}
    assert with_config["batch_get_item"] == math.ceil(UNIQUE / 30)
    with_flags = run("--feature-store-yaml", str(yaml_file), "--config", str(config),
                     "--batch-size", "90", "--eventual-reads")
    assert with_flags["batch_get_item"] == math.ceil(UNIQUE / 90)
    assert with_flags["consistent_reads"] == 0 and set(with_flags["regions"]) == {"eu-north-1"}


@pytest.mark.parametrize(("flag", "stamp"), [
    ([], lambda i: datetime(2026, 1, i + 1, tzinfo=UTC)),
    (["--event-ts-attribute", "updated_at"],
     lambda i: datetime.fromtimestamp(1_780_000_000 + i, UTC)),
    (["--event-ts-attribute", ""], lambda i: None),
])
def test_plain_layout_and_event_ts_attribute(endpoint_url: str, plain_table: str,
                                             tmp_path: Path, flag: list[str],
                                             stamp: Any) -> None:
    entities = tmp_path / "users.jsonl"
    entities.write_text("".join(json.dumps({"user": u}) + "\n" for u in ["u2", "nobody", "u0"]))
    out = tmp_path / "out.parquet"
    pull("--layout", "plain", "--table", plain_table, "--features", "plan,visits",
         "--entities", str(entities), "--output", str(out), "--endpoint-url", endpoint_url,
         "--region", REGION, *flag)
    assert pq.read_table(out).to_pylist() == [
        {"user": "u2", "event_timestamp": stamp(2), "plan": "p2", "visits": 20},
        {"user": "nobody", "event_timestamp": None, "plan": None, "visits": None},
        {"user": "u0", "event_timestamp": stamp(0), "plan": "p0", "visits": 0},
    ]
