"""scripts/bench_endpoint.py runs end to end on 500 requests against two trees (this
checkout twice): the endpoint's CPU is read around the requests (more than nothing, no more
than its wall allows), the answers are the endpoint's real answers (their digest recomputed
here), and the table says what the JSON says. Its CPU figures are the script's output, never
asserted beyond that."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from featurepull.bench.endpoint import DEFAULT_TABLE, SyntheticTable, start_endpoint

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_endpoint.py"
DRIVERS, REQUESTS, IN_FLIGHT = 1000, 500, 4  # ~0.07 s of endpoint CPU a round: ticks of 10 ms


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_endpoint", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expected_answers() -> tuple[str, int]:
    """The digest of the answers to the script's requests, and how many items they hold, from
    an endpoint started here; the items counted from the keys asked."""
    script = _script()
    bodies = script.request_bodies(DRIVERS, REQUESTS, 0.1, 0)
    table = SyntheticTable(0)
    present = {table.entity_id(driver) for driver in range(DRIVERS)}
    asked = [key["entity_id"]["S"] for body in bodies
             for key in json.loads(body)["RequestItems"][DEFAULT_TABLE]["Keys"]]
    with start_endpoint(drivers=DRIVERS) as endpoint:
        answers = asyncio.run(script._send_all(endpoint.url, script.signed(endpoint.url, bodies),
                                               IN_FLIGHT))
    items = [json.loads(answer)["Responses"][DEFAULT_TABLE] for answer in answers]
    assert sum(map(len, items)) == sum(key in present for key in asked) > 0
    return hashlib.sha256(b"\0".join(answers)).hexdigest()[:16], sum(map(len, items))


def _run(folder: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """The script's printout and JSON report, run from ``folder``."""
    out = folder / "endpoint.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--latency-ms", "0", *args,
                           "--json-out", str(out)],
                          cwd=folder, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def two_trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """Two trees (this checkout twice), two rounds of 500 requests each."""
    return _run(tmp_path_factory.mktemp("two-trees"), "--drivers", str(DRIVERS), "--requests",
                str(REQUESTS), "--in-flight", str(IN_FLIGHT), "--rounds", "2",
                "--tree", f"a={ROOT}", "--tree", f"b={ROOT}")


def test_two_trees_two_rounds_of_500_requests(two_trees: tuple[str, dict[str, Any]]) -> None:
    printed, report = two_trees
    assert report["trees"] == {"a": str(ROOT), "b": str(ROOT)}
    results = report["results"]
    assert list(results) == ["a", "b"]
    digest, _ = _expected_answers()
    for name, summary in results.items():
        rounds = summary["rounds"]
        assert len(rounds) == 2
        for result in rounds:
            assert result["answers_sha256"] == digest
            assert 0 < result["cpu_s"] <= result["wall_s"] * (os.cpu_count() or 1) + 0.05
            assert result["cpu_s"] == round(result["user_s"] + result["system_s"], 3)
            assert result["cpu_us_per_request"] == round(result["cpu_s"] / REQUESTS * 1e6, 1)
        median = statistics.median(result["cpu_s"] for result in rounds)
        assert summary["cpu_s_median"] == median
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} |"))
        assert [cell.strip() for cell in row.strip("|").split("|")] == [
            name, f"{median:.2f}", f"{median / REQUESTS * 1e6:.0f}",
            ", ".join(str(result["cpu_s"]) for result in rounds), digest]
    assert f"{REQUESTS:,} BatchGetItem x 100 keys, 10% found, {IN_FLIGHT} in flight" in printed


def test_the_default_tree_is_this_checkout_and_10_requests_cost_less(
        tmp_path: Path, two_trees: tuple[str, dict[str, Any]]) -> None:
    """Run from another folder, the endpoint is still imported from this checkout; its CPU
    over 10 requests is below any round's over 500 (a figure read, not a constant)."""
    _, report = _run(tmp_path, "--drivers", "100", "--requests", "10", "--rounds", "1")
    assert report["trees"] == {"this": str(ROOT)}
    (small,) = report["results"]["this"]["rounds"]
    assert small["cpu_s"] < min(result["cpu_s"] for summary in two_trees[1]["results"].values()
                                for result in summary["rounds"])
