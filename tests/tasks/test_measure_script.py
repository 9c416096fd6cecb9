"""scripts/measure_job.py runs end to end on a tiny job and writes its JSON (not its speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

ROOT = Path(__file__).resolve().parents[2]


def test_measure_job_script_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "measure.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "measure_job.py"), "--entities", "2000,3000",
         "--shard-size", "1000", "--workers", "1", "--interval", "0.1", "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker_child_peak_rss_mb" in done.stdout

    report = json.loads(out.read_text())
    assert [row["entities"] for row in report["table"]] == [2000, 3000]
    assert [row["shards"] for row in report["table"]] == [2, 3]
    for run in report["runs"]:
        details = run["details"]
        assert details["verification"]["ok"]
        assert details["messages"]["count"] == run["shards"]
        assert 0 < run["max_message_bytes"] < 1_000_000
        assert run["redis_peak_mb"] > 0 and run["job_seconds"] > 0
        assert {p["role"] for p in details["processes"]} == {"main", "child"}
        assert run["worker_child_peak_rss_mb"] > 0 and run["worker_main_peak_rss_mb"] > 0
        assert details["summary"]["read"]["keys"] == run["entities"]
        for process in details["processes"]:  # every worker process was stopped
            assert not running(process["pid"])


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_measure_job_script_measures_a_jsonl_submit_alone(tmp_path: Path) -> None:
    out = tmp_path / "submit.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "measure_job.py"), "--entities", "3000",
         "--shard-size", "1000", "--submit-only", "--entity-format", "jsonl",
         "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    [submitted] = json.loads(out.read_text())["submits"]
    assert (submitted["entities"], submitted["entity_format"]) == (3000, "jsonl")
    assert submitted["peak_rss_mb"] >= submitted["after_imports_mb"] > 0
    assert 0 < submitted["first_shard_queued_s"] <= submitted["submit_s"]
