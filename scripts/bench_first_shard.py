#!/usr/bin/env python
"""A pool process's first shard of a job, in a process of its own per round, trees
interleaved: its task start → ``shard_start`` (the keys hashed ahead and the reader's table
checked: a DescribeTable unless the job carries its key schema) and its whole ``run_shard``,
and how many DescribeTable requests the endpoint answered for it.

    .venv/bin/python scripts/bench_first_shard.py --rounds 20 \\
        --tree before=OLD_CHECKOUT --tree after=.

Each round, each tree: a fresh process (that tree's featurepull first on PYTHONPATH) stores
a one-shard job of ``--entities`` ids (10% found) with ``create_job`` — the submitter's
DescribeTable, not timed — then preloads botocore, forgets its readers and builds its
DynamoDB client, as a worker before its fork and a pool process after it do, and runs the
shard against the bench endpoint (``--latency`` ms, ``--threads`` in flight). Prints medians
and paired differences and saves every round as JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULT = "FIRST-SHARD "
_CHILD = r'''
import json, sys, time
from featurepull.config import load_settings
import pyarrow as pa
from featurepull.dynamo.client import preload_botocore, process_client
from featurepull.tasks import shards
from featurepull.tasks.create import create_job
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.store import JobStore, connect

redis_url, endpoint, entities, threads, project, view, features = sys.argv[1:8]
settings = load_settings(overrides={
    "redis_url": redis_url, "project": project,
    "dynamodb": {"endpoint_url": endpoint, "region": "us-east-1",
                 "max_read_workers": int(threads), "read_mode": "batch-get"},
    "jobs": {"shard_size": 1_000_000}})
store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
meta = create_job(JobRequest(table=view, features=features.split(","), entities=entities),
                  settings, store)
preload_botocore()  # as the worker does before its pool forks (featurepull.worker.app)
pa.array([0])
shards.reset_process_state()  # as a pool process after its fork
process_client(settings.dynamodb)  # built after the fork (featurepull.worker.app)
marks = {}

class Log:
    def __init__(self, inner): self.inner = inner
    def info(self, event, **fields):
        marks.setdefault(event, time.perf_counter())
        return self.inner.info(event, **fields)
    def __getattr__(self, name): return getattr(self.inner, name)

shards.log = Log(shards.log)
started = time.perf_counter()
shards.run_shard(meta.job_id, 0, settings, store)
ended = time.perf_counter()
print("FIRST-SHARD " + json.dumps({"to_shard_start_s": marks["shard_start"] - started,
                                   "shard_s": ended - started}), flush=True)
'''


def _describes(endpoint: Any) -> int:
    stats = endpoint.stats()
    return int(stats["requests"] - stats["batch_get_item"] - stats["scan"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=lambda s: tuple(s.split("=", 1)),
                        required=True, help="NAME=DIR, a checkout whose featurepull is run")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--latency", type=float, default=10.0)
    parser.add_argument("--json-out", default="bench-output/first-shard.json")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, start_endpoint
    from featurepull.local import start_redis

    known = args.entities // 10
    work = Path(tempfile.mkdtemp(prefix="featurepull-first-shard-"))
    entities = work / "ids.parquet"
    ids = list(range(known)) + [10_000_000 + i for i in range(args.entities - known)]
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), entities)
    redis_service = start_redis()
    runs: list[dict[str, Any]] = []
    try:
        with start_endpoint(drivers=known, latency_ms=args.latency) as endpoint:
            for round_ in range(args.rounds):
                trees = args.tree if round_ % 2 == 0 else list(reversed(args.tree))
                for name, tree in trees:
                    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()),
                           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
                    before = _describes(endpoint)
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, redis_service.url, endpoint.url,
                         str(entities), str(args.threads), *DEFAULT_TABLE.split("."),
                         ",".join(FEATURES)],
                        env=env, cwd=work, capture_output=True, text=True, check=True).stdout
                    line = next(x for x in out.splitlines() if x.startswith(RESULT))
                    # The submitter's DescribeTable is the create_job's; the rest the shard's.
                    run = {"tree": name, "round": round_, **json.loads(line[len(RESULT):]),
                           "shard_describes": _describes(endpoint) - before - 1,
                           "load_average": os.getloadavg()[0]}
                    runs.append(run)
                    print(json.dumps(run), flush=True)
    finally:
        redis_service.stop()
    names = [name for name, _ in args.tree]
    print(f"{'median of rounds':38}" + "".join(f" | {n:>9}" for n in names))
    for field in ("to_shard_start_s", "shard_s", "shard_describes"):
        values = [statistics.median(r[field] for r in runs if r["tree"] == n) for n in names]
        print(f"{field:38}" + "".join(f" | {v:9.4f}" for v in values))
    if len(names) == 2:
        for field in ("to_shard_start_s", "shard_s"):
            pairs = [next(r[field] for r in runs if r["tree"] == names[1] and r["round"] == k)
                     - next(r[field] for r in runs if r["tree"] == names[0] and r["round"] == k)
                     for k in range(args.rounds)]
            faster = sum(p < 0 for p in pairs)
            print(f"{field} {names[1]} - {names[0]}, paired median: "
                  f"{statistics.median(pairs) * 1000:+.1f} ms ({faster} of {args.rounds} faster)")
    loads = [r["load_average"] for r in runs]
    print(f"load average {min(loads):.1f}-{max(loads):.1f}")
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(runs, indent=1))
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
