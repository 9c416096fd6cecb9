#!/usr/bin/env python
"""Startup of ``featurepull pull``: how long a process takes from its start to its first
DynamoDB request, and what ``import featurepull.cli`` and ``featurepull pull --help`` cost.

    .venv/bin/python scripts/bench_startup.py --rounds 9
    .venv/bin/python scripts/bench_startup.py --rounds 9 --tree before=OLD_CHECKOUT --tree after=.

Each ``--tree NAME=DIR`` runs the featurepull package found in DIR (put first on
PYTHONPATH, and every process starts in a temporary folder: ``python -m`` and ``-c`` put the
working directory before PYTHONPATH; the same interpreter and libraries for every tree), and
the trees take turns within every round, so a machine whose load drifts weighs on them
alike. Cells:

    import_cli     python -c "import featurepull.cli"
    pull_help      python -m featurepull pull --help
    first_request  python -m featurepull pull (a CSV of --entities ids in, Parquet out) against
                   a listener that notes when the first request arrives (which one: its
                   X-Amz-Target), then stops the process: startup, CSV in and pre-read steps
    whole_pull     the whole ``featurepull pull`` of those ids (all found, 5 features) from a
                   lean endpoint (10 ms a request, 10 in flight; ``--found-share 0.1
                   --max-read-workers 32 --entities 1000000``: the whole-process bench's
                   pull, its file and endpoint) to its exit, with the read's
                   own seconds from its ``--json`` summary: the issue's "process / read" ratio
    timeline       the same whole pull with probes (TIMELINE_PROBE, run before the command in
                   its process; featurepull itself is unchanged): when each step of it ended,
                   in wall seconds from the spawn and in the process's CPU seconds — Python
                   up, imports, settings, entity file, credentials (botocore's), client
                   (botocore's, or the environment's: featurepull.dynamo._env_client), first
                   request on the wire, read planned (a pull describes the table on a
                   thread of its own meanwhile), keys, last answer, output written, exit
    submit_start   ``featurepull submit`` of those ids (no worker; a private redis-server) with
                   the same probes, stopped once its first shard is queued: when the submitter
                   typed the entity file, planned the read (describing the table), stored
                   and queued the first shard, and its main thread's CPU by then; with
                   ``--instructions``, under cachegrind

Each tree's featurepull package is byte-compiled first (``compileall``, into its
``__pycache__``), as ``pip install`` does: a process then loads featurepull's bytecode, as an
installed featurepull's would. ``--no-compile`` runs a copy of each tree's package without
bytecode, under ``PYTHONDONTWRITEBYTECODE`` (set in this machine's shells): every featurepull
module is then compiled from source at every start, as earlier sessions' figures were taken.

For each cell and tree: the median and minimum of wall seconds (from just before the process
is spawned) and of the process's CPU seconds (user+sys), and the load average seen. On a
loaded machine both swell; ``--instructions`` runs the first three cells under valgrind's
cachegrind instead and reports the instructions each process executed (to the first request:
up to its SIGTERM), which no other process's load changes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from featurepull.bench.endpoint import FEATURES, start_endpoint

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
CELLS = ("import_cli", "pull_help", "first_request", "whole_pull", "timeline", "submit_start")
# Run in the pull's own process before the console script's run(): wraps a few functions as
# their modules are first executed (so the names other modules import are the wrapped ones)
# and notes, at the first call's start or end, the wall clock and the process's CPU time;
# the first send on any socket is the first request on the wire. Written as JSON to the
# file named by the last argument, just before the pull's os._exit (or at exit).
TIMELINE_PROBE = """
import atexit, importlib.abc, json, os, socket, sys, time

OUT = sys.argv.pop()
STOP_AT_FIRST_SHARD = os.environ.pop("BENCH_STOP_AT_FIRST_SHARD", "")
MARKS = {}

def mark(label):
    MARKS.setdefault(label, (time.time(), time.process_time(), time.thread_time()))

mark("python up")
# module -> [(attribute path, label at the first call's start or None, label at its end)]
PROBES = {
    "featurepull.cli": [("_settings_from", "imports done", "settings loaded")],
    "botocore.session": [("Session.get_credentials", None, "credentials"),
                         ("Session.create_client", None, "client built")],
    # A console pull with credentials in the environment builds no botocore session.
    "featurepull.dynamo._env_client": [("env_client", None, "client built")],
    "featurepull.io.entities": [("read_entities", "entity file: start", "entity file read")],
    "featurepull.dynamo.layouts": [("unique_keys", None, "keys built")],
    "featurepull.dynamo.planned": [("read_planned", None, "last answer")],
    "featurepull.io.rows": [("write_rows", None, "output written")],
    # A submit's steps up to its first shard (no worker takes it).
    "featurepull.tasks.create": [("create_job", "job checks: start", None)],
    "featurepull.io._csv_stream": [("stream_csv", None, "entity file typed")],
    "featurepull.dynamo.plan": [("plan_read", None, "read planned")],
    "featurepull.tasks.shard_keys": [("put_shard_keys", None, "first shard stored")],
    "featurepull.tasks.sending": [("MessageSender.__call__", None, "first shard queued")],
    "featurepull.tasks.celery_tasks": [("MessageSender.__call__", None, "first shard queued")],
    "featurepull.tasks.task_messages": [("RedisTaskSender.__call__", None, "first shard queued")],
}

def wrapped(func, start, end):
    def probe(*args, **kwargs):
        if start:
            mark(start)
        try:
            return func(*args, **kwargs)
        finally:
            if end:
                mark(end)
                if end == "first shard queued" and STOP_AT_FIRST_SHARD:
                    report()
                    exit_now(0)
    return probe

def patch(module):
    for path, start, end in PROBES[module.__name__]:
        owner, _, name = path.rpartition(".")
        holder = getattr(module, owner, None) if owner else module
        if hasattr(holder, name):  # MessageSender: in celery_tasks, then in sending
            setattr(holder, name, wrapped(getattr(holder, name), start, end))

class Probes(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in PROBES:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else finder.find_spec(name, path, target)
            if spec is not None:
                execute = spec.loader.exec_module
                def exec_module(module, execute=execute):
                    execute(module)
                    patch(module)
                spec.loader.exec_module = exec_module
                return spec
        return None

sys.meta_path.insert(0, Probes())
for method in ("send", "sendall"):
    def first_send(self, *args, _sent=getattr(socket.socket, method)):
        mark("first request")
        return _sent(self, *args)
    setattr(socket.socket, method, first_send)

def report():
    mark("exit")
    with open(OUT, "w") as file:
        json.dump(MARKS, file)

exit_now = os._exit
os._exit = lambda code: (report(), exit_now(code))
atexit.register(report)
sys.argv[0] = "featurepull"
from featurepull.cli import run
run()
"""
CACHEGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
              "--cachegrind-out-file=/dev/null"]


def _env(tree: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("FEATUREPULL_", "AWS_", "PYTHONPATH"))}
    env.update(AWS_ENV)
    if tree:
        env["PYTHONPATH"] = str(Path(tree).resolve())
    return env


def _package(tree: str | None) -> Path:
    """The featurepull package a tree runs: the tree's, or the installed one."""
    if tree is None:
        import featurepull

        return Path(featurepull.__file__).parent
    return Path(tree).resolve() / "featurepull"


def _compile(tree: str | None) -> None:
    """Byte-compile the tree's featurepull package, as pip does when it installs one."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(_package(tree))],
                   check=True, stdout=subprocess.DEVNULL)


def _source_only(tree: str | None, folder: Path) -> str:
    """A copy of the tree's package without its bytecode, in ``folder``: a tree to run."""
    shutil.copytree(_package(tree), folder / "featurepull",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(folder)


def _instructions(stderr: bytes) -> int | None:
    """The instruction count cachegrind printed ("I refs"), if it ran."""
    for line in stderr.decode(errors="replace").splitlines():
        if "I" in line and "refs:" in line:
            return int(line.rsplit(":", 1)[1].replace(",", "").strip())
    return None


def _run_to_exit(cmd: list[str], env: dict[str, str], cwd: str
                 ) -> tuple[float, float, str, int | None]:
    """Wall and CPU seconds of a command run to its end (its rusage, from wait4), the last
    line it printed, and its instructions when it ran under cachegrind."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"{cmd} exited {process.returncode}")
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines()
        instructions = _instructions(err.read())
    return wall, usage.ru_utime + usage.ru_stime, lines[-1] if lines else "", instructions


def _first_request(cmd_for: Any, env: dict[str, str], cwd: str, timeout_s: float
                   ) -> tuple[float, float, str, int | None]:
    """Wall and CPU seconds of a pull until its first request reaches a listener, the
    request's X-Amz-Target, and (under cachegrind) its instructions; the process is then
    stopped (it is this function's child): SIGTERM, which cachegrind reports on."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(timeout_s)
        cmd = cmd_for(f"http://127.0.0.1:{server.getsockname()[1]}")
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        try:
            connection, _ = server.accept()
            with connection:
                connection.settimeout(timeout_s)
                head = connection.recv(65536)
                wall = time.perf_counter() - started
                times = psutil.Process(process.pid).cpu_times()
        finally:
            process.terminate()
            _, err = process.communicate()
    if not head:
        raise RuntimeError(f"no request arrived: {err.decode()[-2000:]}")
    target = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"x-amz-target:")), "?")
    return wall, times.user + times.system, target, _instructions(err)


def _check_found(last_line: str, entities: int) -> dict[str, Any]:
    """The pull's --json summary, which must say it found every entity."""
    summary: dict[str, Any] = json.loads(last_line)
    if summary["found"] != entities:
        raise RuntimeError(f"found {summary['found']} of {entities}")
    return summary


def run(trees: Sequence[tuple[str, str | None]], rounds: int, entities: int,
        cells: Sequence[str], timeout_s: float = 120.0, instructions: bool = False,
        compiled: bool = True, found_share: float = 1.0, in_flight: int = 10
        ) -> list[dict[str, Any]]:
    """Every cell of every tree, ``rounds`` times, trees in turn within a round (under
    cachegrind with ``instructions``); each tree byte-compiled first with ``compiled``.
    ``found_share`` below 1: the endpoint holds that share of the entities, and the file
    holds them and unknown ids, shuffled (the whole-process bench's file)."""
    known = int(entities * found_share) if found_share < 1 else entities
    if instructions and {"whole_pull", "timeline"} & set(cells):
        raise ValueError("--instructions counts import_cli, pull_help, first_request and "
                         "submit_start only")
    for _, tree in trees if compiled else ():
        _compile(tree)
    python = sys.executable
    prefix = CACHEGRIND if instructions else []
    timeout_s = timeout_s * 10 if instructions else timeout_s
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="featurepull-startup-") as folder:
        if not compiled:
            trees = [(name, _source_only(tree, Path(folder) / f"source-{name}"))
                     for name, tree in trees]
        ids = Path(folder) / "ids.csv"
        if known < entities:
            from bench_whole import write_entities

            write_entities(ids, entities, known, seed=entities)
        else:
            ids.write_text("driver_id\n" + "\n".join(map(str, range(entities))) + "\n")
        output = Path(folder) / "out.parquet"

        def request_flags(url: str) -> list[str]:
            return ["--project", "demo", "--table", "driver_stats", "--features",
                    ",".join(FEATURES), "--entities", str(ids), "--output", str(output),
                    "--overwrite", "--endpoint-url", url, "--region", "us-east-1"]

        def pull_cmd(url: str) -> list[str]:
            return [*prefix, python, "-m", "featurepull", "pull", *request_flags(url),
                    "--max-read-workers", str(in_flight), "--json"]

        marks_file = Path(folder) / "timeline.json"
        # Each endpoint (in its own session) is stopped however the rounds end: a failing
        # round, ^C, or a SIGTERM (main makes it a KeyboardInterrupt).
        with contextlib.ExitStack() as running:
            endpoint = (running.enter_context(start_endpoint(drivers=known, latency_ms=10))
                        if {"whole_pull", "timeline"} & set(cells) else None)
            # A submit reads no item before its first shard: the table's description only.
            submit_endpoint = (running.enter_context(start_endpoint(drivers=1, latency_ms=10))
                               if "submit_start" in cells else None)
            for round_no in range(rounds):
                order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
                for cell in cells:
                    for name, tree in order:
                        env = _env(tree)
                        if not compiled:
                            env["PYTHONDONTWRITEBYTECODE"] = "1"
                        sample: dict[str, Any] = {"tree": name, "cell": cell, "round": round_no}
                        count: int | None = None
                        if cell == "import_cli":
                            wall, cpu, _, count = _run_to_exit(
                                [*prefix, python, "-c", "import featurepull.cli"], env, folder)
                        elif cell == "pull_help":
                            wall, cpu, _, count = _run_to_exit(
                                [*prefix, python, "-m", "featurepull", "pull", "--help"], env,
                                folder)
                        elif cell == "first_request":
                            wall, cpu, sample["first_request"], count = _first_request(
                                pull_cmd, env, folder, timeout_s)
                        elif cell == "timeline":
                            assert endpoint is not None
                            started = time.time()
                            wall, cpu, last, _ = _run_to_exit(
                                [python, "-c", TIMELINE_PROBE, *pull_cmd(endpoint.url)[3:],
                                 str(marks_file)], env, folder)
                            _check_found(last, known)
                            marks = json.loads(marks_file.read_text())
                            sample["marks"] = _marks(marks, started)
                            sample["marks"]["exited"] = [round(wall, 4), round(cpu, 4)]
                        elif cell == "submit_start":
                            assert submit_endpoint is not None
                            started = time.time()
                            wall, cpu, count = _submit_start(
                                [*prefix, python, "-c", TIMELINE_PROBE, "submit",
                                 *request_flags(submit_endpoint.url), "--read-mode", "batch-get",
                                 str(marks_file)], env, folder)
                            sample["marks"] = _marks(json.loads(marks_file.read_text()), started)
                        else:
                            assert endpoint is not None
                            wall, cpu, last, _ = _run_to_exit(pull_cmd(endpoint.url), env, folder)
                            summary = _check_found(last, known)
                            sample["read_s"] = summary["seconds"]
                            sample["ratio"] = round(wall / summary["seconds"], 3)
                        if count is not None:
                            sample["instructions"] = count
                        samples.append({**sample, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
                                        "load_average": round(os.getloadavg()[0], 2)})
    return samples


def _marks(marks: dict[str, list[float]], started: float) -> dict[str, list[float]]:
    """Each probe's mark: wall seconds from the spawn, the process's CPU seconds by then and
    (a submit's) its main thread's."""
    return {label: [round(at - started, 4), *(round(used, 4) for used in cpu)]
            for label, (at, *cpu) in marks.items()}


def _submit_start(cmd: list[str], env: dict[str, str], cwd: str
                  ) -> tuple[float, float, int | None]:
    """``featurepull submit`` under the probes to its first shard queued, on a private
    redis-server: wall and CPU seconds, instructions under cachegrind."""
    from featurepull.local import start_redis

    service = start_redis()
    try:
        env = {**env, "FEATUREPULL_REDIS_URL": service.url,
               "FEATUREPULL_JOBS__QUEUE": "bench-submit-start",
               "BENCH_STOP_AT_FIRST_SHARD": "1"}
        wall, cpu, _, count = _run_to_exit(cmd, env, cwd)
    finally:
        service.stop()
    return wall, cpu, count


def summarize(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median and minimum wall and CPU seconds per (cell, tree), and the load seen."""
    keys = dict.fromkeys((s["cell"], s["tree"]) for s in samples)
    rows = []
    for cell, tree in keys:
        mine = [s for s in samples if s["cell"] == cell and s["tree"] == tree]
        walls, cpus = [s["wall_s"] for s in mine], [s["cpu_s"] for s in mine]
        loads = [s["load_average"] for s in mine]
        extra: dict[str, Any] = {}
        if cell == "whole_pull":
            extra = {"read_median_s": round(statistics.median(s["read_s"] for s in mine), 3),
                     "ratio_median": round(statistics.median(s["ratio"] for s in mine), 2),
                     "ratio_min": round(min(s["ratio"] for s in mine), 2)}
        if all("instructions" in s for s in mine):
            extra["instructions_median"] = int(statistics.median(
                s["instructions"] for s in mine))
        rows.append({"cell": cell, "tree": tree, "n": len(mine), **extra,
                     "wall_median_s": round(statistics.median(walls), 3),
                     "wall_min_s": round(min(walls), 3),
                     "cpu_median_s": round(statistics.median(cpus), 3),
                     "cpu_min_s": round(min(cpus), 3),
                     "load": f"{min(loads):.1f}-{max(loads):.1f}",
                     "first_request": sorted({s.get("first_request", "") for s in mine}
                                             - {""})})
    return rows


def timelines(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell with probes (timeline, submit_start) and tree, each step in the order it
    happened: the median wall seconds from the spawn to its end, the median wall seconds
    since the step before, and the median CPU seconds of the process (and of its main
    thread, where noted) by then."""
    rows = []
    for cell, tree in dict.fromkeys((s["cell"], s["tree"]) for s in samples if "marks" in s):
        mine = [s["marks"] for s in samples
                if s["cell"] == cell and s["tree"] == tree and "marks" in s]
        # In the order marked, then by median: steps marked within the marks' rounding
        # (0.1 ms) of each other keep the order they happened in.
        labels = sorted(dict.fromkeys(label for marks in mine for label in marks),
                        key=lambda label: statistics.median(
                            m[label][0] for m in mine if label in m))
        previous: str | None = None
        for label in labels:
            have = [m for m in mine if label in m]
            step = [m[label][0] - (m[previous][0] if previous in m else 0.0) for m in have]
            main = [m[label][2] for m in have if len(m[label]) > 2]
            rows.append({"cell": cell, "tree": tree, "step": label, "n": len(have),
                         "wall_s": round(statistics.median(m[label][0] for m in have), 3),
                         "step_s": round(statistics.median(step), 3),
                         "cpu_s": round(statistics.median(m[label][1] for m in have), 3),
                         "main_thread_cpu_s": round(statistics.median(main), 3) if main
                         else None})
            previous = label
    return rows


def _tree(text: str) -> tuple[str, str | None]:
    name, sep, folder = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=DIR")
    return name, folder


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=_tree, action="append",
                        help="NAME=DIR: a featurepull checkout to measure (repeatable); "
                        "default: the installed one")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--entities", type=int, default=100_000,
                        help="rows of the CSV entity file the pull reads first")
    parser.add_argument("--found-share", type=float, default=1.0,
                        help="whole_pull, timeline: the share of the entities the endpoint "
                        "holds (0.1: the whole-process bench's file, shuffled)")
    parser.add_argument("--max-read-workers", type=int, default=10,
                        help="whole_pull, timeline: requests in flight (the whole-process "
                        "bench: 32)")
    parser.add_argument("--cells", type=lambda s: s.split(","), default=list(CELLS))
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under valgrind's cachegrind (not whole_pull)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--no-compile", action="store_true",
                        help="do not byte-compile the trees first (featurepull's modules are "
                        "then compiled at every start where PYTHONDONTWRITEBYTECODE is set)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so the endpoints are stopped (run)
    trees = args.tree or [("installed", None)]
    cells = [c for c in args.cells
             if not (args.instructions and c in ("whole_pull", "timeline"))]
    samples = run(trees, args.rounds, args.entities, cells, instructions=args.instructions,
                  compiled=not args.no_compile, found_share=args.found_share,
                  in_flight=args.max_read_workers)
    rows = summarize(samples)
    print(f"{'cell':14} {'tree':10} {'n':>3} {'wall med':>9} {'wall min':>9} "
          f"{'cpu med':>8} {'cpu min':>8}  load      notes")
    for row in rows:
        print(f"{row['cell']:14} {row['tree']:10} {row['n']:>3} {row['wall_median_s']:>9.3f} "
              f"{row['wall_min_s']:>9.3f} {row['cpu_median_s']:>8.3f} {row['cpu_min_s']:>8.3f}"
              f"  {row['load']:9} {','.join(row['first_request'])}"
              + (f"read {row['read_median_s']:.2f} s, process/read {row['ratio_median']:.2f} "
                 f"(min {row['ratio_min']:.2f})" if "ratio_median" in row else "")
              + (f" {row['instructions_median'] / 1e6:,.0f}M instructions"
                 if "instructions_median" in row else ""))
    steps = timelines(samples)
    if steps:
        print(f"\n{'cell':13} {'step':26} {'tree':10} {'n':>3} {'wall s':>7} {'step s':>7} "
              f"{'cpu s':>7} {'main':>7}   (medians; wall from the spawn, CPU of the process "
              "and of its main thread by then)")
        for step in steps:
            main = step["main_thread_cpu_s"]
            print(f"{step['cell']:13} {step['step']:26} {step['tree']:10} {step['n']:>3} "
                  f"{step['wall_s']:>7.3f} {step['step_s']:>7.3f} {step['cpu_s']:>7.3f} "
                  f"{'' if main is None else f'{main:.3f}':>7}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"summary": rows, "timeline": steps,
                                             "samples": samples}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
