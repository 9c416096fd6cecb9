#!/usr/bin/env python
"""A shard's Redis steps before its read, as a job's first shard and as a later one makes
them, the old way and today's, on a private redis-server (no Celery, no read):

    .venv/bin/python scripts/bench_shard_start.py --jobs 200 --busy 2

Old: the job record, "already done?", then (a first shard) `mark_running` (WATCH, HGET, a
transaction), then the attempt counted. New: the record and "already done?" in one
pipeline, the attempt and (a first shard) the job marked running in one script. Per way and
kind of shard: round trips (commands written to the socket) and wall microseconds (median
and 90th percentile over ``--jobs`` jobs, the ways alternating). ``--busy N`` keeps N
processes spinning meanwhile, as the fleet's other pool process, submitter and endpoint
keep the cores busy at a job's first shards. Prints a table and saves JSON
(``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable

import pyarrow as pa
import redis

from featurepull.local import start_redis
from featurepull.tasks.store import JobState, JobStore, connect

_writes = 0
_send = redis.connection.Connection.send_packed_command


def _counted(self: redis.connection.Connection, *args: object, **kwargs: object) -> None:
    global _writes
    _writes += 1
    _send(self, *args, **kwargs)  # type: ignore[arg-type]


def _old(store: JobStore, job_id: str, shard: int) -> None:
    meta = store.meta(job_id)
    store.is_done(job_id, shard)
    if meta.state == JobState.QUEUED:
        store.mark_running(job_id)
    store.count_attempt(job_id, shard, "host:1")


def _new(store: JobStore, job_id: str, shard: int) -> None:
    meta, _ = store.meta_and_done(job_id, shard)
    store.count_attempt(job_id, shard, "host:1", mark_running=meta.state == JobState.QUEUED)


def _spin(until: float) -> None:
    while time.monotonic() < until:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument("--json-out", default="bench-output/shard-start.json")
    args = parser.parse_args()
    global _writes
    redis.connection.Connection.send_packed_command = _counted  # type: ignore[method-assign]
    ways: dict[str, Callable[[JobStore, str, int], None]] = {"old": _old, "new": _new}
    samples: dict[tuple[str, str], list[float]] = {}
    trips: dict[tuple[str, str], int] = {}
    server = start_redis()
    try:
        store = JobStore(connect(server.url), 3600, 600)
        keys = pa.table({"driver_id": pa.array([1, 2], pa.int64())})
        spinners = [multiprocessing.Process(target=_spin, args=(time.monotonic() + 600,))
                    for _ in range(args.busy)]
        for spinner in spinners:
            spinner.start()
        try:
            for n in range(args.jobs):
                order = list(ways.items()) if n % 2 == 0 else list(reversed(ways.items()))
                for name, way in order:
                    job_id = store.new_job_id()
                    store.create(job_id, {"table": "t"}, iter([keys, keys]))
                    for shard, kind in ((0, "first"), (1, "later")):
                        before, began = _writes, time.perf_counter()
                        way(store, job_id, shard)
                        samples.setdefault((name, kind), []).append(
                            (time.perf_counter() - began) * 1e6)
                        trips[name, kind] = _writes - before
                    store.delete(job_id)
        finally:
            for spinner in spinners:
                spinner.terminate()
    finally:
        server.stop()
    rows = []
    print(f"load {os.getloadavg()[0]:.2f}, {args.busy} busy processes, {args.jobs} jobs")
    print("way | shard | round trips | wall µs median | p90")
    for (name, kind), values in samples.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        row = {"way": name, "shard": kind, "round_trips": trips[name, kind],
               "median_us": round(statistics.median(values), 1), "p90_us": round(p90, 1)}
        rows.append(row)
        print(f"{name} | {kind} | {row['round_trips']} | {row['median_us']} | {row['p90_us']}")
    with open(args.json_out, "w") as out:
        json.dump({"jobs": args.jobs, "busy": args.busy, "rows": rows}, out, indent=1)
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
