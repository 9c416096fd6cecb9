#!/usr/bin/env python
"""CPU the bench endpoint spends per BatchGetItem request, for one or more source trees.

    .venv/bin/python scripts/bench_endpoint.py                      # this tree, ~1 minute
    .venv/bin/python scripts/bench_endpoint.py --tree before=OLD_CHECKOUT --tree after=. \\
        --rounds 3 --json-out bench-output/bench_endpoint.json

The endpoint (``python -m featurepull.bench.endpoint`` imported from each tree) stands in for
DynamoDB, which would spend none of our CPU; on a 2-core machine what it spends is taken from
the contenders. This script sends it the requests of the 1M-id bench cells — ``--requests``
BatchGetItem calls of 100 keys, ``--found`` of them existing, the Feast layout's projection,
signed as the fast transport signs them — from ``--in-flight`` keep-alive connections, and
reads the endpoint's CPU time (user + system, from /proc) around them. The requests are
signed and the answers read by a plain asyncio client in this process. Trees are
interleaved round by round; every tree must send back the same answer bytes (digest shown).

Prints a table and writes JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from botocore.credentials import Credentials

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, SyntheticTable
from featurepull.dynamo.transport import TARGET, post_signer

KEYS_PER_REQUEST = 100
ROOT = Path(__file__).resolve().parents[1]


def request_bodies(drivers: int, requests: int, found: float, seed: int) -> list[bytes]:
    """BatchGetItem bodies as the reader sends them: 100 distinct keys each, ``found`` of
    them drivers the endpoint has, the rest ids it has not."""
    rng = random.Random(seed)
    table = SyntheticTable(0)
    names = {"#k": "entity_id", "#t": "event_ts", "#v": "values"}
    names.update({f"#f{i}": name for i, name in enumerate(FEATURES)})
    paths = ", ".join(["#k", "#t", *(f"#v.#f{i}" for i in range(len(FEATURES)))])
    total = requests * KEYS_PER_REQUEST
    present = int(total * found)
    picks = [rng.randrange(drivers) for _ in range(present)]
    picks += [drivers + n for n in range(total - present)]  # never in the table
    rng.shuffle(picks)
    bodies = []
    for start in range(0, total, KEYS_PER_REQUEST):
        ids = dict.fromkeys(table.entity_id(d) for d in picks[start:start + KEYS_PER_REQUEST])
        spec = {"Keys": [{"entity_id": {"S": i}} for i in ids],
                "ProjectionExpression": paths, "ExpressionAttributeNames": names}
        bodies.append(json.dumps({"RequestItems": {DEFAULT_TABLE: spec},
                                  "ReturnConsumedCapacity": "TOTAL"},
                                 separators=(",", ":")).encode())
    return bodies


def start(tree: Path, drivers: int, latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    """The endpoint of ``tree`` in a subprocess, and its URL once it listens."""
    # -m puts the working folder first on sys.path: the tree's own package is imported.
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    process = subprocess.Popen(
        [sys.executable, "-m", "featurepull.bench.endpoint", "--port", "0", "--drivers",
         str(drivers), "--latency-ms", str(latency_ms)], cwd=tree, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("LISTENING "):
        process.kill()
        raise SystemExit(f"the endpoint of {tree} printed {line!r}")
    return process, line.split()[1]


async def _one_connection(url: str, requests: list[bytes], answers: list[bytes],
                          order: list[int]) -> None:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    for index in order:
        writer.write(requests[index])
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200 "):
            raise SystemExit(f"answer {head!r} {body[:300]!r}")
        answers[index] = body
    writer.close()


async def _send_all(url: str, requests: list[bytes], in_flight: int) -> list[bytes]:
    answers = [b""] * len(requests)
    lanes = [list(range(lane, len(requests), in_flight)) for lane in range(in_flight)]
    await asyncio.gather(*(_one_connection(url, requests, answers, lane) for lane in lanes))
    return answers


def signed(url: str, bodies: list[bytes]) -> list[bytes]:
    signer = post_signer(url, "us-east-1", TARGET)
    credentials = Credentials("AKIDBENCHENDPOINT", "secret")
    return [signer.request(body, credentials) for body in bodies]


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user), float(times.system)


def measure(tree: Path, args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    """One round of one tree: the endpoint's CPU over the requests, and the answers' digest."""
    process, url = start(tree, args.drivers, args.latency_ms)
    try:
        asyncio.run(_send_all(url, signed(url, bodies[:200]), args.in_flight))  # warm up
        requests = signed(url, bodies)
        before, started = cpu_times(process.pid), time.perf_counter()
        answers = asyncio.run(_send_all(url, requests, args.in_flight))
        wall, after = time.perf_counter() - started, cpu_times(process.pid)
        user, system = after[0] - before[0], after[1] - before[1]
        cpu = user + system
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"cpu_s": round(cpu, 3), "user_s": round(user, 3), "system_s": round(system, 3),
            "wall_s": round(wall, 3),
            "cpu_us_per_request": round(cpu / len(bodies) * 1e6, 1),
            "answers_sha256": hashlib.sha256(b"\0".join(answers)).hexdigest()[:16],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tree", action="append", default=[],
                        help="NAME=PATH of a checkout to import the endpoint from (repeat)")
    parser.add_argument("--drivers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--found", type=float, default=0.1)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    # This script's own checkout, wherever it is run from (`-m` imports from the tree's folder).
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(ROOT)}
    bodies = request_bodies(args.drivers, args.requests, args.found, args.seed)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, path in trees.items():
            result = measure(Path(path), args, bodies)
            runs[name].append(result)
            print(f"round {round_ + 1} {name}: {result}", file=sys.stderr, flush=True)
    print(f"\n{args.requests:,} BatchGetItem x {KEYS_PER_REQUEST} keys, {args.found:.0%} found, "
          f"{args.in_flight} in flight, {args.latency_ms:g} ms latency, {args.drivers:,} "
          f"drivers; load {os.getloadavg()[0]:.1f}\n")
    print("| tree | endpoint CPU s (median) | µs / request | all rounds (CPU s) | answers |")
    print("|---|--:|--:|---|---|")
    summary = {}
    for name, results in runs.items():
        cpu = statistics.median(r["cpu_s"] for r in results)
        digests = sorted({r["answers_sha256"] for r in results})
        summary[name] = {"cpu_s_median": cpu,
                         "cpu_us_per_request": round(cpu / args.requests * 1e6, 1),
                         "rounds": results}
        print(f"| {name} | {cpu:.2f} | {cpu / args.requests * 1e6:.0f} | "
              f"{', '.join(str(r['cpu_s']) for r in results)} | {', '.join(digests)} |")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": platform.platform(), "cpus": os.cpu_count(),
            "load_after": os.getloadavg(), "trees": trees, "results": summary}, indent=1))


if __name__ == "__main__":
    main()
