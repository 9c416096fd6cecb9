#!/usr/bin/env python
"""Reads in a row in one process, as a pool process runs its shards: each read's wall time
and the connections the endpoint accepted, trees interleaved, over TCP and over TLS.

    .venv/bin/python scripts/bench_read_repeats.py --tree before=OLD_CHECKOUT --tree after=. \\
        [--keys 3200] [--reads 6] [--rounds 5] [--latency-ms 10] [--modes tcp,tls]

One bench endpoint (``--latency-ms``, 10% of the keys found) for the whole run; over TLS a
TLS-terminating forwarder of the tests (tests/dynamo/forwarder.py, a certificate for
127.0.0.1 signed by a CA made for the run) sits in front of it, in this process. Each run is
a fresh process of a tree (PYTHONPATH) that checks the table, then reads the same ``--keys``
keys ``--reads`` times (32 in flight, 100 keys a request). Prints, per tree and mode, the
medians over rounds of the first read, of the later reads (wall and the process's CPU), and
of the read connections accepted; saves every run as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import ssl
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

TABLE = "repeats.driver_stats"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
CHILD = textwrap.dedent("""
    import json, sys, time
    import boto3
    from featurepull.config import DynamoSettings
    from featurepull.dynamo import BatchReader, FeastLayout
    url, ca, keys, reads, table, features = sys.argv[1:7]
    layout = FeastLayout({"driver_id": "int64"})
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url,
                          verify=ca or None)
    reader = BatchReader(table, layout, DynamoSettings(
        region="us-east-1", endpoint_url=url, max_read_workers=32, batch_size=100),
        client=client)
    reader.check_table()
    print("checked", flush=True)
    sys.stdin.readline()  # the parent counted the connections so far
    ids = layout.keys_for({"driver_id": list(range(int(keys)))})
    seconds, cpu = [], []
    for _ in range(int(reads)):
        started, cpu_started = time.perf_counter(), time.process_time()
        reader.read(ids, features.split(","))
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    print(json.dumps([seconds, cpu]), flush=True)
""")


def run_once(tree: str, url: str, ca: str, args: argparse.Namespace,
             accepted: Any) -> dict[str, Any]:
    """One process of ``tree``: its read times, and the read connections accepted."""
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(Path(tree).resolve())}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, ca, str(args.keys), str(args.reads), TABLE,
         ",".join(FEATURES)], env=env, cwd=tree, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "checked"
    before = accepted()
    child.stdin.write("go\n")
    child.stdin.flush()
    seconds, cpu = json.loads(child.stdout.readline())
    child.wait(60)
    return {"read_s": seconds, "cpu_s": cpu, "connections": accepted() - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True,
                        type=lambda s: tuple(s.split("=", 1)), help="NAME=DIR (repeat)")
    parser.add_argument("--keys", type=int, default=3_200)
    parser.add_argument("--reads", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--modes", default="tcp,tls")
    parser.add_argument("--json-out", default="bench_read_repeats.json")
    args = parser.parse_args()
    from tests.dynamo.forwarder import Forwarder
    from tests.dynamo.test_tls import _certificates

    work = Path(tempfile.mkdtemp(prefix="featurepull-repeats-"))
    ca, cert, key = _certificates(work)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runs: list[dict[str, Any]] = []
    with start_endpoint(drivers=args.keys // 10, table=TABLE,
                        latency_ms=args.latency_ms) as endpoint:
        tls = Forwarder(endpoint.url, context)
        try:
            stats_calls = itertools.count(1)  # each GET /stats is a connection of its own

            def read_connections() -> int:
                return int(endpoint.stats()["connections"]) - next(stats_calls)

            targets = {"tcp": (endpoint.url, "", read_connections),
                       "tls": (tls.url, str(ca), lambda: tls.accepted)}
            for round_no in range(args.rounds):
                trees = args.tree if round_no % 2 == 0 else args.tree[::-1]
                for mode in args.modes.split(","):
                    url, bundle, accepted = targets[mode]
                    for name, tree in trees:
                        run = {"tree": name, "mode": mode, "round": round_no,
                               **run_once(tree, url, bundle, args, accepted)}
                        runs.append(run)
                        print(json.dumps(run), flush=True)
        finally:
            tls.stop()
    report(runs, args)
    Path(args.json_out).write_text(json.dumps(
        {"args": {k: v for k, v in vars(args).items() if k != "tree"},
         "trees": dict(args.tree), "load_average": os.getloadavg(), "runs": runs}, indent=1))
    print(f"saved {args.json_out}")


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{args.keys} keys a read ({args.keys // 100} requests, 32 in flight, "
          f"{args.latency_ms:g} ms), {args.reads} reads a process, medians of "
          f"{args.rounds} rounds; load {os.getloadavg()[0]:.1f}")
    print(f"{'tree':<10}{'mode':<6}{'first read ms':>15}{'later reads ms':>16}"
          f"{'later CPU ms':>14}{'connections':>13}")
    for mode in args.modes.split(","):
        for name, _ in args.tree:
            mine = [r for r in runs if r["tree"] == name and r["mode"] == mode]
            first = statistics.median(r["read_s"][0] for r in mine) * 1e3
            later = statistics.median(statistics.median(r["read_s"][1:]) for r in mine) * 1e3
            cpu = statistics.median(statistics.median(r["cpu_s"][1:]) for r in mine) * 1e3
            opened = statistics.median(r["connections"] for r in mine)
            print(f"{name:<10}{mode:<6}{first:>15.1f}{later:>16.1f}{cpu:>14.1f}"
                  f"{opened:>13g}")


if __name__ == "__main__":
    main()
