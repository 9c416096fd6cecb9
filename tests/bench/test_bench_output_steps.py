"""scripts/bench_output_steps.py runs end to end on a few hundred rows: each step in a process
of its own, one JSON record per cell, and the table it prints. Times are the script's output,
never asserted here (only that a step was timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STEPS = ("write_rows", "publish", "lines", "texts")  # every step, in the script's order

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # five processes start (the script, a child per step): ~3 s
def test_one_round_of_each_step_on_300_rows(tmp_path: Path) -> None:
    out = tmp_path / "steps.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_output_steps.py"), "--rows", "300",
         "--rounds", "1", "--found-share", "0.5", "--formats", "csv",
         "--json-out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [(r["step"], r["format"], r["found_share"], r["rows"], r["tree"]) for r in results] == [
        (step, "csv", 0.5, 300, "installed") for step in STEPS]
    assert {key for result in results for key in result} == {
        "cpu_s", "tree", "step", "format", "found_share", "rows", "load_average"}
    assert results[0]["cpu_s"] > 0  # a pull's write_rows, timed in its process
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["step", "format", "found", "cpu_s"]
    assert [row.split()[:3] for row in rows] == [
        [step, "csv", "50%"] for step in STEPS]
