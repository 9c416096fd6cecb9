#!/usr/bin/env python
"""A job's shards after their reads, and its finisher, in one process (no Celery), trees
interleaved:

    .venv/bin/python scripts/bench_shard_tail.py --rounds 6 \\
        --tree before=OLD_CHECKOUT --tree after=. [--json-out FILE] [--profile DIR]

Each round runs, for each tree, a process (that tree's featurepull first on PYTHONPATH) that
creates a job of ``--shards`` shards of 100,000 ids (10% found, shuffled; batch-get, the
whole-process bench's table and features) with a local Parquet output against a 10 ms
endpoint, runs ``run_shard`` for each, then ``finish_job``. Per shard (its first, a warm-up,
left out): ``after_read`` = the read's return to ``run_shard``'s (the shard's table, its
part, its rows and stats stored, metrics, the log line), wall and main-thread CPU; then the
finisher's wall and CPU; the thread CPU of the steps in ``STEPS``. Prints medians, the
outputs' SHA-256 and their tables' read back (schema, metadata, values: every tree must write
the same table; a change of encoding changes the bytes), their sizes, and saves every figure
as JSON. ``--profile DIR``: a cProfile of every shard's after-read
and of the finisher, per tree, in DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SHARD = 100_000
FIELDS = ("after_read", "after_read_cpu")
# Steps of after_read timed by wrappers (thread CPU): the shard's table, its part, its rows
# and stats stored, the metrics.
STEPS = ("table", "part", "stored", "metrics")
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def child(redis_url: str, endpoint_url: str, shards: int, workdir: str, profile: str) -> None:
    """Run the job in this process; print one JSON line of its figures."""
    import cProfile
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES
    from featurepull.config import load_settings
    from featurepull.dynamo import BatchReader
    from featurepull.tasks.create import create_job
    from featurepull.tasks.finish import finish_job
    from featurepull.tasks.requests import JobRequest
    from featurepull.tasks.shards import run_shard
    from featurepull.tasks.store import JobStore, connect

    profiler = cProfile.Profile() if profile else None
    read_end: list[tuple[float, float]] = []
    plain_read = BatchReader.read

    def timed_read(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return plain_read(self, *args, **kwargs)
        finally:
            read_end.append((time.perf_counter(), time.thread_time()))
            if profiler is not None:
                profiler.enable()

    BatchReader.read = timed_read  # type: ignore[method-assign]
    steps: dict[str, list[float]] = {}

    def timed_step(owner: Any, attr: str, name: str) -> None:
        """Wrap ``owner.attr``: its wall and thread CPU in the current shard's ``steps``."""
        plain = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return plain(*args, **kwargs)
            finally:
                steps[name] = [time.perf_counter() - wall, time.thread_time() - cpu]

        setattr(owner, attr, timed)

    import featurepull.tasks.shards as shards_module
    from featurepull.io.parts import StagedOutput

    timed_step(shards_module, "shard_table", "table")
    timed_step(StagedOutput, "write_part", "part")
    timed_step(JobStore, "shard_stored", "stored")
    timed_step(shards_module.metrics, "record_shard", "metrics")
    project, view = DEFAULT_TABLE.split(".")
    settings = load_settings(overrides={
        "redis_url": redis_url, "project": project,
        "dynamodb": {"endpoint_url": endpoint_url, "region": "us-east-1",
                     "max_read_workers": 32, "read_mode": "batch-get"},
        "jobs": {"shard_size": SHARD}})
    store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
    found = SHARD * shards // 10
    ids = list(range(found)) + list(range(5_000_000, 5_000_000 + SHARD * shards - found))
    random.Random(7).shuffle(ids)
    path = os.path.join(workdir, "ids.parquet")
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    output = os.path.join(workdir, "out.parquet")
    meta = create_job(JobRequest(table=view, features=list(FEATURES), entities=path,
                                 output=output), settings, store)
    out: dict[str, Any] = {"shards": []}
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
        wall, cpu = time.perf_counter(), time.thread_time()
        if profiler is not None:
            profiler.disable()
        out["shards"].append({"after_read": wall - read_end[-1][0],
                              "after_read_cpu": cpu - read_end[-1][1],
                              **{f"{name}_cpu": spent[1] for name, spent in steps.items()}})
        steps.clear()
    if profiler is not None:
        profiler.dump_stats(profile + ".after_read")
        profiler = cProfile.Profile()
        profiler.enable()
    wall, cpu = time.perf_counter(), time.thread_time()
    summary = finish_job(meta.job_id, settings, store)
    out["finish"] = time.perf_counter() - wall
    out["finish_cpu"] = time.thread_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile + ".finish")
    assert summary is not None and summary["rows_written"] == len(ids), summary
    with open(output, "rb") as written:
        out["sha256"] = hashlib.sha256(written.read()).hexdigest()
    out["bytes"] = os.path.getsize(output)
    # The table read back (schema, metadata and values), whatever its encodings.
    table = pq.read_table(output).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    out["table_sha256"] = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--json-out", default="shard_tail.json")
    parser.add_argument("--profile", default="", help="a folder for cProfile files")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        redis_url, endpoint_url, shards, workdir, profile = args.child
        child(redis_url, endpoint_url, int(shards), workdir, profile)
        return
    from featurepull.bench.endpoint import start_endpoint
    from featurepull.local import start_redis

    trees = dict(spec.split("=", 1) for spec in args.tree)
    results: dict[str, dict[str, list[Any]]] = {
        name: {"shards": [], "finish": [], "finish_cpu": [], "sha256": [], "table_sha256": [],
               "bytes": []} for name in trees}
    loads = []
    redis = start_redis()
    try:
        with start_endpoint(drivers=args.shards * SHARD // 10, latency_ms=10) as endpoint:
            for round_no in range(args.rounds):
                order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
                for name in order:
                    tree = os.path.abspath(trees[name])
                    profile = (os.path.join(os.path.abspath(args.profile), f"{name}-{round_no}")
                               if args.profile else "")
                    with tempfile.TemporaryDirectory() as workdir:
                        done = subprocess.run(
                            [sys.executable, os.path.abspath(__file__), "--tree", "x=.",
                             "--child", redis.url, endpoint.url, str(args.shards), workdir,
                             profile],
                            env={**os.environ, **AWS_ENV, "PYTHONPATH": tree}, cwd=workdir,
                            capture_output=True, text=True, check=False)
                    if done.returncode:
                        sys.exit(f"{name}: {done.stderr[-3000:]}")
                    got = json.loads(done.stdout.strip().splitlines()[-1])
                    shards = got["shards"][1:]  # the first: a warm-up
                    mine = results[name]
                    mine["shards"] += shards
                    for key in ("finish", "finish_cpu", "sha256", "table_sha256", "bytes"):
                        mine[key].append(got[key])
                    loads.append(os.getloadavg()[0])
                    print(f"{name} round {round_no}: load {loads[-1]:.2f}, after_read ms "
                          f"{[round(s['after_read'] * 1000, 1) for s in shards]}, finisher "
                          f"{got['finish'] * 1000:.1f} ms ({got['finish_cpu'] * 1000:.1f} CPU)",
                          flush=True)
    finally:
        redis.stop()
    print("medians, ms | after_read | its CPU | finisher | its CPU")
    for name, mine in results.items():
        print(f"{name} ({len(mine['shards'])} shards, {len(mine['finish'])} jobs) | " + " | ".join(
            [*(f"{statistics.median(s[f] for s in mine['shards']) * 1000:.1f}" for f in FIELDS),
             f"{statistics.median(mine['finish']) * 1000:.1f}",
             f"{statistics.median(mine['finish_cpu']) * 1000:.1f}"]))
    print("medians, CPU ms | " + " | ".join(STEPS))
    for name, mine in results.items():
        print(f"{name} | " + " | ".join(
            f"{statistics.median(s.get(f'{step}_cpu', 0.0) for s in mine['shards']) * 1000:.1f}"
            for step in STEPS))
    for what, key in (("bytes", "sha256"), ("tables read back", "table_sha256")):
        digests = {digest for mine in results.values() for digest in mine[key]}
        print(f"outputs' {what}: {'all the same' if len(digests) == 1 else 'DIFFER'} "
              f"({', '.join(sorted(d[:12] for d in digests))})")
    print("output bytes: " + ", ".join(f"{name} {sorted(set(mine['bytes']))}"
                                       for name, mine in results.items()))
    print(f"load {min(loads):.2f}-{max(loads):.2f}")
    with open(args.json_out, "w") as out:
        json.dump({"trees": results, "load": loads}, out)
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
