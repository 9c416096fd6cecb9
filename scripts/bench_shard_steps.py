#!/usr/bin/env python
"""A pool process's shards one after another, step by step, with the kernel's share: each
shard's time before its read, the read, the time after it (its table, part, rows and stats),
and the shard's thread CPU, system CPU and minor page faults; trees interleaved.

    .venv/bin/python scripts/bench_shard_steps.py --rounds 6 \\
        --tree before=OLD_CHECKOUT --tree after=. [--tree-env after:KEY=VALUE]

Each round, each tree: the bench process stores a job of ``--shards`` shards of 100,000 ids
(10% found, shuffled, a Parquet file output), then a fresh process with that tree's
featurepull first on PYTHONPATH (and ``--tree-env``'s variables) does what a worker's main
process does before its pool forks (builds the app as ``celery -A featurepull.worker``
does, then ``_preload_before_fork``) and a pool process after it,
and runs the shards in order against the bench endpoint (32 in flight, 10 ms). Prints the
mean, median and maximum of each step by tree and shard position, and saves every shard as
JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULT = "SHARD-STEPS "
SHARD = 100_000
_CHILD = r'''
import json, resource, sys, time
import featurepull.worker
featurepull.worker.app  # built as `celery -A featurepull.worker worker` builds it, first
from celery.signals import celeryd_init
from featurepull.worker.app import _preload_before_fork
from featurepull.config import load_settings
from featurepull.dynamo.client import process_client
from featurepull.tasks import shards
from featurepull.tasks.store import JobStore, connect

_preload_before_fork(signal=celeryd_init, sender="bench", instance=None, conf=None, options={})
job_id, count = sys.argv[1], int(sys.argv[2])
settings = load_settings()
shards.reset_process_state()
process_client(settings.dynamodb)
store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
marks = {}

class Log:
    def __init__(self, inner): self.inner = inner
    def info(self, event, **fields):
        marks[event] = (time.perf_counter(), fields.get("seconds"))
        return self.inner.info(event, **fields)
    def __getattr__(self, name): return getattr(self.inner, name)

shards.log = Log(shards.log)
out = []
for shard in range(count):
    marks.clear()
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    started, cpu = time.perf_counter(), time.thread_time()
    shards.run_shard(job_id, shard, settings, store)
    ended, cpu = time.perf_counter(), time.thread_time() - cpu
    after = resource.getrusage(resource.RUSAGE_THREAD)
    (read_start, _), (done, read_s) = marks["shard_start"], marks["shard_done"]
    out.append({"shard": shard, "before_read_s": read_start - started, "read_s": read_s,
                "after_read_s": done - read_start - read_s, "task_s": ended - started,
                "cpu_s": cpu, "sys_s": after.ru_stime - usage.ru_stime,
                "minor_faults": after.ru_minflt - usage.ru_minflt})
print("SHARD-STEPS " + json.dumps(out), flush=True)
'''
FIELDS = ("before_read_s", "read_s", "after_read_s", "task_s", "cpu_s", "sys_s",
          "minor_faults")


def _settings_env(overrides: dict[str, Any], prefix: str = "FEATUREPULL_") -> dict[str, str]:
    """The settings ``overrides`` as the worker reads them: its environment."""
    env: dict[str, str] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            env.update(_settings_env(value, f"{prefix}{key.upper()}__"))
        else:
            env[prefix + key.upper()] = str(value)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=lambda s: tuple(s.split("=", 1)),
                        required=True, help="NAME=DIR, a checkout whose featurepull is run")
    parser.add_argument("--tree-env", action="append", default=[],
                        help="NAME:KEY=VALUE, an environment variable of one tree's runs")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--json-out", default="bench-output/shard-steps.json")
    args = parser.parse_args()
    tree_env: dict[str, dict[str, str]] = {}
    for item in args.tree_env:
        name, _, pair = item.partition(":")
        key, _, value = pair.partition("=")
        tree_env.setdefault(name, {})[key] = value

    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, start_endpoint
    from featurepull.config import load_settings
    from featurepull.local import start_redis
    from featurepull.tasks.create import create_job
    from featurepull.tasks.requests import JobRequest
    from featurepull.tasks.store import JobStore, connect

    work = Path(tempfile.mkdtemp(prefix="featurepull-shard-steps-"))
    size = SHARD * args.shards
    known = size // 10
    ids = list(range(known)) + [10_000_000 + i for i in range(size - known)]
    random.Random(1).shuffle(ids)
    entities = work / "ids.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), entities)
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    os.environ.update(credentials)
    redis_service = start_redis()
    runs: list[dict[str, Any]] = []
    try:
        with start_endpoint(drivers=known, latency_ms=10.0) as endpoint:
            project, view = DEFAULT_TABLE.split(".")
            overrides = {"redis_url": redis_service.url, "project": project,
                         "dynamodb": {"endpoint_url": endpoint.url, "region": "us-east-1",
                                      "max_read_workers": 32, "read_mode": "batch-get"},
                         "jobs": {"shard_size": SHARD}}
            settings = load_settings(overrides=overrides)
            store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
            for round_ in range(args.rounds):
                trees = args.tree if round_ % 2 == 0 else list(reversed(args.tree))
                for name, tree in trees:
                    output = work / f"{name}-{round_}.parquet"
                    meta = create_job(JobRequest(table=view, features=list(FEATURES),
                                                 entities=str(entities), output=str(output)),
                                      settings, store)
                    env = {**os.environ, **_settings_env(overrides),
                           "PYTHONPATH": str(Path(tree).resolve()), **tree_env.get(name, {})}
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, meta.job_id, str(meta.shards)],
                        env=env, cwd=work, capture_output=True, text=True, check=True).stdout
                    line = next(x for x in out.splitlines() if x.startswith(RESULT))
                    for shard in json.loads(line[len(RESULT):]):
                        run = {"tree": name, "round": round_, **shard,
                               "load_average": os.getloadavg()[0]}
                        runs.append(run)
                    print(json.dumps(runs[-meta.shards:]), flush=True)
    finally:
        redis_service.stop()
    names = [name for name, _ in args.tree]
    print(f"{'mean / median / max, ms (faults: count)':44}" + "".join(
        f" | {n:>20}" for n in names))
    for position in ("first", "later"):
        for field in FIELDS:
            cells = []
            for n in names:
                values = [r[field] for r in runs if r["tree"] == n
                          and (r["shard"] == 0) == (position == "first")]
                scale = 1 if field == "minor_faults" else 1000
                cells.append(f"{statistics.mean(values) * scale:.0f} / "
                             f"{statistics.median(values) * scale:.0f} / "
                             f"{max(values) * scale:.0f}")
            print(f"{position + ' shards: ' + field:44}" + "".join(
                f" | {c:>20}" for c in cells))
    loads = [r["load_average"] for r in runs]
    print(f"load average {min(loads):.1f}-{max(loads):.1f}")
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(runs, indent=1))
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
