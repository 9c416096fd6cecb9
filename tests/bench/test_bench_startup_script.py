"""scripts/bench_startup.py's timeline runs end to end on a tiny pull: its probes (wrapped
functions of featurepull, botocore and the socket) still find what they wrap, the pull they
ride on still writes every row, and the steps come in the order a pull takes them. Its times
are the script's output, never asserted here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from featurepull.bench.endpoint import EndpointProcess, start_endpoint

ROOT = Path(__file__).resolve().parents[2]
# The order of a feast-layout pull (CSV in, Parquet out): the table is checked on a thread
# of its own (its client built, then the first request, DescribeTable) while the main thread
# plans the read and builds the keys, so the two threads' steps interleave; then the read. The script's
# credentials are in the environment, so the client is the pull's own (no botocore
# "credentials" step).
STEPS = ["python up", "imports done", "settings loaded", "entity file: start",
         "entity file read", "client built", "first request", "read planned", "keys built",
         "last answer", "output written", "exit", "exited"]
AT_ONCE = slice(5, 9)


def assert_in_order(steps: list[str]) -> None:
    assert steps[:AT_ONCE.start] == STEPS[:AT_ONCE.start]
    assert sorted(steps[AT_ONCE]) == sorted(STEPS[AT_ONCE])
    assert steps.index("client built") < steps.index("first request")
    assert steps.index("read planned") < steps.index("keys built")
    assert steps[AT_ONCE.stop:] == STEPS[AT_ONCE.stop:]


def _one_round(cell: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The script's printout and JSON report of one round of ``cell`` on 300 ids."""
    out = tmp_path / f"{cell}.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_startup.py"), "--rounds", "1",
         "--entities", "300", "--cells", cell, "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_tiny_timeline_has_every_step_in_order(tmp_path: Path) -> None:
    printed, report = _one_round("timeline", tmp_path)
    (sample,) = report["samples"]
    marks = sample["marks"]
    assert_in_order(sorted(marks, key=lambda label: marks[label][0]))
    assert_in_order([step["step"] for step in report["timeline"]])
    assert "first request" in printed and "output written" in printed


def test_tiny_submit_start_marks_each_step_to_the_first_shard(tmp_path: Path) -> None:
    (sample,) = _one_round("submit_start", tmp_path)[1]["samples"]
    marks = sample["marks"]
    steps = ["imports done", "job checks: start", "entity file typed", "read planned",
             "first shard stored", "first shard queued"]
    assert sorted(steps, key=lambda label: marks[label][0]) == steps
    # Wall from the spawn, the process's CPU and its main thread's, each step.
    assert all(len(marks[label]) == 3 for label in steps)


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("bench_startup",
                                                  ROOT / "scripts" / "bench_startup.py")
    assert spec is not None and spec.loader is not None
    bench_startup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_startup)
    return bench_startup


@pytest.mark.parametrize("seed", ["1", "2", "3", "4"])
def test_steps_marked_at_the_same_rounded_time_keep_the_order_they_happened_in(
        seed: str) -> None:
    """Marks are rounded to 0.1 ms: two steps that end within it (a tiny file read, then its
    read planned) tie, and the timeline must not order them by the labels' hashes."""
    marks = {"python up": [0.01, 0.0], "entity file: start": [0.2, 0.1],
             "entity file read": [0.3001, 0.2], "read planned": [0.3001, 0.2],
             "keys built": [0.4, 0.3]}
    script = str(ROOT / "scripts" / "bench_startup.py")
    code = ("import importlib.util, json\n"
            f"spec = importlib.util.spec_from_file_location('bench_startup', {script!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            f"rows = module.timelines([{{'cell': 'timeline', 'tree': 't', 'marks': {marks!r}}}])\n"
            "print(json.dumps([row['step'] for row in rows]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": seed}, check=True, timeout=60)
    assert json.loads(done.stdout) == list(marks)


def test_a_failing_round_stops_the_endpoints(monkeypatch: Any) -> None:
    """The endpoints run in sessions of their own: a round that raises must not leave them."""
    bench_startup = _script()
    started: list[EndpointProcess] = []

    def start(**kwargs: Any) -> EndpointProcess:
        started.append(start_endpoint(**kwargs))
        return started[-1]

    def fail(*args: Any) -> None:
        raise RuntimeError("the round fails")

    monkeypatch.setattr(bench_startup, "start_endpoint", start)
    monkeypatch.setattr(bench_startup, "_run_to_exit", fail)
    try:
        with pytest.raises(RuntimeError, match="the round fails"):
            bench_startup.run([("installed", None)], 1, 10, ["whole_pull", "submit_start"])
        assert len(started) == 2
        assert [endpoint.process.poll() is not None for endpoint in started] == [True, True]
    finally:
        for endpoint in started:
            endpoint.stop()
