"""A finished job's summary and end notification (featurepull.tasks.finish), with the job's
steps in this process: every field of the summary against what the shards stored and the
endpoint answered, the finisher's log line, the warning of a job that found nothing, what a
cancelled job's notification carries, and an output outside the allowed places.
Real redis-server and the session's endpoint."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import structlog

from featurepull.bench.endpoint import EndpointProcess
from featurepull.config import Settings
from featurepull.tasks import JobStore
from featurepull.tasks.confine import RequestOutOfBounds
from featurepull.tasks.finish import end_summary, finish_job, job_totals
from featurepull.tasks.shards import run_shard
from tests.tasks.conftest import DRIVERS, JOB_FEATURES, NewJob

FEATURES = JOB_FEATURES
IDS = [199_900 + 3 * i for i in range(250)]  # 3 shards of 100; 200,000.. are unknown
FOUND = sum(driver < DRIVERS for driver in IDS)


def per_second(amount: float, seconds: float, rate: float) -> bool:
    """Whether ``rate`` (to a tenth) is ``amount`` over the time ``seconds`` (to the
    millisecond) was rounded from."""
    return amount / (seconds + 0.0005) - 0.05 <= rate <= amount / (seconds - 0.0005) + 0.05


def killed(done: int, total: int, capacity: dict[str, Any]) -> None:
    raise RuntimeError("the worker died mid-shard")


def test_the_summary_adds_up_what_the_shards_stored(
        new_job: NewJob, settings: Settings, store: JobStore, fast_dynamo: EndpointProcess,
        tmp_path: Path) -> None:
    meta = new_job(IDS)
    with pytest.raises(RuntimeError, match="died mid-shard"):  # shard 1 runs twice
        run_shard(meta.job_id, 1, settings, store, report=killed)
    before = fast_dynamo.stats()  # what the job's stored shards read
    for shard in (2, 1, 0):
        run_shard(meta.job_id, shard, settings, store)
    with structlog.testing.capture_logs() as logs:
        summary = finish_job(meta.job_id, settings, store)
    assert summary is not None
    counted = fast_dynamo.stats()["consumed_rcu"] - before["consumed_rcu"]
    stored = store.all_stats(meta.job_id)
    rest = dict(summary)
    read = rest.pop("read")
    seconds = rest["seconds"]
    assert 0 < seconds < 600 and 0 <= rest["publish_seconds"] <= seconds
    for timing in (seconds, rest["publish_seconds"]):  # to the millisecond
        assert type(timing) is float and round(timing, 3) == timing
    rows_per_s = rest.pop("rows_per_s")
    assert per_second(len(IDS), seconds, rows_per_s)
    assert rest.pop("slowest_shards") == [
        {"shard": n, "seconds": s["seconds"], "rows": s["keys"], "retries": 0,
         "throttles": 0}
        for n, s in sorted(stored.items(), key=lambda item: -item[1]["seconds"])]
    plan = rest.pop("read_plan")  # the plan stored at submit, and the mode it chose
    assert plan == store.meta(meta.job_id).request.read_plan and plan["mode"] == "batch-get"
    assert rest == {"job_id": meta.job_id, "rows": len(IDS), "shards": 3, "output": None,
                    "rows_written": None, "seconds": seconds,
                    "publish_seconds": rest["publish_seconds"], "redelivered_shards": 1,
                    "read_mode": "batch-get"}
    # The read statistics: summed over the shards (their seconds are work, not duration).
    assert (read["keys"], read["found"], read["missing"]) == (len(IDS), FOUND,
                                                              len(IDS) - FOUND)
    assert read["requests"] == 3 and read["retries"] == read["throttles"] == 0
    assert read["shard_seconds"] == pytest.approx(sum(s["seconds"] for s in stored.values()))
    assert "seconds" not in read and "rows_per_s" not in read
    assert read["consumed_rcu"] == pytest.approx(counted) and counted > 0
    assert per_second(read["consumed_rcu"], seconds, read["rcu_per_s"])
    for rate in (rows_per_s, read["rcu_per_s"]):  # to a tenth
        assert type(rate) is float and round(rate, 1) == rate
    # The finisher's log line says the same.
    assert [entry for entry in logs if entry["event"] == "job_done"] == [{
        "event": "job_done", "log_level": "info", "rows": len(IDS), "shards": 3,
        "output": None, "rows_written": None, "seconds": seconds, "found": FOUND,
        "missing": len(IDS) - FOUND, "retries": 0, "throttles": 0,
        "rcu": read["consumed_rcu"], "rcu_per_s": read["rcu_per_s"],
        "budget_rcu_per_s": read["budget_rcu_per_s"], "budget_wait_s": read["budget_wait_s"],
        "in_flight": f"{read['concurrency_min']}-{read['concurrency_max']}"}]
    assert not [entry for entry in logs if entry["log_level"] == "warning"]
    # The finisher's sign of life for the watchdog, and the record of who finished it.
    assert store.redis.get(f"featurepull:job:{meta.job_id}:alive") == b"finishing"
    assert store.redis.hget(f"featurepull:job:{meta.job_id}:meta", "finisher") == (
        f"{socket.gethostname()}:{os.getpid()}".encode())
    # Its end notification: the summary under the job's head fields.
    assert end_summary(store, store.meta(meta.job_id)) == {
        **summary, "state": "succeeded", "error": None}


def test_a_job_that_found_nothing_says_so(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    unknown = list(range(DRIVERS, DRIVERS + 150))
    meta = new_job(unknown)
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
    # A job stored before read plans were recorded read by key.
    spec = store.meta(meta.job_id).request.model_dump()
    store.update_spec(meta.job_id, {**spec, "read_plan": None})
    with structlog.testing.capture_logs() as logs:
        summary = finish_job(meta.job_id, settings, store)
    assert summary is not None and summary["read"]["found"] == 0
    assert summary["read_mode"] == "batch-get" and "read_plan" not in summary
    (warning,) = summary["warnings"]
    assert warning.startswith("0 of 150 entities were found in table demo.driver_stats; "
                              "their keys were built from the join keys driver_id (int64)")
    assert [entry for entry in logs if entry["log_level"] == "warning"] == [
        {"event": "nothing_found", "log_level": "warning", "message": warning}]


def test_a_cancelled_jobs_notification_carries_the_shards_it_finished(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    meta = new_job(IDS)
    run_shard(meta.job_id, 2, settings, store)
    assert store.cancel(meta.job_id)
    assert finish_job(meta.job_id, settings, store) is None
    ended = end_summary(store, store.meta(meta.job_id))
    read, slowest = ended.pop("read"), ended.pop("slowest_shards")
    assert ended == {"job_id": meta.job_id, "state": "cancelled", "rows": len(IDS),
                     "output": None, "error": "cancelled by request", "shards": 3,
                     "shards_done": 1}
    assert read["keys"] == 50 and read["requests"] == 1
    assert [(s["shard"], s["rows"]) for s in slowest] == [(2, 50)]


def test_an_output_outside_the_allowed_places_is_not_written(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    """A job stored without submit's checks (or forged in Redis) is bounded at the end too."""
    out = tmp_path / "out.parquet"
    meta = new_job(IDS, output=str(out))
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
    bounded = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"allowed_outputs": [str(tmp_path / "elsewhere")]})})
    with pytest.raises(RequestOutOfBounds, match="allowed_outputs"):
        finish_job(meta.job_id, bounded, store)
    assert not out.exists() and store.meta(meta.job_id).state == "running"


def test_a_scan_jobs_totals_count_what_its_scan_tasks_read(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    meta = new_job(IDS)
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
    # Two scan tasks of the job stored what they read (featurepull.tasks.scans).
    for part in (0, 1):
        store.put_scan_part(meta.job_id, part, {}, {"pages": 2, "items_scanned": 10,
                                                    "consumed_rcu": 4.0})
    read = job_totals(store, store.meta(meta.job_id))["read"]
    assert (read["pages"], read["items_scanned"], read["keys"]) == (4, 20, len(IDS))
    assert read["consumed_rcu"] == pytest.approx(
        8.0 + sum(s["consumed_rcu"] for s in store.all_stats(meta.job_id).values()))
    # The summary says which read ran, from the plan stored at submit.
    spec = store.meta(meta.job_id).request.model_dump()
    spec["read_plan"] = {**spec["read_plan"], "mode": "scan"}
    store.update_spec(meta.job_id, spec)
    summary = finish_job(meta.job_id, settings, store)
    assert summary is not None and summary["read_mode"] == "scan"
    assert summary["read_plan"] == spec["read_plan"] and summary["read"]["pages"] == 4
