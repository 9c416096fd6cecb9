#!/usr/bin/env python
"""Benchmark the two read modes: BatchGetItem per key against one parallel Scan joined to the
keys, for a growing share of a table's keys, and where one becomes cheaper than the other.

    .venv/bin/python scripts/bench_scan.py                       # 200,000 items, ~1 minute
    .venv/bin/python scripts/bench_scan.py --items 1000000 --latency-ms 5 \\
        --fractions 0.01,0.05,0.1,0.5,0.9 --json-out bench-output/bench_scan.json

The lean endpoint (``featurepull.bench.endpoint``: Feast-layout items of ~175 bytes, Scan
pages of 1 MB charged 0.5 RCU per started 4 KB, BatchGetItem 0.5 RCU per key) is started
with ``--items`` drivers. For each fraction, that share of the drivers (shuffled) is read
twice through ``featurepull.dynamo.planned.read_planned`` — the path ``featurepull pull``
takes — once with ``mode="batch-get"`` and once with ``mode="scan"``; both outputs must be
identical row for row. Each cell reports the read units the endpoint charged, the requests
it answered, the wall time and this process's CPU time (the endpoint's is its own), and what
``auto`` would have picked. The crossover is where a
scan's (constant) cost meets batch-get's (per key): in read units from the measured costs,
in wall time by a line through the batch-get times.

Prints a table and writes JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, EndpointProcess, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from featurepull.dynamo.planned import read_planned
from featurepull.dynamo.planner import plan_read

MODES = ("batch-get", "scan")


def cell(endpoint: EndpointProcess, settings: DynamoSettings, keys: list[Any],
         mode: str) -> tuple[dict[str, Any], list[Any]]:
    """One read of ``keys`` in ``mode``: what the endpoint counted, and the rows."""
    reader = BatchReader(DEFAULT_TABLE, FeastLayout({"driver_id": "int64"}), settings)
    reader.check_table()
    endpoint.reset_stats()
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    result, plan = read_planned(reader, keys, list(FEATURES), mode=mode)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    wire = endpoint.stats()
    stats = result.stats
    return {"mode": plan.mode, "seconds": round(seconds, 3), "cpu_s": round(cpu, 3),
            "consumed_rcu": round(wire["consumed_rcu"], 1),
            "requests": wire["batch_get_item"] + wire["scan"],
            "pages": stats.pages, "items_scanned": stats.items_scanned,
            "found": stats.found, "reader_rcu": round(stats.consumed_rcu, 1),
            "estimated_rcu": round(plan.scan_rcu if mode == "scan" else plan.batch_get_rcu, 1),
            }, result.rows


def crossover(rows: list[dict[str, Any]], items: int) -> dict[str, float | None]:
    """The share of the table's keys where a scan costs what batch-get costs: in read units
    (batch-get's measured cost per key against the scan's), and in wall time (a least-squares
    line through the batch-get times, against the scans' mean time)."""
    gets = [r for r in rows if r["mode"] == "batch-get"]
    scans = [r for r in rows if r["mode"] == "scan"]
    per_key = sum(r["consumed_rcu"] for r in gets) / sum(r["keys"] for r in gets)
    scan_rcu = sum(r["consumed_rcu"] for r in scans) / len(scans)
    xs = [r["keys"] for r in gets]
    ys = [r["seconds"] for r in gets]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread \
        if spread else 0.0
    scan_s = sum(r["seconds"] for r in scans) / len(scans)
    time_keys = (scan_s - (mean_y - slope * mean_x)) / slope if slope > 0 else None
    return {"rcu_fraction": round(scan_rcu / per_key / items, 4),
            "time_fraction": round(time_keys / items, 4) if time_keys is not None else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--fractions", default="0.01,0.1,0.5,0.9")
    parser.add_argument("--latency-ms", type=float, default=2.0,
                        help="the endpoint's latency per request")
    parser.add_argument("--workers", type=int, default=10, help="max_read_workers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    fractions = [float(f) for f in args.fractions.split(",")]
    layout = FeastLayout({"driver_id": "int64"})
    rows: list[dict[str, Any]] = []
    with start_endpoint(drivers=args.items, latency_ms=args.latency_ms) as endpoint:
        settings = DynamoSettings(endpoint_url=endpoint.url, region="us-east-1",
                                  max_read_workers=args.workers)
        reader = BatchReader(DEFAULT_TABLE, layout, settings)
        reader.check_table()
        description = reader.description or {}
        for fraction in fractions:
            ids = random.Random(args.seed).sample(range(args.items), int(args.items * fraction))
            keys = layout.keys_for({"driver_id": ids})
            auto = plan_read(description, len(keys), settings).mode
            outputs = []
            for mode in MODES:
                measured, output = cell(endpoint, settings, keys, mode)
                outputs.append(output)
                rows.append({"fraction": fraction, "keys": len(keys), "auto": auto, **measured})
            if outputs[0] != outputs[1]:
                sys.exit(f"the scan's rows differ from batch-get's at {fraction:.0%}")
    point = crossover(rows, args.items)
    print(f"{args.items:,} items of ~{description['TableSizeBytes'] / args.items:.0f} bytes "
          f"({description['TableSizeBytes'] / 2**20:.1f} MiB), {args.latency_ms:g} ms per "
          f"request, {args.workers} requests in flight")
    print(f"{'keys':>8} {'share':>6} {'mode':>9} {'RCU':>9} {'requests':>8} {'seconds':>8}"
          f" {'CPU s':>6} {'auto':>9}")
    for row in rows:
        print(f"{row['keys']:>8,} {row['fraction']:>6.0%} {row['mode']:>9} "
              f"{row['consumed_rcu']:>9,.1f} {row['requests']:>8,} {row['seconds']:>8.2f} "
              f"{row['cpu_s']:>6.2f} {row['auto']:>9}")
    print(f"crossover: scan costs fewer RCU above {point['rcu_fraction']:.1%} of the keys; "
          + (f"it is faster above {point['time_fraction']:.1%}"
             if point["time_fraction"] is not None else "no time crossover measured"))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({
            "items": args.items, "table_size_bytes": description["TableSizeBytes"],
            "latency_ms": args.latency_ms, "max_read_workers": args.workers,
            "machine": platform.platform(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "rows": rows, "crossover": point}, indent=2))
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
