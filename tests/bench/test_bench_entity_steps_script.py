"""scripts/bench_entity_steps.py runs end to end on a small entity file: each step timed in a
child process per tree and round (trees taking turns), each (tree, step)'s best round kept,
and the table it prints says what the JSON says; ``--instructions`` counts each step under
cachegrind. Its figures are the script's output, never asserted beyond "more than nothing"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_entity_steps.py"
STEPS = ["entity_file", "keys"]


def _run(tmp_path: Path, *args: str) -> tuple[str, str, list[dict[str, Any]]]:
    out = tmp_path / "steps.json"
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--json-out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr, json.loads(out.read_text())


def _assert_table(printed: str, unit: str, trees: list[str], figures: dict[Any, float]) -> None:
    header, *rows = printed.splitlines()
    assert header.split() == ["step", *f"({unit})".split(), *trees]
    assert [row.split() for row in rows] == [
        [step, *(f"{figures[tree, step]:,.3f}" for tree in trees)] for step in STEPS]


def test_two_trees_two_rounds_keep_each_cells_best(tmp_path: Path) -> None:
    printed, log, results = _run(tmp_path, "--rows", "20000", "--rounds", "2",
                                 "--tree", f"a={ROOT}", "--tree", f"b={ROOT}")
    samples = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    # Round by round, tree by tree, each step of one child.
    assert [(s["tree"], s["step"]) for s in samples] == [
        (tree, step) for _ in range(2) for tree in "ab" for step in STEPS]
    assert [(r["tree"], r["step"], r["rows"]) for r in results] == [
        (tree, step, 20000) for tree in "ab" for step in STEPS]
    for result in results:
        assert result["cpu_s"] > 0
        assert result == min((s for s in samples
                              if (s["tree"], s["step"]) == (result["tree"], result["step"])),
                             key=lambda s: s["cpu_s"])
    _assert_table(printed, "CPU s", ["a", "b"],
                  {(r["tree"], r["step"]): r["cpu_s"] for r in results})


@pytest.mark.slow  # three runs of Python under valgrind, its imports included: ~1 minute
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
@pytest.mark.skipif(not os.environ.get("FEATUREPULL_CACHEGRIND_TESTS"),
                    reason="1-2 minutes under valgrind: run with FEATUREPULL_CACHEGRIND_TESTS=1")
def test_instructions_of_each_step_under_cachegrind(tmp_path: Path) -> None:
    printed, _, results = _run(tmp_path, "--rows", "20000", "--instructions")
    assert [(r["tree"], r["step"], r["rows"]) for r in results] == [
        ("installed", step, 20000) for step in STEPS]
    # Each step the difference of two runs stopped at its ends: a stop ignored counts ~0
    # (within ~1 M: two runs of Python differ that much), 20,000 ids tens of millions.
    assert all(r["instructions"] > 5_000_000 for r in results)
    _assert_table(printed, "M", ["installed"],
                  {(r["tree"], r["step"]): r["instructions"] / 1e6 for r in results})
