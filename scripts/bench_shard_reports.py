#!/usr/bin/env python
"""A worker shard's progress reports, in one process (no Celery), trees interleaved:

    .venv/bin/python scripts/bench_shard_reports.py --rounds 6 \\
        --tree before=OLD_CHECKOUT --tree after=.

Each round runs, for each tree, a process (that tree's featurepull first on PYTHONPATH) that
creates a job of ``--shards`` shards of 100,000 ids (10% found; batch-get) against a 10 ms
endpoint and runs ``run_shard`` for each, with a report callback that does what Celery's
part of a report does in Redis (a done count, a SET, a PUBLISH). Per shard (its first, a
warm-up, left out): wall, the read, process and main-thread CPU, and the wall time spent
inside the read's progress callbacks (the time its event loop could not send). Prints
medians and saves every shard as JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SHARD = 100_000
FIELDS = ("wall", "read", "cpu", "main_cpu", "in_progress")
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def child(redis_url: str, endpoint_url: str, shards: int, workdir: str) -> None:
    """Run the shards in this process; print one JSON line of per-shard figures."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurepull.bench.endpoint import FEATURES
    from featurepull.config import load_settings
    from featurepull.dynamo import BatchReader
    from featurepull.tasks.create import create_job
    from featurepull.tasks.requests import JobRequest
    from featurepull.tasks.shards import run_shard
    from featurepull.tasks.store import JobStore, connect

    reads: list[float] = []
    in_progress: list[float] = []
    plain_read = BatchReader.read

    def timed_read(self: Any, *args: Any, **kwargs: Any) -> Any:
        inner = kwargs["progress"]
        in_progress.append(0.0)

        def progress(n: int) -> None:
            started = time.perf_counter()
            try:
                inner(n)
            finally:
                in_progress[-1] += time.perf_counter() - started

        kwargs["progress"] = progress
        started = time.perf_counter()
        try:
            return plain_read(self, *args, **kwargs)
        finally:
            reads.append(time.perf_counter() - started)

    BatchReader.read = timed_read  # type: ignore[method-assign]
    settings = load_settings(overrides={
        "redis_url": redis_url, "project": "demo",
        "dynamodb": {"endpoint_url": endpoint_url, "region": "us-east-1",
                     "max_read_workers": 32, "read_mode": "batch-get"},
        "jobs": {"shard_size": SHARD}})
    store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
    ids = [i // 10 if i % 10 == 0 else 5_000_000 + i for i in range(SHARD * shards)]
    path = os.path.join(workdir, "ids.parquet")
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    meta = create_job(JobRequest(table="driver_stats", features=list(FEATURES), entities=path),
                      settings, store)

    def report(done: int, total: int, capacity: dict[str, Any]) -> None:
        store.done_count(meta.job_id)
        store.redis.set(f"bench:{meta.job_id}", json.dumps({"done": done, **capacity}))
        store.redis.publish("bench", json.dumps({"done": done, "total": total}))

    out = []
    for shard in range(shards):
        cpu, main, wall = time.process_time(), time.thread_time(), time.perf_counter()
        run_shard(meta.job_id, shard, settings, store, report=report)
        out.append({"wall": time.perf_counter() - wall, "read": reads[-1],
                    "cpu": time.process_time() - cpu, "main_cpu": time.thread_time() - main,
                    "in_progress": in_progress[-1]})
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--shards", type=int, default=11)
    parser.add_argument("--json-out", default="shard_reports.json")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        redis_url, endpoint_url, shards, workdir = args.child
        child(redis_url, endpoint_url, int(shards), workdir)
        return
    from featurepull.bench.endpoint import start_endpoint
    from featurepull.local import start_redis

    trees = dict(spec.split("=", 1) for spec in args.tree)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    loads = []
    redis = start_redis()
    try:
        with start_endpoint(drivers=1_000_000, latency_ms=10) as endpoint:
            for round_no in range(args.rounds):
                order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
                for name in order:
                    tree = os.path.abspath(trees[name])
                    with tempfile.TemporaryDirectory() as workdir:
                        done = subprocess.run(
                            [sys.executable, os.path.abspath(__file__), "--tree", "x=.",
                             "--child", redis.url, endpoint.url, str(args.shards), workdir],
                            env={**os.environ, **AWS_ENV, "PYTHONPATH": tree}, cwd=workdir,
                            capture_output=True, text=True, check=False)
                    if done.returncode:
                        sys.exit(f"{name}: {done.stderr[-3000:]}")
                    shards = json.loads(done.stdout.strip().splitlines()[-1])[1:]  # a warm-up
                    results[name] += shards
                    loads.append(os.getloadavg()[0])
                    print(f"{name} round {round_no}: load {loads[-1]:.2f}, reads "
                          f"{[round(s['read'], 3) for s in shards]}", flush=True)
    finally:
        redis.stop()
    print("medians, ms a shard | " + " | ".join(FIELDS))
    for name, shards in results.items():
        print(f"{name} ({len(shards)} shards) | " + " | ".join(
            f"{statistics.median(s[field] for s in shards) * 1000:.1f}" for field in FIELDS))
    print(f"load {min(loads):.2f}-{max(loads):.2f}")
    with open(args.json_out, "w") as out:
        json.dump({"shards": results, "load": loads}, out)
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
