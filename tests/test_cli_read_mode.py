"""`featurepull pull --read-mode batch-get|scan|auto`, end to end: a real `featurepull pull`
process against the bench endpoint (Feast layout) and moto (plain layout), the mode seen on
the wire (BatchGetItem or Scan calls) and in the summary, and the output the same row for row
whichever mode read it — unknown ids null, repeats repeated, input order kept."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from tests.conftest import REGION, unique_name
from tests.test_cli_pull_flags import DRIVERS, expected_row, pull

PROJECT = "rm"
TABLE = f"{PROJECT}.drivers"
FEATURES = ["conv_rate", "city"]
_rng = random.Random(17)
MOST = _rng.sample(range(DRIVERS), 1_800) + [DRIVERS + i for i in range(25)]
MOST += _rng.choices(MOST, k=40)
_rng.shuffle(MOST)
FEW = [5, 9, DRIVERS + 3, 5]
# auto's rule at this table's size (the guard rail against small tables lowered to it).
SMALL_TABLES_TOO = {"FEATUREPULL_DYNAMODB__SCAN_MIN_ITEMS": "1000"}


@pytest.fixture(scope="module")
def lean() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=DRIVERS, table=TABLE) as endpoint:
        yield endpoint


def entities(path: Path, ids: list[int]) -> Path:
    path.write_text("driver_id\n" + "\n".join(map(str, ids)) + "\n")
    return path


def pull_lean(endpoint: EndpointProcess, ids_file: Path, out: Path, *args: str,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a pull with --json; its summary and what the endpoint was asked."""
    endpoint.reset_stats()
    proc = pull("--project", PROJECT, "--table", "drivers", "--features", ",".join(FEATURES),
                "--entities", str(ids_file), "--output", str(out), "--endpoint-url",
                endpoint.url, "--region", REGION, "--json", *args, env=env)
    return {**json.loads(proc.stdout), "wire": endpoint.stats()}


def expected_rows(ids: list[int]) -> list[dict[str, Any]]:
    return [expected_row(driver, FEATURES) for driver in ids]


def test_scan_and_batch_get_write_the_same_rows(lean: EndpointProcess,
                                                tmp_path: Path) -> None:
    ids_file = entities(tmp_path / "most.csv", MOST)
    got = {}
    for mode in ("batch-get", "scan"):
        out = tmp_path / f"{mode}.parquet"
        summary = pull_lean(lean, ids_file, out, "--read-mode", mode)
        got[mode] = pq.read_table(out).to_pylist()
        wire = summary["wire"]
        assert summary["read_mode"] == mode
        assert summary["read_plans"][0]["requested"] == mode
        assert summary["found"] == len(MOST) - sum(i >= DRIVERS for i in MOST)
        if mode == "scan":
            assert wire["batch_get_item"] == 0 and wire["scan"] == summary["pages"] > 0
            assert summary["items_scanned"] == wire["scanned_items"] == DRIVERS
            assert summary["items_matched"] == len({i for i in MOST if i < DRIVERS})
        else:
            assert wire["scan"] == 0 and wire["batch_get_item"] == summary["requests"] > 0
        assert summary["consumed_rcu"] == pytest.approx(wire["consumed_rcu"])
    assert got["scan"] == got["batch-get"] == expected_rows(MOST)


@pytest.mark.parametrize(("ids", "mode"), [(MOST, "scan"), (FEW, "batch-get")])
def test_auto_picks_the_cheaper_read_and_says_why(lean: EndpointProcess, tmp_path: Path,
                                                  ids: list[int], mode: str) -> None:
    out = tmp_path / "out.parquet"
    summary = pull_lean(lean, entities(tmp_path / "ids.csv", ids), out,
                        "--read-mode", "auto", env=SMALL_TABLES_TOO)
    plan = summary["read_plans"][0]
    assert summary["read_mode"] == plan["read_mode"] == mode and plan["requested"] == "auto"
    cheaper, dearer = ((plan["scan_rcu"], plan["batch_get_rcu"]) if mode == "scan"
                       else (plan["batch_get_rcu"], plan["scan_rcu"]))
    assert cheaper < dearer
    other = "batch-get" if mode == "scan" else "scan"
    said = re.match(rf"read_mode={mode}: ~([\d,.]+) RCU vs ~([\d,.]+) RCU for {other} \(",
                    plan["reason"])
    assert said is not None, plan["reason"]
    assert [float(n.replace(",", "")) for n in said.groups()] == [
        pytest.approx(cheaper, abs=0.5), pytest.approx(dearer, abs=0.5)]
    calls = summary["wire"]["scan" if mode == "scan" else "batch_get_item"]
    assert calls > 0 and summary["wire"]["scan" if mode != "scan" else "batch_get_item"] == 0
    assert pq.read_table(out).to_pylist() == expected_rows(ids)


def test_auto_keeps_batch_get_on_small_tables_and_prints_the_reason(
        lean: EndpointProcess, tmp_path: Path) -> None:
    proc = pull("--project", PROJECT, "--table", "drivers", "--features", ",".join(FEATURES),
                "--entities", str(entities(tmp_path / "most.csv", MOST)), "--output",
                str(tmp_path / "out.csv"), "--endpoint-url", lean.url, "--region", REGION)
    lines = proc.stdout.splitlines()
    assert "read_mode=batch-get" in lines[1]
    assert lines[2].startswith(f"featurepull: {TABLE}: read_mode=batch-get: ~")
    assert lines[2].endswith(f"(the table holds ~{DRIVERS:,} items, under "
                             "dynamodb.scan_min_items=100,000)"), lines[2]


def test_a_bogus_read_mode_is_refused(tmp_path: Path) -> None:
    proc = pull("--table", "drivers", "--features", "a", "--entities",
                str(entities(tmp_path / "e.csv", FEW)), "--output", str(tmp_path / "o.csv"),
                "--read-mode", "bogus", expect=2)
    assert "Invalid value for '--read-mode': 'bogus' is not one of 'batch-get', 'scan', " \
           "'auto'" in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_plain_layout_scan_is_batch_get_and_an_uncounted_table_is_not_scanned(
        ddb: Any, endpoint_url: str, tmp_path: Path) -> None:
    # moto reports TableSizeBytes 0, as DynamoDB does for a table it has not counted yet
    # (it counts about every 6 hours): auto cannot price a scan, and keeps batch-get.
    name = unique_name("rmplain")
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "N"}])
    for start in range(0, 200, 25):
        ddb.batch_write_item(RequestItems={name: [
            {"PutRequest": {"Item": {"user_id": {"N": str(u)}, "score": {"N": f"{u}.5"},
                                     "event_ts": {"S": "2026-05-01 12:00:00+00:00"}}}}
            for u in range(start, start + 25)]})
    users = [*range(0, 220, 3), 7, 7, 3]  # 200..219: no item
    random.Random(4).shuffle(users)
    ids_file = tmp_path / "users.csv"
    ids_file.write_text("user_id\n" + "\n".join(map(str, users)) + "\n")
    outputs = {}
    for mode in ("scan", "auto"):
        out = tmp_path / f"{mode}.csv"
        proc = pull("--layout", "plain", "--table", name, "--features", "score", "--entities",
                    str(ids_file), "--output", str(out), "--endpoint-url", endpoint_url,
                    "--region", REGION, "--read-mode", mode, "--json",
                    env={"FEATUREPULL_DYNAMODB__SCAN_MIN_ITEMS": "0"})
        summary = json.loads(proc.stdout)
        outputs[mode] = out.read_text()
        if mode == "auto":
            assert summary["read_mode"] == "batch-get"
            assert "refresh about every 6 hours" in summary["read_plans"][0]["reason"]
        else:
            assert summary["read_mode"] == "scan" and summary["items_scanned"] == 200
    assert outputs["scan"] == outputs["auto"]
    lines = outputs["scan"].splitlines()
    assert lines[0] == "user_id,event_timestamp,score"
    assert [line.split(",")[0] for line in lines[1:]] == list(map(str, users))
    assert [line.split(",")[2] for line in lines[1:]] == [f"{u}.5" if u < 200 else ""
                                                          for u in users]
