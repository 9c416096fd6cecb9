"""scripts/bench.py runs end to end on tiny sizes and writes its JSON and plot: every method
measured with the fields docs/benchmarks.md quotes, pointless cells skipped with a reason. Its
speed is the script's output, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"baseline_sequential", "baseline_threaded", "raw_floor", "featurepull_pull",
           "celery_1"}
FIELDS = ("wall_s", "rows_per_s", "cpu_s", "peak_rss_mb", "endpoint_cpu_s")


def test_quick_run_writes_every_method_and_field(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--sizes", "1000",
         "--threads", "10,16", "--latencies", "1",
         "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    cells = report["cells"]
    measured = [c for c in cells if c["status"] == "ok"]
    assert {c["name"] for c in measured} == METHODS
    for cell in measured:
        assert cell["size"] == 1000 and cell["latency_ms"] == 1.0
        assert all(isinstance(cell[name], (int, float)) and cell[name] >= 0 for name in FIELDS)
        assert cell["wall_s"] > 0 and cell["peak_rss_mb"] > 0
        assert (cell["rows"], cell["found"]) == (1000, 900)
    # 1000 entities are 10 requests: a 16th thread has nothing to do.
    skipped = [c for c in cells if c["threads"] == 16]
    assert skipped and all(c["status"] == "skipped" and "10 requests" in c["reason"]
                           for c in skipped)
    assert {t["target"] for t in report["targets"]} == {
        "pull_time_vs_floor", "pull_speedup_vs_threaded_baseline"}
    assert Path(report["plot"]["path"]).read_bytes().startswith(b"\x89PNG")
    assert "baseline_threaded" in done.stdout and "JSON:" in done.stdout
