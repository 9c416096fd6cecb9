"""scripts/bench_fleet_timeline.py runs end to end on a tiny ``submit --wait`` (300 ids in
shards of 100, two pool processes): the worker's JSON log still has the lines it reads, each
shard's steps come in the order a shard task takes them, the job's steps in the order a job
takes them, and the table says what the JSON says. Its times are the script's output, never
asserted beyond their order."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts redis and a worker fleet: ~8 s

ROOT = Path(__file__).resolve().parents[2]
# The job's steps, in the order they happen (rounded to the millisecond: ties allowed). The
# finisher's task ends after job_done, but the job's end wakes the command at once: its exit
# and the task's end come in either order.
MARKS = ["first_shard_received", "first_shard_start", "last_shard_done", "finisher_started",
         "job_done", "exited"]
SLACK = 0.002  # two figures each rounded to the millisecond


def test_one_run_of_three_shards_has_every_step_in_order(tmp_path: Path) -> None:
    out = tmp_path / "timeline.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_fleet_timeline.py"), "--rounds", "1",
         "--entities", "300", "--threads", "4", "--latency", "1", "--processes", "2",
         "--tree", f"a={ROOT}", "--tree-env", "a:FEATUREPULL_JOBS__SHARD_SIZE=100",
         "--json-out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = json.loads(out.read_text())
    assert (run["tree"], run["round"], run["rows"], run["found"]) == ("a", 0, 300, 30)
    marks = run["marks"]
    assert sorted(marks) == sorted([*MARKS, "last_shard_received", "finisher_ended"])
    assert 0 < marks["first_shard_received"] <= marks["last_shard_received"]
    assert [marks[m] for m in MARKS] == sorted(marks[m] for m in MARKS)
    assert marks["job_done"] <= marks["finisher_ended"]
    assert marks["exited"] == run["wall_s"]

    shards = run["shards"]
    assert sorted(shards) == ["0", "1", "2"]
    for shard in shards.values():  # in its pool process: task, read, shard_done, task's end
        assert 0 < shard["task_start"] <= shard["read_start"] <= shard["done"] \
            <= shard["task_end"]
        assert 0 < shard["read_s"] <= shard["done"] - shard["read_start"] + SLACK
        assert marks["first_shard_start"] <= shard["read_start"]
        assert shard["done"] <= marks["last_shard_done"] <= marks["finisher_started"]
    steps = run["shard_steps_s"]
    assert steps["task"] == pytest.approx(statistics.median(
        s["task_end"] - s["task_start"] for s in shards.values()), abs=SLACK)
    assert steps["read"] == statistics.median(s["read_s"] for s in shards.values())
    assert all(value >= 0 for value in steps.values())

    # Each pool process ran its tasks one after the other (never two at once).
    pids = {str(pid) for pid in run["pool_pids"]}
    assert len(pids) == 2 and set(run["idle_between_tasks_s"]) <= pids
    assert run["idle_between_tasks_s"] and set(run["pool_first_task_s"]) == set(
        run["idle_between_tasks_s"])
    assert all(idle >= 0 for idle in run["idle_between_tasks_s"].values())
    assert min(run["pool_first_task_s"].values()) <= min(s["task_start"]
                                                         for s in shards.values())
    assert run["cpu_by_process_s"]["pool"] > 0 and run["submitter_cpu_s"] > 0
    assert run["cpu_s"] >= run["submitter_cpu_s"] + run["cpu_by_process_s"]["pool"] - SLACK

    lines = done.stdout.splitlines()
    assert json.loads(lines[0]) == {key: run[key] for key in json.loads(lines[0])}
    table = {label.strip(): value.strip()
             for label, value in (line.rsplit("|", 1) for line in lines[2:] if "|" in line)}
    for mark in [*MARKS, "finisher_ended"]:
        assert table[f"{mark}, s from spawn"] == f"{marks[mark]:.3f}"
    for step, value in steps.items():
        assert table[f"a shard's {step}, s"] == f"{value:.3f}"
    assert table["wall_s"] == f"{run['wall_s']:.3f}"
    assert table["cpu pool"] == f"{run['cpu_by_process_s']['pool']:.3f}"
