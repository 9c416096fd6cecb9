#!/usr/bin/env python
"""How long after a job's end `Job.wait` returns, polling the old way or blocking on the
end's announcement, on a private redis-server (no Celery, no read):

    .venv/bin/python scripts/bench_wait_wake.py --rounds 100 --busy 2

Per round and way (the ways alternating): a job with every shard done (what a `submit
--wait` waits on while the finisher runs) is ended by another process at a random moment
0.05-0.25 s after the wait began (begin_finish, then succeed: the finisher's last steps);
measured is its succeed's return -> the wait's return (ms; below 0 when the waiter was woken
before the ender's own return), and the waiter's CPU per second waited. ``old``: sleep
between polls (Job.wait before the announcement: 100 ms, 20 ms once every shard is done);
``new``: block on the announcement (XREAD) for the same intervals. ``--busy N`` keeps N
processes spinning meanwhile (the fleet's other processes). Prints a table and saves JSON
(``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import time
from multiprocessing.connection import Connection

import pyarrow as pa

from featurepull.client import Job
from featurepull.config import load_settings
from featurepull.local import start_redis
from featurepull.tasks.store import JobStore, connect


def _sleeping(self: Job, interval: float, sleep: bool) -> bool:
    """Job._await_end as Job.wait did before the announcement: a sleep."""
    if interval > 0:
        time.sleep(interval)
    return sleep


def _ender(url: str, pipe: Connection) -> None:
    store = JobStore(connect(url), 3600)
    while (job := pipe.recv()) is not None:
        job_id, after = job
        time.sleep(after)
        store.begin_finish(job_id)
        store.succeed(job_id, {})
        pipe.send(time.time())


def _spin(until: float) -> None:
    while time.monotonic() < until:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument("--json-out", default="bench-output/wait-wake.json")
    args = parser.parse_args()
    rng = random.Random(19)
    samples: dict[str, list[float]] = {"old": [], "new": []}
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    server = start_redis()
    load_before = os.getloadavg()
    try:
        settings = load_settings(overrides={"redis_url": server.url})
        store = JobStore(connect(server.url), 3600)
        keys = pa.table({"driver_id": pa.array([1, 2], pa.int64())})
        ours, theirs = multiprocessing.Pipe()
        ender = multiprocessing.Process(target=_ender, args=(server.url, theirs))
        ender.start()
        spinners = [multiprocessing.Process(target=_spin, args=(time.monotonic() + 3600,))
                    for _ in range(args.busy)]
        for spinner in spinners:
            spinner.start()
        block = Job._await_end
        try:
            for n in range(args.rounds):
                for way in ("old", "new") if n % 2 == 0 else ("new", "old"):
                    Job._await_end = _sleeping if way == "old" else block  # type: ignore[method-assign]
                    job_id = store.new_job_id()
                    store.create(job_id, {"table": "t"}, iter([keys, keys]))
                    store.mark_running(job_id)
                    store.redis.sadd(f"featurepull:job:{job_id}:done", 0, 1)
                    job = Job(job_id, settings, store)
                    ours.send((job_id, rng.uniform(0.05, 0.25)))
                    cpu_began, began = time.process_time(), time.monotonic()
                    job.wait(timeout=30, progress=False)
                    returned = time.time()
                    waited = time.monotonic() - began
                    samples[way].append((returned - ours.recv()) * 1000)
                    cpu[way].append((time.process_time() - cpu_began) / waited * 1000)
                    store.delete(job_id)
        finally:
            Job._await_end = block  # type: ignore[method-assign]
            ours.send(None)
            ender.join()
            for spinner in spinners:
                spinner.terminate()
    finally:
        server.stop()
    load = (load_before[0], os.getloadavg()[0])
    print(f"load {load[0]:.2f}-{load[1]:.2f}, {args.busy} busy processes, {args.rounds} rounds")
    print("way | end -> wait returned, ms: median | mean | p90 | max | waiter CPU ms per s")
    rows = []
    for way, values in samples.items():
        row = {"way": way, "median_ms": round(statistics.median(values), 2),
               "mean_ms": round(statistics.mean(values), 2),
               "p90_ms": round(statistics.quantiles(values, n=10)[-1], 2),
               "max_ms": round(max(values), 2),
               "cpu_ms_per_s": round(statistics.median(cpu[way]), 2)}
        rows.append(row)
        print(f"{way} | {row['median_ms']} | {row['mean_ms']} | {row['p90_ms']} | "
              f"{row['max_ms']} | {row['cpu_ms_per_s']}")
    with open(args.json_out, "w") as out:
        json.dump({"rounds": args.rounds, "busy": args.busy, "load": load, "rows": rows,
                   "samples_ms": samples}, out, indent=1)
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
