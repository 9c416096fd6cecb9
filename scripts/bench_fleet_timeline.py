#!/usr/bin/env python
"""When each step of a ``submit --wait`` happens: the fleet's critical path, from the worker's
JSON log lines (their timestamps and process ids), trees interleaved.

    .venv/bin/python scripts/bench_fleet_timeline.py --rounds 3 \\
        --tree before=OLD_CHECKOUT --tree after=.

The cell is ``scripts/bench_whole.py``'s ``submit_wait`` (1M CSV ids, 10% found, 32 in
flight, 10 ms endpoint, 2 prefork processes, Parquet out). ``--tree NAME=DIR`` runs DIR's
featurepull package (first on PYTHONPATH, every process started in a temporary folder) in
the command and the worker. Per run: seconds from the command's spawn to the first shard
message received, each shard's start and end in its pool process (``task`` = the task
started in the child; ``read`` = shard_start → shard_done, the keys, reader and part after
it included in ``shard_done``), the gaps where a pool process had no task, the finisher,
job_done, and the command's exit; then wall and CPU by process. Prints a table of medians
and saves every run as JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_methods import cpu_seconds
from bench_whole import submit_cell, write_entities

from featurepull.bench.endpoint import start_endpoint

SHARD_TASK = "featurepull.read_shard"
SUCCEEDED = re.compile(r"Task (\S+)\[[^]]+\] succeeded in ([0-9.e-]+)s")
FINISH_TASK = "featurepull.finish_job"


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for text in log.read_text().splitlines():
        if text.startswith("{"):
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                continue
    return lines


def _finisher_returned(log: str) -> bool:
    """The finisher's pool process has logged its return (the job's last line)."""
    return any(ran is not None and ran.group(1) == FINISH_TASK
               for ran in map(SUCCEEDED.search, log.splitlines()))


def timeline(log: Path, spawned_at: float, wall: float, pool: Sequence[int]
             ) -> dict[str, Any]:
    """The steps of one run, seconds from the command's spawn."""
    marks: dict[str, Any] = {}
    spans: dict[int, list[tuple[float, float, str, Any]]] = {pid: [] for pid in pool}
    starts: dict[Any, float] = {}
    shards: dict[Any, dict[str, float]] = {}
    for line in _lines(log):
        if "timestamp" not in line:
            continue
        at = _epoch(line["timestamp"]) - spawned_at
        event = str(line.get("event", ""))
        if event.endswith(" received") and SHARD_TASK in event:
            marks.setdefault("first_shard_received", at)
            marks["last_shard_received"] = at
        ran = SUCCEEDED.match(event)
        if ran:  # logged by the pool process as the task returns
            name = ran.group(1)
            spans.setdefault(line["process"], []).append(
                (at - float(ran.group(2)), at, name, line.get("shard")))
            if name == FINISH_TASK:
                marks["finisher_started"] = at - float(ran.group(2))
                marks["finisher_ended"] = at
        if event == "shard_start":
            starts[line["shard"]] = at
            marks.setdefault("first_shard_start", at)
        if event == "shard_done":
            shards[line["shard"]] = {"read_start": starts.get(line["shard"], at), "done": at,
                                     "read_s": float(line.get("seconds", 0.0))}
            marks["last_shard_done"] = at
        if event == "job_done":
            marks["job_done"] = at
    marks["exited"] = wall
    for pid_spans in spans.values():
        for began, ended, name, shard in pid_spans:
            if name == SHARD_TASK and shard in shards:
                shards[shard].update(task_start=began, task_end=ended)
    whole = [s for s in shards.values() if "task_start" in s]
    out: dict[str, Any] = {"marks": {k: round(v, 3) for k, v in marks.items()},
                           "shards": {str(k): {f: round(v, 3) for f, v in s.items()}
                                      for k, s in sorted(shards.items())}}
    if whole:
        out["shard_steps_s"] = {  # medians over the shards
            "task": statistics.median(s["task_end"] - s["task_start"] for s in whole),
            "before_read": statistics.median(s["read_start"] - s["task_start"] for s in whole),
            "read": statistics.median(s["read_s"] for s in whole),
            "after_read": statistics.median(s["done"] - s["read_start"] - s["read_s"]
                                            for s in whole),
            "after_shard_done": statistics.median(s["task_end"] - s["done"] for s in whole)}
    idle: dict[str, float] = {}
    for pid, pid_spans in spans.items():
        ordered = sorted(pid_spans)
        if ordered:
            idle[str(pid)] = round(sum(b[0] - a[1] for a, b in itertools.pairwise(ordered)), 3)
            marks_pid = out.setdefault("pool_first_task_s", {})
            marks_pid[str(pid)] = round(ordered[0][0], 3)
    out["idle_between_tasks_s"] = idle
    return out


def run(trees: Sequence[tuple[str, str]], rounds: int, size: int, found_share: float,
        threads: int, latency: float, processes: int, keep: bool = False,
        tree_env: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    kept = tempfile.mkdtemp(prefix="featurepull-fleet-timeline-") if keep else None
    with (contextlib.nullcontext(kept) if kept else
          tempfile.TemporaryDirectory(prefix="featurepull-fleet-timeline-")) as folder:
        work = Path(folder)
        os.chdir(work)  # `python -m` puts the working directory before PYTHONPATH
        entities = work / "entities.csv"
        known = int(size * found_share)
        write_entities(entities, size, known, seed=size)
        with start_endpoint(drivers=known, latency_ms=latency) as endpoint:
            for round_no in range(rounds):
                order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
                for name, tree in order:
                    cell_dir = work / f"{name}-{round_no}"
                    cell_dir.mkdir()
                    endpoint_cpu = cpu_seconds(endpoint.process.pid)
                    cell = submit_cell(endpoint.url, entities, cell_dir, threads, 600.0,
                                       processes=processes,
                                       extra_env={"PYTHONPATH": str(Path(tree).resolve()),
                                                  **(tree_env or {}).get(name, {})},
                                       log_format="json", logged=_finisher_returned)
                    # Not ours: a real DynamoDB would not share this machine's cores.
                    cell["endpoint_cpu_s"] = round(cpu_seconds(endpoint.process.pid)
                                                   - endpoint_cpu, 3)
                    steps = timeline(cell_dir / "worker.log", cell["spawned_at"],
                                     cell["wall_s"], cell["pool_pids"])
                    sample = {"tree": name, "round": round_no, **cell, **steps,
                              "load_average": [round(v, 2) for v in os.getloadavg()]}
                    runs.append(sample)
                    print(json.dumps({k: sample[k] for k in (
                        "tree", "round", "wall_s", "cpu_s", "submitter_cpu_s",
                        "cpu_by_process_s", "endpoint_cpu_s", "marks", "idle_between_tasks_s",
                        "load_average")}), flush=True)
    return runs


def table(runs: Sequence[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(r["tree"] for r in runs))
    rows: list[tuple[str, list[str]]] = []

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.3f}" if values else "-"

    marks = list(dict.fromkeys(k for r in runs for k in r["marks"]))
    for mark in marks:
        rows.append((f"{mark}, s from spawn", [med([r["marks"][mark] for r in runs
                                                      if r["tree"] == n and mark in r["marks"]])
                                                 for n in names]))
    steps = list(dict.fromkeys(k for r in runs for k in r.get("shard_steps_s", {})))
    for step in steps:
        rows.append((f"a shard's {step}, s", [med([r["shard_steps_s"][step] for r in runs
                                                    if r["tree"] == n and "shard_steps_s" in r])
                                               for n in names]))
    for key in ("wall_s", "cpu_s", "submitter_cpu_s", "endpoint_cpu_s"):
        rows.append((key, [med([r[key] for r in runs if r["tree"] == n and key in r])
                           for n in names]))
    for role in ("pool", "worker_main", "redis"):
        rows.append((f"cpu {role}", [med([r["cpu_by_process_s"][role] for r in runs
                                          if r["tree"] == n]) for n in names]))
    rows.append(("pool idle between tasks, s (sum)",
                 [med([sum(r["idle_between_tasks_s"].values()) for r in runs
                       if r["tree"] == n]) for n in names]))
    width = max(len(label) for label, _ in rows)
    head = f"{'median of runs':<{width}} | " + " | ".join(f"{n:>9}" for n in names)
    return "\n".join([head, *(f"{label:<{width}} | " + " | ".join(f"{v:>9}" for v in vals)
                              for label, vals in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=lambda s: tuple(s.split("=", 1)),
                        help="NAME=DIR, a checkout whose featurepull runs (repeat)")
    parser.add_argument("--tree-env", action="append", default=[],
                        help="NAME:KEY=VALUE, an environment variable of one tree's runs "
                             "(e.g. after100k:FEATUREPULL_JOBS__SHARD_SIZE=100000)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--found-share", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--latency", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (entity file, worker logs, outputs)")
    parser.add_argument("--json-out", default="bench-output/fleet-timeline.json")
    args = parser.parse_args()
    trees = args.tree or [("this", str(Path(__file__).resolve().parents[1]))]
    json_out = Path(args.json_out).resolve()
    tree_env: dict[str, dict[str, str]] = {}
    for item in args.tree_env:
        name, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        tree_env.setdefault(name, {})[key] = value
    runs = run(trees, args.rounds, args.entities, args.found_share, args.threads,
               args.latency, args.processes, args.keep, tree_env)
    print(table(runs))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(runs, indent=1))
    print(f"saved {json_out}")


if __name__ == "__main__":
    main()
