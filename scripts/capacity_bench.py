"""Read budgets against a table that serves live traffic: prints a table and saves JSON.

A provisioned table (the bench endpoint's provisioned mode: 4,000 RCU/s, 1 s of burst)
serves a "live" client reading 40% of its capacity while `featurepull pull` reads 40,000
entities from it: without a budget and without AIMD (as featurepull read before), with AIMD
alone, and with budgets of 25%, 50% and 100% of the table. What the endpoint recorded per
client and per second gives featurepull's achieved RCU/s (full seconds only) and its worst
second; the live client counts its requests that were refused or left keys unprocessed.

    .venv/bin/python scripts/capacity_bench.py --json-out capacity-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.bench.live_traffic import LiveTraffic

TABLE = "demo.driver_stats"


@dataclass(frozen=True)
class Scenario:
    name: str
    budget: str | None  # --max-rcu-per-s
    adaptive: bool = True


SCENARIOS = (
    Scenario("no budget, no AIMD (before)", None, adaptive=False),
    Scenario("no budget, AIMD alone", None),
    Scenario("budget 25%", "25%"),
    Scenario("budget 50%", "50%"),
    Scenario("budget 100%", "100%"),
)


@dataclass
class Row:
    scenario: str
    budget_rcu_per_s: float
    achieved_rcu_per_s: float  # mean over the full seconds of the read
    worst_second_rcu: float  # the highest second after the first
    job_seconds: float  # the pull command, start to exit
    live_requests: int
    live_throttled_pct: float
    featurepull_throttles: int
    featurepull_unprocessed_retries: int
    in_flight: str


def run(endpoint: EndpointProcess, scenario: Scenario, entities: Path, out: Path,
        capacity: float, live_share: float, client: str) -> Row:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": client, "AWS_SECRET_ACCESS_KEY": "bench",
           "FEATUREPULL_DYNAMODB__ADAPTIVE_CONCURRENCY": str(scenario.adaptive).lower()}
    args = [sys.executable, "-m", "featurepull", "pull", "--project", "demo", "--table",
            "driver_stats", "--features", ",".join(FEATURES), "--entities", str(entities),
            "--output", str(out), "--overwrite", "--endpoint-url", endpoint.url, "--region",
            "us-east-1", "--json"]
    if scenario.budget:
        args += ["--max-rcu-per-s", scenario.budget]
    with LiveTraffic(endpoint.url, TABLE, 10_000, live_share * capacity) as live:
        time.sleep(1.0)  # live traffic alone first: it is served in full
        started = time.monotonic()
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        job_seconds = time.monotonic() - started
        time.sleep(0.5)
    if done.returncode != 0:
        raise SystemExit(f"{scenario.name}: featurepull pull failed: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    per_second = endpoint.capacity()["clients"][client]["per_second"]
    seconds = sorted(int(s) for s in per_second)
    series = [per_second.get(str(s), 0.0) for s in range(seconds[0], seconds[-1] + 1)]
    full = series[1:-1] or series
    return Row(scenario.name, summary["budget_rcu_per_s"], round(sum(full) / len(full), 1),
               max(series[1:] or series), round(job_seconds, 2), live.result.requests,
               round(100.0 * live.result.throttled_share, 2), summary["throttles"],
               summary["unprocessed_retries"],
               f"{summary['concurrency_min']}-{summary['concurrency_max']}")


def table(rows: Sequence[Row], capacity: float, live_share: float, entities: int) -> str:
    head = (f"{entities:,} entities; table provisioned at {capacity:,.0f} RCU/s (1 s burst); "
            f"live traffic at {live_share:.0%} of it\n")
    lines = ["| scenario | budget RCU/s | achieved RCU/s | worst second | job s | live "
             "throttled | featurepull throttles / unprocessed keys | in flight |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = f"{r.budget_rcu_per_s:,.0f}" if r.budget_rcu_per_s else "none"
        lines.append(f"| {r.scenario} | {budget} | {r.achieved_rcu_per_s:,.0f} | "
                     f"{r.worst_second_rcu:,.0f} | {r.job_seconds:.1f} | "
                     f"{r.live_throttled_pct:.2f}% of {r.live_requests:,} | "
                     f"{r.featurepull_throttles} / {r.featurepull_unprocessed_retries:,} | "
                     f"{r.in_flight} |")
    return head + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=40_000)
    parser.add_argument("--capacity", type=float, default=4_000.0, help="provisioned RCU/s")
    parser.add_argument("--live-share", type=float, default=0.4)
    parser.add_argument("--json-out", default="capacity-bench.json")
    opts = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="featurepull-capacity-") as tmp, \
            start_endpoint(drivers=opts.entities, table=TABLE,
                           provisioned_rcu=opts.capacity) as endpoint:
        entities = Path(tmp) / "drivers.parquet"
        ids = list(range(opts.entities))
        random.Random(0).shuffle(ids)
        pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), entities)
        for n, scenario in enumerate(SCENARIOS):
            time.sleep(1.5)  # the table's burst allowance refills between runs
            rows.append(run(endpoint, scenario, entities, Path(tmp) / "out.parquet",
                            opts.capacity, opts.live_share, f"featurepull-{n}"))
            print(f"{scenario.name}: done", file=sys.stderr, flush=True)
    text = table(rows, opts.capacity, opts.live_share, opts.entities)
    print(text, end="")
    Path(opts.json_out).write_text(json.dumps(
        {"entities": opts.entities, "capacity_rcu_per_s": opts.capacity,
         "live_share": opts.live_share, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
