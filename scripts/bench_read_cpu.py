#!/usr/bin/env python
"""CPU per BatchGetItem request of a worker shard's read, in one process, trees interleaved:

    .venv/bin/python scripts/bench_read_cpu.py --rounds 6 \\
        --tree before=OLD_CHECKOUT --tree after=. [--reads 8] [--keys 100000]

One bench endpoint (10 ms, Feast layout, 5 features) for the whole run. Each round runs, for
each tree (order alternating), a fresh process of that tree (PYTHONPATH) that reads the same
``--keys`` distinct ids ``--reads`` times on its kept loop, as a pool process reads its
shards: 100 keys a request, 32 in flight, one id in ten found in every request, a progress
callback per answer. Per read: wall and the process's CPU (``time.process_time``); the
first read (connects, first decode of each kind) is left out. Prints the medians of the
later reads' CPU per request per tree, the paired ratio by round, the load average, and
saves every read as JSON (``--json-out``).

``--instructions`` counts instead, under valgrind's cachegrind (load-independent, user
space only: the kernel's part of a send or a poll is not counted): a process of each tree
reading once and one reading twice; their difference over the second read's requests.

``--profile DIR`` runs one process of each tree under py-spy (``--py-spy PATH``) instead,
sampling at 1 kHz, and prints each tree's top functions by own samples.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from featurepull.bench.endpoint import FEATURES, start_endpoint  # noqa: E402

TABLE = "readcpu.driver_stats"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
CHILD = textwrap.dedent("""
    import json, sys, time
    import pyarrow as pa
    from featurepull.config import DynamoSettings
    from featurepull.dynamo import BatchReader, FeastLayout
    from featurepull.dynamo.layouts import unique_keys
    url, keys, reads, table, features = sys.argv[1:6]
    keys, reads = int(keys), int(reads)
    layout = FeastLayout({"driver_id": "int64"})
    reader = BatchReader(table, layout, DynamoSettings(
        region="us-east-1", endpoint_url=url, max_read_workers=32, batch_size=100))
    reader.check_table()
    # One id in ten exists (drivers 0 .. keys/10 - 1), spread over every request.
    ids = pa.array([i // 10 if i % 10 == 0 else 50_000_000 + i for i in range(keys)],
                   pa.int64())
    unique, positions = unique_keys(layout, {"driver_id": ids}, "bench", 0)
    unique = list(unique)
    seconds, cpu, found, requests = [], [], [], []
    answered = 0

    def progress(n):
        global answered
        answered += n
        time.monotonic()

    for _ in range(reads):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = reader.read(unique, features.split(","), progress=progress,
                             positions=positions)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        found.append(result.stats.found)
        requests.append(result.stats.requests)
    print(json.dumps({"read_s": seconds, "cpu_s": cpu, "found": found,
                      "requests": requests}), flush=True)
""")


def run_once(tree: str, url: str, args: argparse.Namespace,
             wrap: list[str] | None = None) -> dict[str, Any]:
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(Path(tree).resolve())}
    out = subprocess.run(
        [*(wrap or []), sys.executable, "-c", CHILD, url, str(args.keys), str(args.reads),
         TABLE, ",".join(FEATURES)], env=env, cwd=tree, stdout=subprocess.PIPE, text=True,
        check=True, timeout=600)
    line = [text for text in out.stdout.splitlines() if text.startswith("{")][-1]
    return dict(json.loads(line))


def per_request_us(run: dict[str, Any]) -> float:
    """The median of the later reads' CPU per request, µs."""
    return statistics.median(cpu / n * 1e6 for cpu, n in
                             zip(run["cpu_s"][1:], run["requests"][1:], strict=True))


def instructions(url: str, args: argparse.Namespace) -> None:
    """Instructions per request of a later read, per tree (two processes each)."""
    out = Path(tempfile.mkdtemp(prefix="featurepull-readcpu-"))
    for round_no in range(args.rounds):
        for name, tree in args.tree if round_no % 2 == 0 else args.tree[::-1]:
            counts = []
            for reads in (1, 2):
                log = out / f"{name}-{round_no}-{reads}.log"
                wrap = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                        f"--cachegrind-out-file={out}/cg.out", f"--log-file={log}"]
                run = run_once(tree, url, argparse.Namespace(keys=args.keys, reads=reads),
                               wrap)
                text = log.read_text()
                found = re.search(r"I\s+refs:\s+([\d,]+)", text)
                assert found, f"no instruction count in {log}"
                counts.append(int(found.group(1).replace(",", "")))
            per = (counts[1] - counts[0]) / run["requests"][-1]
            print(json.dumps({"tree": name, "round": round_no, "instructions": counts,
                              "per_request": round(per)}), flush=True)


def profile(url: str, args: argparse.Namespace) -> None:
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    for name, tree in args.tree:
        raw = out / f"{name}.txt"
        run_once(tree, url, args, [args.py_spy, "record", "-r", "1000", "-f", "raw",
                                   "-o", str(raw), "--"])
        own: collections.Counter[str] = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            own[frames[-1]] += int(count)
            total += int(count)
        print(f"\n{name}: {total} samples; top functions by own samples")
        for frame, count in own.most_common(args.top):
            print(f"{count / total * 100:6.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True,
                        type=lambda s: tuple(s.split("=", 1)), help="NAME=DIR (repeat)")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--json-out", default="bench_read_cpu.json")
    parser.add_argument("--profile", metavar="DIR", help="py-spy each tree once instead")
    parser.add_argument("--py-spy", default="py-spy")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under cachegrind instead")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with start_endpoint(drivers=args.keys // 10, table=TABLE,
                        latency_ms=args.latency_ms) as endpoint:
        if args.profile:
            profile(endpoint.url, args)
            return
        if args.instructions:
            instructions(endpoint.url, args)
            return
        for round_no in range(args.rounds):
            trees = args.tree if round_no % 2 == 0 else args.tree[::-1]
            for name, tree in trees:
                run = {"tree": name, "round": round_no, "load": os.getloadavg()[0],
                       **run_once(tree, endpoint.url, args)}
                run["cpu_us_per_request"] = per_request_us(run)
                runs.append(run)
                print(json.dumps({k: run[k] for k in ("tree", "round", "load",
                                                       "cpu_us_per_request")}), flush=True)
    print(f"\n{args.keys} keys a read, {args.reads} reads a process (the first left out), "
          f"{args.rounds} rounds; load {os.getloadavg()[0]:.1f}")
    print(f"{'tree':<10}{'CPU µs/request':>16}{'read ms':>10}{'found':>8}")
    by_tree: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_tree.setdefault(run["tree"], []).append(run)
    for name, mine in by_tree.items():
        cpu = statistics.median(r["cpu_us_per_request"] for r in mine)
        wall = statistics.median(s for r in mine for s in r["read_s"][1:]) * 1e3
        print(f"{name:<10}{cpu:>16.1f}{wall:>10.1f}{mine[0]['found'][-1]:>8}")
    names = [name for name, _ in args.tree]
    if len(names) == 2:
        first, second = (by_tree[n] for n in names)
        ratios = [b["cpu_us_per_request"] / a["cpu_us_per_request"]
                  for a, b in zip(first, second, strict=True)]
        print(f"{names[1]} / {names[0]} CPU per request, paired by round: median "
              f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    Path(args.json_out).write_text(json.dumps(
        {"args": {k: v for k, v in vars(args).items() if k != "tree"},
         "trees": dict(args.tree), "load_average": os.getloadavg(), "runs": runs}, indent=1))
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
