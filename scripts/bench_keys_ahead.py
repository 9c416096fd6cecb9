#!/usr/bin/env python
"""A shard's keys and read in one process, its keys hashed before the read (``plain``), or
the first requests' keys before it and the rest between turns of the read's loop
(``turns``) or on a thread beside it (``thread``) (featurepull.dynamo.keys_ahead), the modes
taking turns.

    .venv/bin/python scripts/bench_keys_ahead.py [--rounds 10] [--keys 100000]

One bench endpoint (10 ms, 10% of the keys found); one reader (32 in flight, 100 keys a
request), checked first, as a pool process holds it. Each round reads a shard of ``--keys``
distinct int64 ids (a shuffled Arrow column, as a shard's keys file gives them) once in each
mode, the first mode rotating: from the column to the read's end (``unique_keys`` then
``BatchReader.read``), the keys step alone, the read alone, and the process's CPU over both.
Prints the medians per mode and their ratio (with the load average) and saves the runs as
JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa

from featurepull.bench.endpoint import FEATURES, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from featurepull.dynamo.keys_ahead import KeysAhead
from featurepull.dynamo.layouts import unique_keys

TABLE = "ahead.driver_stats"
LAYOUT = FeastLayout({"driver_id": "int64"})
WORKERS, BATCH = 32, 100
MODES = ("plain", "turns", "thread")


def one_shard(reader: BatchReader, column: Any, mode: str) -> dict[str, float]:
    cpu, started = time.process_time(), time.perf_counter()
    keys, positions = unique_keys(LAYOUT, {"driver_id": column}, "bench",
                                  0 if mode == "plain" else WORKERS * BATCH)
    if mode == "thread":
        cast(KeysAhead, keys).start()
    hashed = time.perf_counter()
    result = reader.read(keys, FEATURES, positions=positions)
    ended = time.perf_counter()
    assert result.stats.keys == len(column)
    return {"keys_s": hashed - started, "read_s": ended - hashed, "total_s": ended - started,
            "cpu_s": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--json-out", default="bench_keys_ahead.json")
    args = parser.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    rng = random.Random(7)
    runs: list[dict[str, Any]] = []
    with start_endpoint(drivers=args.keys // 10, latency_ms=10, table=TABLE) as endpoint:
        reader = BatchReader(TABLE, LAYOUT, DynamoSettings(
            region="us-east-1", endpoint_url=endpoint.url, max_read_workers=WORKERS,
            batch_size=BATCH))
        reader.check_table()
        warm = pa.array(rng.sample(range(10**9), args.keys), pa.int64())
        one_shard(reader, warm, "plain")  # connections opened, code warm
        for round_ in range(args.rounds):
            column = pa.array(rng.sample(range(10**9), args.keys), pa.int64())
            order = MODES[round_ % 3:] + MODES[:round_ % 3]  # each mode first in turn
            for mode in order:
                run = {"mode": mode, "round": round_, **one_shard(reader, column, mode),
                       "load": os.getloadavg()[0]}
                runs.append(run)
                print(json.dumps(run), flush=True)
    print(f"medians over {args.rounds} rounds, {args.keys:,} keys, load "
          f"{min(r['load'] for r in runs):.1f}-{max(r['load'] for r in runs):.1f}")
    print(f"{'':10}" + "".join(f"{mode:>10}" for mode in MODES) + f"{'ratios':>10}")
    for field in ("keys_s", "read_s", "total_s", "cpu_s"):
        medians = [statistics.median(r[field] for r in runs if r["mode"] == mode)
                   for mode in MODES]
        print(f"{field:10}" + "".join(f"{m:10.4f}" for m in medians)
              + "".join(f"{m / medians[0]:10.3f}" for m in medians[1:]))
    Path(args.json_out).write_text(json.dumps(runs, indent=1))
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
