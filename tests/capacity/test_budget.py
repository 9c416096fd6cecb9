"""Read budgets end to end: real `featurepull pull` and real prefork workers reading a table
whose capacity the bench endpoint enforces as DynamoDB does (4,000 RCU/s, 1 s of burst).

Consumption is what the endpoint recorded for the reader's access key id, per wall-clock
second: every window after the first stays within 110% of the budget. And a reader its
budget held back (``budget_wait_s`` above 0: it was faster than the budget) reached 80% of
the budget in some window: a pacer that holds back too much is low in every second. A
condition, not a throughput floor: on a machine too busy to reach the budget the reader is
never held back, and a loaded second or two cannot lower the best one. Output is checked
row by row against the synthetic table.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess, expected_features, start_endpoint
from featurepull.bench.live_traffic import LiveTraffic
from featurepull.client import submit
from featurepull.dynamo.feast_values import decode_value
from featurepull.local import RedisService
from tests.tasks.conftest import Fleet, fleet, freeze_mid_shard, wait_for_progress

pytestmark = pytest.mark.slow

CAPACITY = 4_000.0  # RCU/s
DRIVERS = 20_000
TABLE = "demo.driver_stats"
HALF = CAPACITY / 2


def entity_ids(seed: int = 5) -> list[int]:
    """18,500 known drivers, 1,000 unknown ids, 500 repeats, shuffled: 9,750 RCU to read,
    about 5 s at half the table (enough full seconds that one slow second on a busy
    machine does not decide the average)."""
    rng = random.Random(seed)
    ids = rng.sample(range(DRIVERS), 18_500) + [DRIVERS + i for i in range(1_000)]
    ids += rng.choices(ids, k=500)
    rng.shuffle(ids)
    return ids


@pytest.fixture(scope="module")
def provisioned() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=DRIVERS, table=TABLE, provisioned_rcu=CAPACITY) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("capacity") / "drivers.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(entity_ids(), pa.int64())}), path)
    return path


def assert_exact(output: Path) -> None:
    """One row per entity, in order, each feature as the table holds it (None: no item)."""
    rows = pq.read_table(output).to_pylist()
    assert [row["driver_id"] for row in rows] == entity_ids()
    for row in rows:
        driver = row["driver_id"]
        if driver >= DRIVERS:
            assert row["event_timestamp"] is None and all(row[f] is None for f in FEATURES)
            continue
        wanted = expected_features(driver)
        assert [row[f] for f in FEATURES] == [decode_value(wanted[f]) for f in FEATURES]


def assert_within_budget(endpoint: EndpointProcess, client: str, budget: float,
                         held_back: bool) -> list[float]:
    """Every 1-s window after the first ≤ 110% of the budget; when the budget ``held_back``
    the reader, some window ≥ 80% of it. Returns the per-second consumption."""
    per_second = endpoint.capacity()["clients"][client]["per_second"]
    seconds = sorted(int(s) for s in per_second)
    series = [per_second.get(str(s), 0.0) for s in range(seconds[0], seconds[-1] + 1)]
    assert all(units <= 1.1 * budget for units in series[1:]), (budget, series)
    if held_back:
        assert max(series) >= 0.8 * budget, (budget, series)
    return series


def _pull(endpoint: EndpointProcess, entities: Path, output: Path, client: str,
          *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": client}
    return subprocess.run(
        [sys.executable, "-m", "featurepull", "pull", "--project", "demo", "--table",
         "driver_stats", "--features", ",".join(FEATURES), "--entities", str(entities),
         "--output", str(output), "--endpoint-url", endpoint.url, "--region", "us-east-1",
         "--json", *extra],
        env=env, capture_output=True, text=True, timeout=180)


def test_pull_at_half_the_capacity_beside_live_traffic(provisioned: EndpointProcess,
                                                       entities: Path, tmp_path: Path) -> None:
    # A feature server reads 40% of the table meanwhile; featurepull may have 50%.
    out = tmp_path / "pull.parquet"
    with LiveTraffic(provisioned.url, TABLE, DRIVERS, 0.4 * CAPACITY) as live:
        done = _pull(provisioned, entities, out, "pull-half", "--max-rcu-per-s", "50%")
    assert done.returncode == 0, done.stderr
    assert live.result.requests > 100
    assert live.result.errors == 0
    assert live.result.throttled_share <= 0.01, live.result
    summary = json.loads(done.stdout)
    assert summary["budget_rcu_per_s"] == HALF
    assert summary["budget_wait_s"] > 0
    assert_within_budget(provisioned, "pull-half", HALF, held_back=True)
    assert summary["consumed_rcu"] == pytest.approx(0.5 * len(set(entity_ids())))
    assert_exact(out)


def _fleet_env(workers: Fleet, client: str, **dynamodb: str) -> None:
    workers.env["AWS_ACCESS_KEY_ID"] = client
    for name, value in dynamodb.items():
        workers.env[f"FEATUREPULL_DYNAMODB__{name.upper()}"] = value


def test_a_job_over_two_worker_processes_keeps_the_budget(
        redis_server: RedisService, provisioned: EndpointProcess, entities: Path,
        tmp_path: Path) -> None:
    # The budget comes from `submit --max-rcu-per-s` and is shared by both pool processes.
    client = f"fleet-{uuid.uuid4().hex[:6]}"
    with fleet(redis_server, provisioned.url, shard_size=2_000) as workers:
        _fleet_env(workers, client)
        workers.start_worker(concurrency=2)
        out = tmp_path / "job.parquet"
        env = {**workers.env}
        done = subprocess.run(
            [sys.executable, "-m", "featurepull", "submit", "--table", "driver_stats",
             "--features", ",".join(FEATURES), "--entities", str(entities), "--output",
             str(out), "--max-rcu-per-s", str(int(HALF)), "--wait", "--json"],
            env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["job_id"]
        status = [subprocess.run([sys.executable, "-m", "featurepull", "status", job_id, *json_flag],
                                 env=env, capture_output=True, text=True, timeout=60)
                  for json_flag in ([], ["--json"])]
        log = workers.log_text()
    # `featurepull status` shows what the job spent of the table and its budget.
    assert "budget_rcu_per_s=2000.0" in status[0].stdout and "budget_wait_s=" in status[0].stdout
    assert "rcu_per_s=" in status[0].stdout and "concurrency_min=" in status[0].stdout
    capacity = json.loads(status[1].stdout)["capacity"]
    assert capacity["budget_rcu_per_s"] == HALF and capacity["budget_wait_s"] > 0
    assert 0 < capacity["rcu_per_s"] <= 1.1 * HALF
    summary = json.loads(done.stdout)
    assert summary["shards"] == 10
    read = summary["read"]
    assert read["budget_rcu_per_s"] == HALF and read["budget_wait_s"] > 0
    assert 0 < read["rcu_per_s"] <= 1.1 * HALF
    series = assert_within_budget(provisioned, client, HALF, held_back=True)
    assert len(series) >= 3
    assert_exact(out)
    # Each shard's log line says what it spent of the budget.
    lines = [json.loads(line) for line in log.splitlines() if '"shard_done"' in line]
    assert len(lines) == 10
    assert all(line["budget_rcu_per_s"] == HALF and "in_flight" in line for line in lines)


def test_two_worker_instances_share_the_tables_ceiling(
        redis_server: RedisService, provisioned: EndpointProcess, entities: Path,
        tmp_path: Path) -> None:
    # The operator's ceiling (50%) wins over a job that asks for more (75%).
    client = f"two-{uuid.uuid4().hex[:6]}"
    with fleet(redis_server, provisioned.url, shard_size=2_000) as workers:
        _fleet_env(workers, client, table_budgets=json.dumps({TABLE: "50%"}))
        workers.start_worker(concurrency=1, name="machine-a")
        workers.start_worker(concurrency=1, name="machine-b")
        out = tmp_path / "job.parquet"
        job = _submit(workers, entities, out, {"max_rcu_per_s": "75%"})
        status = job.wait(timeout=180, progress=False)
        logs = [log.read_text() for log in workers.logs]
    assert all('"shard_done"' in text for text in logs)  # both instances read
    read = (status.summary or {})["read"]
    assert read["budget_rcu_per_s"] == HALF
    assert_within_budget(provisioned, client, HALF, held_back=read["budget_wait_s"] > 0)
    assert_exact(out)


def _submit(workers: Fleet, entities: Path, out: Path, dynamodb: dict[str, Any]) -> Any:
    return submit("driver_stats", list(FEATURES), str(entities), str(out),
                  settings=workers.settings(), dynamodb=dynamodb)


def test_the_budget_holds_after_a_worker_child_is_killed(
        redis_server: RedisService, provisioned: EndpointProcess, entities: Path,
        tmp_path: Path) -> None:
    client = f"kill-{uuid.uuid4().hex[:6]}"
    # Small shards, a kill early on: the surviving child has work while the killed one's
    # shard waits for the pool to restart it.
    with fleet(redis_server, provisioned.url, shard_size=1_500) as workers:
        _fleet_env(workers, client)
        worker = workers.start_worker(concurrency=2)
        out = tmp_path / "job.parquet"
        job = _submit(workers, entities, out, {"max_rcu_per_s": HALF})
        wait_for_progress(job, 0.1)
        victim = freeze_mid_shard(job)
        assert victim in workers.children(worker)
        os.kill(victim, signal.SIGKILL)
        status = job.wait(timeout=180, progress=False)
        assert "signal 9" in workers.log_text()
    assert (status.summary or {})["redelivered_shards"] >= 1
    # The killed child's reservation is not held: the survivor reads on at the budget.
    assert_within_budget(provisioned, client, HALF,
                         held_back=(status.summary or {})["read"]["budget_wait_s"] > 0)
    assert_exact(out)
