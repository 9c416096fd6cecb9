#!/usr/bin/env python
"""Benchmark featurepull against the seed algorithm (Feast's DynamoDB ``online_read``) and
the raw HTTP floor, on one local endpoint and the same entities.

    .venv/bin/python scripts/bench.py --quick                  # under a minute
    .venv/bin/python scripts/bench.py --sizes 10000,100000 --threads 1,10,32 \\
        --latencies 10 --json-out bench-output/bench.json

For each latency the lean BatchGetItem endpoint (``featurepull.bench.endpoint``, 5 Feast
features per item) is started with as many drivers as the largest size; each size's entity
file (90% known drivers, 10% unknown ids, shuffled, no repeats — Feast's batches refuse
duplicate keys) is written once and read by every method. Every cell runs in a fresh process
(``scripts/bench_methods.py``), so its CPU seconds and peak RSS are its own. Methods:

    baseline_sequential  Feast's online_read: 100-key batches one after another, boto3
                         resource API, Value protobufs, no UnprocessedKeys retry
    baseline_threaded    the same over ThreadPoolExecutor(T) sharing one resource
    raw_floor            POST + json.loads per batch, keep-alive per thread, nothing else
    featurepull_pull     featurepull.pull.pull: Parquet in, ordered Parquet out
    celery_1, celery_2   featurepull.client.submit(...).wait() to one prefork worker
                         instance of 1 or 2 processes (started before the timer)

When featurepull has a ``dynamodb.transport`` setting, featurepull_pull and celery_N run
once per transport (``featurepull_pull[fast]``, ...; ``--transports`` narrows it).
``--transports fast,aiohttp`` adds ``featurepull_pull[aiohttp]``: the fast transport with
aiohttp's HTTP client in place of featurepull's own (``scripts/bench_aiohttp.py``).

Cells estimated to take longer than ``--max-seconds-per-cell`` (from the same method at a
smaller size, else from a latency/CPU model), and cells that are pointless (more threads
than requests; more processes than shards), are recorded as skipped with the reason.
``--only SIZE[@LATENCYms]=METHOD[@THREADS],...`` limits which cells run at a size.

Prints a table and the speed targets, writes JSON (``--json-out``) and a PNG of rows/s
against threads at ``--plot-size`` (needs matplotlib: ``pip install -e '.[bench]'``).
MB means MiB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.config import DynamoSettings

SCRIPTS = Path(__file__).resolve().parent
METHODS_SCRIPT = SCRIPTS / "bench_methods.py"
RESULT_PREFIX = "BENCH-RESULT "  # bench_methods.py's last line
BATCH_KEYS = 100
METHODS = ("baseline_sequential", "baseline_threaded", "raw_floor", "featurepull_pull",
           "celery_1", "celery_2")
ENDPOINT_TIMEOUT_S = 900.0
KNOWN_SHARE = 0.9
# Dummy credentials: the endpoint accepts anything, and real ones must never be used here.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
# For estimating a cell with nothing smaller measured: client CPU seconds per key, and
# seconds before the first request (imports are outside the timer; client set-up is not).
PRIOR_CPU_PER_KEY_S = {"baseline": 120e-6, "raw_floor": 10e-6, "featurepull_pull": 40e-6,
                       "celery": 50e-6}
PRIOR_STARTUP_S = {"baseline": 0.3, "raw_floor": 0.0, "featurepull_pull": 0.3, "celery": 0.5}
TARGET_THREADS = 10
# Transports only the benchmark has, for featurepull_pull cells when --transports names them:
# aiohttp is the fast transport on aiohttp's HTTP client (scripts/bench_aiohttp.py).
BENCH_ONLY_TRANSPORTS = ("aiohttp",)
ONLY_NOTE = "(--only)"
TARGETS = {  # name: (what, limit)
    "pull_time_vs_floor": ("featurepull pull time / raw floor time at 10 threads", 1.3),
    "pull_speedup_vs_threaded_baseline": ("threaded baseline time / featurepull pull time "
                                          "at 10 threads", 4.0),
    "celery_2_speedup_vs_threaded_baseline": ("threaded baseline time / Celery 2 workers "
                                              "time at 10 threads", 6.0),
    "celery_2_worker_peak_rss_mb": ("peak RSS of a worker process on the largest job (MB)",
                                    300.0),
}
DEFINITIONS = {
    "wall_s": "seconds from the method's first step to its last: client set-up, key hashing, "
              "reads and decoding; featurepull also reads the entity Parquet and writes the "
              "output Parquet; celery_N is submit() to Job.wait() returning, the ordered "
              "output written (the worker is started and ready before the timer)",
    "rows_per_s": "entities / wall_s",
    "cpu_s": "user+sys CPU seconds of the process doing the work, all its threads; "
             "celery_N: the worker's main process + its pool children (from "
             "psutil) + the submitting process; redis-server in details",
    "peak_rss_mb": "VmHWM of the process doing the work (fresh per cell, imports included); "
                   "celery_N: the largest pool child",
    "endpoint_cpu_s": "CPU seconds the local endpoint spent on the cell (it shares the "
                      "machine's cores with the client)",
}


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One measurement: a method at a size, thread count and latency."""

    method: str  # as in bench_methods.py; celery_N → "celery" with processes N
    size: int
    threads: int
    latency_ms: float
    processes: int = 1
    transport: str | None = None
    status: str = "pending"  # ok | skipped | failed
    reason: str = ""
    wall_s: float | None = None
    rows_per_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    endpoint_cpu_s: float | None = None
    rows: int | None = None
    found: int | None = None
    expected_found: int | None = None
    estimate_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The method's name in tables and --only: celery_2, featurepull_pull, ..."""
        return f"celery_{self.processes}" if self.method == "celery" else self.method

    @property
    def label(self) -> str:
        return self.name + (f"[{self.transport}]" if self.transport else "")

    def record(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, **asdict(self)}


def available_transports() -> list[str | None]:
    """featurepull's transports, when it has a ``dynamodb.transport`` setting ([None] if not)."""
    setting = DynamoSettings.model_fields.get("transport")
    if setting is None:
        return [None]
    values = [str(v) for v in typing.get_args(setting.annotation) if isinstance(v, str)]
    default = str(setting.default) if isinstance(setting.default, str) else None
    ordered = ([default] if default in values else []) + [v for v in values if v != default]
    return list(ordered) or [default]


def chosen_transports(args: argparse.Namespace) -> list[str | None]:
    """The transports to run: featurepull's (all, or those --transports names), and the
    benchmark's own when --transports names them."""
    transports = available_transports()
    if not args.transports:
        return transports
    transports += [t for t in BENCH_ONLY_TRANSPORTS if t in args.transports]
    wrong = sorted(set(args.transports) - {str(t) for t in transports})
    if wrong:
        raise SystemExit(f"bench: featurepull has no transport {', '.join(wrong)} "
                         f"(it has: {', '.join(map(str, transports))})")
    return [t for t in transports if t in args.transports]


def plan_cells(args: argparse.Namespace, latency: float, size: int,
               transports: Sequence[str | None]) -> list[Cell]:
    """Every cell of one size at one latency, in running order."""
    cells: list[Cell] = []
    methods: list[str] = args.methods
    if "baseline_sequential" in methods:
        cells.append(Cell("baseline_sequential", size, 1, latency))
    for method in ("baseline_threaded", "raw_floor"):
        if method in methods:
            cells += [Cell(method, size, t, latency) for t in args.threads]
    for transport in transports:
        if "featurepull_pull" in methods:
            cells += [Cell("featurepull_pull", size, t, latency, transport=transport)
                      for t in args.threads]
        for processes in args.celery_processes:
            if f"celery_{processes}" in methods and transport not in BENCH_ONLY_TRANSPORTS:
                cells += [Cell("celery", size, t, latency, processes, transport)
                          for t in args.celery_threads]
    return cells


def shard_size(size: int, args: argparse.Namespace) -> int:
    """Entities per shard: the cap, or fewer so every pool process gets two shards."""
    processes: int = max(args.celery_processes, default=1)
    cap: int = args.shard_size
    return max(100, min(cap, math.ceil(size / (2 * processes))))


def pointless(cell: Cell, args: argparse.Namespace) -> str | None:
    requests = math.ceil(cell.size / BATCH_KEYS)
    if cell.threads > requests:
        return (f"{cell.threads} threads for {requests} requests: at most {requests} can be "
                "busy, the same as fewer threads")
    if cell.method == "celery":
        shards = math.ceil(cell.size / shard_size(cell.size, args))
        if cell.processes > shards:
            return f"{cell.processes} worker processes for {shards} shard(s)"
    return None


def not_selected(cell: Cell, only: dict[tuple[int, float | None], set[str]]) -> str | None:
    """Why --only leaves this cell out (None when it runs)."""
    chosen = only.get((cell.size, cell.latency_ms), only.get((cell.size, None)))
    if chosen is None:
        return None
    names = {cell.name, cell.label}
    if any(n in chosen or f"{n}@{cell.threads}" in chosen for n in names):
        return None
    return f"not selected for {cell.size:,} entities {ONLY_NOTE}"


def estimate_s(cell: Cell, done: Sequence[Cell]) -> float:
    """Seconds the cell will likely take: scaled from the same method at the largest
    smaller size measured, else from the latency and a per-key CPU prior."""
    same = [c for c in done if c.status == "ok" and c.label == cell.label
            and c.threads == cell.threads and c.latency_ms == cell.latency_ms
            and c.size < cell.size and c.rows_per_s]
    if same:
        nearest = max(same, key=lambda c: c.size)
        return cell.size / float(nearest.rows_per_s or 1.0)
    kind = "baseline" if cell.method.startswith("baseline") else cell.method
    requests = math.ceil(cell.size / BATCH_KEYS)
    waiting = requests * cell.latency_ms / 1000 / min(cell.threads, requests)
    cpu = cell.size * PRIOR_CPU_PER_KEY_S[kind] / cell.processes
    return PRIOR_STARTUP_S[kind] + max(waiting, cpu)


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------


def entity_ids(size: int, drivers: int, seed: int) -> list[int]:
    """90% known drivers and 10% unknown ids, shuffled, each once."""
    rng = random.Random(seed)
    known = rng.sample(range(drivers), int(size * KNOWN_SHARE))
    ids = known + [drivers + i for i in range(size - len(known))]
    rng.shuffle(ids)
    return ids


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def run_cell(cell: Cell, endpoint: EndpointProcess, entities: Path,
             args: argparse.Namespace) -> None:
    """Measure one cell in a fresh bench_methods.py process and record what it reports."""
    spec = {"method": cell.method, "size": cell.size, "threads": cell.threads,
            "endpoint_url": endpoint.url, "entities": str(entities), "workdir": "",
            "transport": cell.transport, "processes": cell.processes,
            "shard_size": shard_size(cell.size, args), "timeout_s": args.cell_timeout}
    before = cpu_seconds(endpoint.process.pid)
    process = subprocess.Popen([sys.executable, str(METHODS_SCRIPT), json.dumps(spec)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=args.cell_timeout)
    except BaseException:  # a timeout or Ctrl-C: let the cell stop its worker and redis
        process.terminate()
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        raise
    cell.endpoint_cpu_s = round(cpu_seconds(endpoint.process.pid) - before, 2)
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        cell.status = "failed"
        cell.reason = f"exit code {process.returncode}: {stderr.strip()[-2000:]}"
        return
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    cell.status = "ok"
    cell.wall_s = round(result["wall_s"], 3)
    cell.rows_per_s = round(cell.size / result["wall_s"])
    cell.cpu_s = result["cpu_s"]
    cell.peak_rss_mb = result["peak_rss_mb"]
    cell.rows, cell.found = result["rows"], result["found"]
    cell.details = result["details"]
    if cell.rows != cell.size or cell.found != cell.expected_found:
        cell.status = "failed"
        cell.reason = (f"wrong answer: {cell.rows} rows, {cell.found} found; expected "
                       f"{cell.size} rows, {cell.expected_found} found")


def run_latency(latency: float, args: argparse.Namespace, files: dict[int, Path],
                transports: Sequence[str | None], cells: list[Cell]) -> None:
    """Every size at one latency, on a fresh endpoint."""
    drivers = max(args.sizes)
    log(f"starting the endpoint: {drivers:,} drivers, {latency:g} ms latency")
    with start_endpoint(drivers=drivers, latency_ms=latency,
                        timeout=ENDPOINT_TIMEOUT_S) as endpoint:
        for size in sorted(args.sizes):
            for cell in plan_cells(args, latency, size, transports):
                cells.append(cell)
                cell.expected_found = int(size * KNOWN_SHARE)
                reason = pointless(cell, args) or not_selected(cell, args.only)
                cell.estimate_s = round(estimate_s(cell, cells), 1)
                if reason is None and cell.estimate_s > args.max_seconds_per_cell:
                    reason = (f"estimated {cell.estimate_s:,.0f}s > --max-seconds-per-cell "
                              f"{args.max_seconds_per_cell:g}")
                if reason is not None:
                    cell.status, cell.reason = "skipped", reason
                    continue
                log(f"{latency:g} ms, {size:,} entities: {cell.label} at {cell.threads} "
                    f"threads (estimated {cell.estimate_s:,.1f}s)")
                run_cell(cell, endpoint, files[size], args)
                if cell.status == "ok":
                    log(f"  {cell.wall_s:.2f}s, {cell.rows_per_s:,} rows/s, "
                        f"{cell.cpu_s:.2f} CPU s, peak RSS {cell.peak_rss_mb} MB")
                else:
                    log(f"  FAILED: {cell.reason}")


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def find(cells: Sequence[Cell], label: str, size: int, latency: float,
         threads: int) -> Cell | None:
    for cell in cells:
        if (cell.label, cell.size, cell.latency_ms, cell.threads) == (label, size, latency,
                                                                     threads):
            return cell if cell.status == "ok" else None
    return None


def targets(cells: Sequence[Cell], transports: Sequence[str | None]) -> list[dict[str, Any]]:
    """The issue's speed targets wherever the cells they compare were measured."""
    found: list[dict[str, Any]] = []

    def add(name: str, subject: str, size: int, latency: float, value: float) -> None:
        what, limit = TARGETS[name]
        holds = value >= limit if "speedup" in name else value <= limit
        found.append({"target": name, "what": what, "subject": subject, "size": size,
                      "latency_ms": latency, "value": round(value, 2), "limit": limit,
                      "holds": holds})

    t = TARGET_THREADS
    for size, latency in sorted({(c.size, c.latency_ms) for c in cells}):
        floor = find(cells, "raw_floor", size, latency, t)
        baseline = find(cells, "baseline_threaded", size, latency, t)
        for transport in transports:
            suffix = f"[{transport}]" if transport else ""
            pull = find(cells, "featurepull_pull" + suffix, size, latency, t)
            celery = find(cells, "celery_2" + suffix, size, latency, t)
            if pull and floor and pull.wall_s and floor.wall_s:
                add("pull_time_vs_floor", pull.label, size, latency, pull.wall_s / floor.wall_s)
            if pull and baseline and pull.wall_s and baseline.wall_s:
                add("pull_speedup_vs_threaded_baseline", pull.label, size, latency,
                    baseline.wall_s / pull.wall_s)
            if celery and baseline and celery.wall_s and baseline.wall_s:
                add("celery_2_speedup_vs_threaded_baseline", celery.label, size, latency,
                    baseline.wall_s / celery.wall_s)
    largest = max((c.size for c in cells if c.name == "celery_2" and c.status == "ok"),
                  default=None)
    for cell in cells:
        if cell.name == "celery_2" and cell.status == "ok" and cell.size == largest:
            add("celery_2_worker_peak_rss_mb", cell.label, cell.size, cell.latency_ms,
                float(cell.peak_rss_mb or 0.0))
    return found


TABLE_HEAD = ("latency_ms", "entities", "method", "threads", "wall_s", "rows/s", "cpu_s",
              "peak_rss_mb", "endpoint_cpu_s")


def format_table(cells: Sequence[Cell]) -> str:
    """The measured cells, a row each; skipped cells as rows with notes below, and a size
    left out whole (--only) as one note."""
    rows = [list(TABLE_HEAD)]
    notes = []
    groups: dict[tuple[float, int], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.latency_ms, c.size), []).append(c)
    shown = []
    for (latency, size), group in groups.items():
        left_out = [c for c in group if c.status == "skipped" and c.reason.endswith(ONLY_NOTE)]
        if len(left_out) == len(group):
            notes.append(f"{latency:g} ms, {size:,}: no cell selected {ONLY_NOTE}")
            continue
        if left_out:
            notes.append(f"{latency:g} ms, {size:,}: not selected {ONLY_NOTE}: "
                         + ", ".join(f"{c.label}@{c.threads}" for c in left_out))
        shown += [c for c in group if c not in left_out]
    for c in shown:
        if c.status == "ok":
            rows.append([f"{c.latency_ms:g}", f"{c.size:,}", c.label, str(c.threads),
                         f"{c.wall_s:.2f}", f"{c.rows_per_s:,}", f"{c.cpu_s:.2f}",
                         f"{c.peak_rss_mb:.0f}", f"{c.endpoint_cpu_s:.2f}"])
        else:
            rows.append([f"{c.latency_ms:g}", f"{c.size:,}", c.label, str(c.threads),
                         c.status, "", "", "", ""])
            notes.append(f"{c.latency_ms:g} ms, {c.size:,}, {c.label} at {c.threads} threads: "
                         f"{c.status}: {c.reason.splitlines()[-1] if c.reason else ''}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEAD))]
    lines = ["  ".join(cell.rjust(w) if i != 2 else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    return "\n".join(lines + notes)


def format_targets(found: Sequence[dict[str, Any]]) -> str:
    lines = []
    for t in found:
        verdict = "holds" if t["holds"] else "DOES NOT HOLD"
        sign = ">=" if "speedup" in t["target"] else "<="
        lines.append(f"{t['latency_ms']:g} ms, {t['size']:,} entities, {t['subject']}: "
                     f"{t['what']} = {t['value']:g} (target {sign} {t['limit']:g}): {verdict}")
    return "\n".join(lines) or "no target could be computed from the cells measured"


def plot(cells: Sequence[Cell], size: int, path: Path) -> None:
    """rows/s against threads at one size, a panel per latency, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = sorted({c.latency_ms for c in cells if c.size == size})
    figure, axes = plt.subplots(1, max(1, len(latencies)), figsize=(6 * max(1, len(latencies)),
                                                                  4.2), squeeze=False)
    threads = sorted({c.threads for c in cells})
    # One colour per method; a transport other than the first is dashed, in the same colour.
    first_transport = next((c.transport for c in cells if c.transport), None)
    colours = {name: f"C{i}" for i, name in enumerate(METHODS)}
    for axis, latency in zip(axes[0], latencies, strict=False):
        for label, example in {c.label: c for c in cells}.items():
            points = sorted((c.threads, c.rows_per_s) for c in cells
                            if c.label == label and c.size == size and c.latency_ms == latency
                            and c.status == "ok" and c.rows_per_s)
            if points:
                other = example.transport not in (None, first_transport)
                axis.plot(*zip(*points, strict=True), label=label,
                          color=colours.get(example.name), linestyle="--" if other else "-",
                          marker="s" if other else "o")
        axis.set_xscale("log")
        axis.set_xticks(threads, [str(t) for t in threads])
        axis.minorticks_off()
        axis.set_xlabel("threads per process")
        axis.set_ylabel("rows/s")
        axis.set_title(f"{size:,} entities, {latency:g} ms per request")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

QUICK = {"sizes": [2_000, 10_000], "threads": [1, 10], "latencies": [2.0],
         "celery_processes": [1], "max_seconds_per_cell": 20.0}
WHOLE = {"sizes": [1_000_000], "threads": [32], "latencies": [10.0], "celery_processes": [2],
         "max_seconds_per_cell": 900.0}
FULL = {"sizes": [10_000, 100_000, 1_000_000], "threads": [1, 10, 32],
        "latencies": [2.0, 10.0], "celery_processes": [1, 2], "max_seconds_per_cell": 180.0}


def numbers(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> list[int] | list[float]:
        try:
            values = [kind(part.replace("_", "")) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                             "numbers") from None
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give positive numbers")
        return values
    return parse


def only_spec(text: str) -> tuple[tuple[int, float | None], set[str]]:
    key, sep, names = text.partition("=")
    size_text, _, latency_text = key.partition("@")
    try:
        size = int(size_text.replace("_", ""))
        latency = float(latency_text.removesuffix("ms")) if latency_text else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"--only {text!r}: expected SIZE[@LATENCYms]="
                                         "METHOD[@THREADS],...") from None
    if not sep:
        raise argparse.ArgumentTypeError(f"--only {text!r}: missing '=METHODS'")
    return (size, latency), {n.strip() for n in names.split(",") if n.strip()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="featurepull against Feast's online_read algorithm and the raw HTTP "
        "floor: wall time, rows/s, CPU seconds and peak RSS per cell.")
    parser.add_argument("--quick", action="store_true",
                        help="sizes 2000,10000; threads 1,10; 2 ms; Celery with 1 process")
    parser.add_argument("--whole-process", action="store_true",
                        help="the whole-process cells instead (scripts/bench_whole.py): "
                        "`featurepull pull` and `submit --wait` from start to exit, and "
                        "Feast's own online_read when Feast is installed; sizes default "
                        "1000000, threads 32, latency 10 ms")
    parser.add_argument("--whole-methods", type=lambda s: [m for m in s.split(",") if m],
                        default=["pull", "submit_wait", "feast_online_read"],
                        help="--whole-process: subset of pull,submit_wait,feast_online_read")
    parser.add_argument("--whole-formats", default="csv,parquet",
                        type=lambda s: tuple(s.split(",")),
                        help="--whole-process: the entity file's and the output's format "
                        "(csv,parquet; e.g. parquet,csv or csv,jsonl)")
    parser.add_argument("--found-share", type=numbers(float), default=[0.1],
                        help="--whole-process: the shares of entities that exist, each its "
                        "own cells (0.1; 0.1,1.0 adds the all-found case)")
    parser.add_argument("--sizes", type=numbers(int), help="entity counts (10000,100000,1000000)")
    parser.add_argument("--threads", type=numbers(int), help="threads per process (1,10,32)")
    parser.add_argument("--latencies", type=numbers(float), help="endpoint ms per request (2,10)")
    parser.add_argument("--celery-threads", type=numbers(int),
                        help="threads of the Celery cells (default 10, or the most --threads)")
    parser.add_argument("--celery-processes", type=numbers(int), help="prefork processes (1,2)")
    parser.add_argument("--methods", type=lambda s: [m for m in s.split(",") if m],
                        default=list(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--transports", type=lambda s: [m for m in s.split(",") if m],
                        help="featurepull transports to run (default: all it has)")
    parser.add_argument("--only", type=only_spec, action="append", default=[],
                        metavar="SIZE[@LATENCYms]=METHOD[@THREADS],...",
                        help="run only these cells at that size (e.g. "
                        "1000000=featurepull_pull,celery_2,baseline_threaded@10)")
    parser.add_argument("--max-seconds-per-cell", type=float,
                        help="skip cells estimated slower (default 180, quick 20)")
    parser.add_argument("--shard-size", type=int, default=50_000,
                        help="largest shard of the Celery jobs (smaller for small jobs, so "
                        "each worker process gets two shards)")
    parser.add_argument("--cell-timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json-out", type=Path, default=Path("bench-output/bench.json"))
    parser.add_argument("--plot-out", type=Path,
                        help="PNG path (default: bench-rows-per-s.png next to --json-out)")
    parser.add_argument("--plot-size", type=int, default=100_000,
                        help="entities of the plotted cells (default 100000, else the largest)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--from-json", type=Path, metavar="BENCH_JSON",
                        help="measure nothing: print the table and targets of an earlier "
                        "run's JSON and draw its plot again")
    args = parser.parse_args(argv)
    if args.whole_process:
        defaults = WHOLE
    elif args.quick:
        defaults = QUICK
    else:
        defaults = FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.celery_threads is None:
        args.celery_threads = ([TARGET_THREADS] if TARGET_THREADS in args.threads
                               else [max(args.threads)])
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown --methods {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    args.methods = [m for m in args.methods
                    if not m.startswith("celery_") or int(m[7:]) in args.celery_processes]
    args.only = dict(args.only)
    args.plot_out = args.plot_out or args.json_out.parent / "bench-rows-per-s.png"
    return args


def check_plotting(args: argparse.Namespace) -> None:
    if args.no_plot:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("bench: the plot needs matplotlib, which is not installed: run "
                         "`.venv/bin/pip install -e '.[bench]'` (or pass --no-plot)") from None


def git_state() -> dict[str, Any]:
    root = SCRIPTS.parent

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True,
                              check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def write_entities(args: argparse.Namespace, folder: Path) -> Iterator[tuple[int, Path]]:
    drivers = max(args.sizes)
    for size in sorted(args.sizes):
        path = folder / f"entities-{size}.parquet"
        ids = pa.array(entity_ids(size, drivers, args.seed), pa.int64())
        pq.write_table(pa.table({"driver_id": ids}), path)
        yield size, path


def report_again(args: argparse.Namespace) -> int:
    """--from-json: the table, targets and plot of an earlier run."""
    report = json.loads(args.from_json.read_text())
    names = {f.name for f in fields(Cell)}
    cells = [Cell(**{k: v for k, v in record.items() if k in names})
             for record in report["cells"]]
    print(format_table(cells))
    print()
    print(format_targets(targets(cells, report["config"]["transports"])))
    if not args.no_plot:
        sizes = report["config"]["sizes"]
        plot(cells, args.plot_size if args.plot_size in sizes else max(sizes), args.plot_out)
        print(f"plot: {args.plot_out}")
    return 0


def whole_process(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """--whole-process: the cells of scripts/bench_whole.py, a table, targets and JSON."""
    import bench_whole

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    if max(args.found_share) > 1:
        raise SystemExit("bench: --found-share takes shares from 0 to 1 (e.g. 0.1,1.0)")
    cells = [cell for share in args.found_share
             for cell in bench_whole.run(args.sizes, share, max(args.threads), args.latencies,
                                         args.max_seconds_per_cell, log, args.whole_methods,
                                         args.whole_formats)]
    print(bench_whole.format_cells(cells))
    print()
    print(bench_whole.format_targets(cells))
    report = {"command": ["scripts/bench.py", *(sys.argv[1:] if argv is None else argv)],
              "git": git_state(),
              "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_average_at_start": load_at_start},
              "cells": cells, "targets": bench_whole.targets(cells)}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"json: {args.json_out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_plotting(args)
    if args.from_json:
        return report_again(args)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    for name in [n for n in os.environ if n.startswith("FEATUREPULL_")]:
        del os.environ[name]  # the settings are this script's, not the shell's
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(AWS_ENV)
    transports = chosen_transports(args)
    if args.whole_process:
        return whole_process(args, argv)
    log(f"featurepull transports: {', '.join(map(str, transports))}")
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    cells: list[Cell] = []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fp-bench-")))
        files = dict(write_entities(args, folder))
        for latency in args.latencies:
            run_latency(latency, args, files, transports, cells)
    found = targets(cells, transports)
    plot_size = args.plot_size if args.plot_size in args.sizes else max(args.sizes)
    if not args.no_plot:
        plot(cells, plot_size, args.plot_out)
    report = {
        "command": ["scripts/bench.py", *(sys.argv[1:] if argv is None else argv)],
        "git": git_state(),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "platform": platform.platform(), "load_average_at_start": load_at_start},
        "config": {"sizes": args.sizes, "threads": args.threads, "latencies_ms": args.latencies,
                   "celery_threads": args.celery_threads,
                   "celery_processes": args.celery_processes,
                   "shard_sizes": {str(s): shard_size(s, args) for s in args.sizes},
                   "transports": transports, "features": list(FEATURES),
                   "known_share": KNOWN_SHARE, "endpoint_drivers": max(args.sizes),
                   "max_seconds_per_cell": args.max_seconds_per_cell, "mb": "MiB"},
        "definitions": DEFINITIONS,
        "seconds": round(time.time() - started, 1),
        "cells": [cell.record() for cell in cells],
        "targets": found,
        "plot": None if args.no_plot else {"path": str(args.plot_out), "entities": plot_size},
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(cells))
    print()
    print(format_targets(found))
    print(f"JSON: {args.json_out}")
    if not args.no_plot:
        print(f"plot: {args.plot_out}")
    failed = [cell for cell in cells if cell.status == "failed"]
    if failed:
        log(f"{len(failed)} cell(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
