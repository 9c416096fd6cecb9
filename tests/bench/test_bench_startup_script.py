"""scripts/bench_startup.py's timeline runs end to end on a tiny pull: its probes (wrapped
functions of featurepull, botocore and the socket) still find what they wrap, the pull they
ride on still writes every row, and the steps come in the order a pull takes them. Its times
are the script's output, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The order of a feast-layout pull (CSV in, Parquet out): the table is checked on a thread
# of its own (its client built, then the first request, DescribeTable) while the keys are
# built, so the keys come anywhere among those two; then the read. The script's credentials
# are in the environment, so the client is the pull's own (no botocore "credentials" step).
STEPS = ["python up", "imports done", "settings loaded", "entity file: start",
         "entity file read", "client built", "first request", "keys built",
         "last answer", "output written", "exit", "exited"]
AT_ONCE = slice(5, 8)


def assert_in_order(steps: list[str]) -> None:
    assert steps[:AT_ONCE.start] == STEPS[:AT_ONCE.start]
    assert sorted(steps[AT_ONCE]) == sorted(STEPS[AT_ONCE])
    assert steps.index("client built") < steps.index("first request")
    assert steps[AT_ONCE.stop:] == STEPS[AT_ONCE.stop:]


def test_tiny_timeline_has_every_step_in_order(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_startup.py"), "--rounds", "1",
         "--entities", "300", "--cells", "timeline", "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    (sample,) = report["samples"]
    marks = sample["marks"]
    assert_in_order(sorted(marks, key=lambda label: marks[label][0]))
    assert_in_order([step["step"] for step in report["timeline"]])
    assert "first request" in done.stdout and "output written" in done.stdout
