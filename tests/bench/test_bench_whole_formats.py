"""scripts/bench.py --whole-process with other entity and output formats (--whole-formats):
the pull reads the Parquet entity file and writes the format asked for, every row of it,
and the submit cell counts a text output's rows and found rows as it does a Parquet one's.
Times are the script's output, never asserted here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from featurepull.io import write_rows

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # three processes start (the script, the endpoint, the pull): ~5-25 s
def test_a_pull_cell_reads_parquet_and_writes_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "whole.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--whole-process",
         "--whole-methods", "pull", "--sizes", "20000", "--threads", "4", "--latencies", "1",
         "--whole-formats", "parquet,jsonl", "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    [cell] = report["cells"]
    assert (cell["entities"], cell["output"], cell["rows"], cell["found"]) == (
        "entities-20000.parquet", "pull.jsonl", 20000, 2000)
    # The endpoint's own CPU, apart from the pull's: 200 requests are a few 10 ms clock ticks
    # (0.04 s here; 400 entities, 4 requests, were 0.00).
    assert cell["endpoint_cpu_s"] > 0
    assert report["command"][report["command"].index("--whole-formats") + 1] == "parquet,jsonl"
    assert {target["target"] for target in report["targets"]} == {"pull whole / read",
                                                                   "pull CPU µs per row"}
    # The table it prints: a header, then the cell's row (method, size, latency, found share).
    header, row = done.stdout.splitlines()[:2]
    assert header.split()[:4] == ["method", "size", "ms", "found"]
    assert "endpoint cpu s" in header
    assert row.split()[:4] == ["pull", "20,000", "1", "0.1"]
    assert row.split()[8] == f"{cell['endpoint_cpu_s']:.2f}"  # its "endpoint cpu s" column
    assert f"json: {out}" in done.stdout


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_event_times_of_an_output_null_where_nothing_was_found(tmp_path: Path,
                                                               fmt: str) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location("bench_whole",
                                                      ROOT / "scripts" / "bench_whole.py")
        assert spec is not None and spec.loader is not None
        bench_whole = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_whole)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    output = tmp_path / f"out.{fmt}"
    found = (datetime(2026, 1, 2, tzinfo=UTC), 0.5)
    write_rows(str(output), {"driver_id": [1, 2, 3]}, [None, found, None], ["conv_rate"])
    times = bench_whole.event_times(output)
    assert (len(times), times.null_count) == (3, 2)
