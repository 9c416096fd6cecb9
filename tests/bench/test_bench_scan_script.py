"""scripts/bench_scan.py runs end to end on a tiny table: both modes at each share of the
keys, the read units the endpoint charged (the same rows from both, or it exits), and a
crossover. Its times are the script's output, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_measures_both_modes_and_the_crossover(tmp_path: Path) -> None:
    out = tmp_path / "bench_scan.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_scan.py"), "--items", "4000",
         "--fractions", "0.02,0.5", "--latency-ms", "0", "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["keys"], r["mode"]) for r in rows] == [
        (80, "batch-get"), (80, "scan"), (2_000, "batch-get"), (2_000, "scan")]
    for row in rows:
        if row["mode"] == "batch-get":  # 0.5 RCU a key, found or not, in 100-key requests
            assert row["consumed_rcu"] == row["keys"] / 2
            assert row["requests"] == -(-row["keys"] // 100)
        else:  # the whole table, whatever the share
            assert row["items_scanned"] == 4_000 and row["found"] == row["keys"]
            assert row["consumed_rcu"] == rows[1]["consumed_rcu"] == row["reader_rcu"]
    share = rows[1]["consumed_rcu"] / (4_000 / 2)  # the scan's cost in keys' worth
    assert report["crossover"]["rcu_fraction"] == round(share, 4)
    assert "crossover: scan costs fewer RCU above" in done.stdout
