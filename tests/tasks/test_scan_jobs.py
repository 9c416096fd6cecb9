"""Scan jobs through real prefork workers: the output of a job read with a parallel Scan is
the batch-get job's, byte for byte, for both layouts (unknown ids, repeats, shuffled rows);
`auto` plans once at submit and says why; the statistics in the job's status are what the
endpoint counted; a worker child SIGKILLed mid-scan loses nothing; a budget paces the scan.

One worker instance serves every test (a job may name its own endpoint: the plain table is
on moto, the Feast one on a bench endpoint of its own, which answers Scan with segments and
charges ConsumedCapacity by size)."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.cli import main
from featurepull.client import Job, submit
from featurepull.config import Settings
from featurepull.local import RedisService
from featurepull.tasks.requests import InvalidJobRequest
from featurepull.tasks.scans import ScanRefused
from tests.conftest import moto_table
from tests.tasks.conftest import Fleet, fleet

pytestmark = pytest.mark.slow  # starts a worker fleet
DRIVERS = 20_000
TABLE = "demo.driver_stats"
ENTITIES = 12_000  # ~10,000 of the 20,000 drivers: a Scan is the cheaper read
SHARD_SIZE = 3_000
SCAN_MIN_ITEMS = 1_000  # auto may scan a table this small (the default is 100,000)
USERS = 300  # items of the plain table (on moto)
SCAN_TASK_BYTES = 500_000
CLIENT = "scanfleet-tests"  # the workers' access key id: the endpoint counts by it


def entity_ids(count: int, seed: int) -> list[int]:
    """Known drivers, 10% unknown ids and 5% repeats, shuffled."""
    rng = random.Random(seed)
    ids = rng.sample(range(DRIVERS), int(count * 0.85)) + [DRIVERS + i for i in range(count // 10)]
    ids += rng.choices(ids, k=count - len(ids))
    rng.shuffle(ids)
    return ids


def write_ids(path: Path, ids: list[int]) -> Path:
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


def sized(settings: Settings, shard_size: int = SHARD_SIZE) -> Settings:
    """The submitting process's settings with this shard size (a job is planned there)."""
    return settings.model_copy(update={
        "jobs": settings.jobs.model_copy(update={"shard_size": shard_size})})


@pytest.fixture(scope="module")
def fast_dynamo() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=DRIVERS, table=TABLE) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def workers(redis_server: RedisService, fast_dynamo: EndpointProcess) -> Iterator[Fleet]:
    with fleet(redis_server, fast_dynamo.url) as running:
        running.env["AWS_ACCESS_KEY_ID"] = CLIENT
        running.env["FEATUREPULL_DYNAMODB__SCAN_MIN_ITEMS"] = str(SCAN_MIN_ITEMS)
        # Scan tasks of ~1 MB (100 bytes per key) of the ~3.5 MB table: several on the fleet.
        running.env["FEATUREPULL_JOBS__SCAN_TASK_BYTES"] = str(SCAN_TASK_BYTES)
        running.start_worker(concurrency=2)
        yield running


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ids(tmp_path_factory.mktemp("scan") / "drivers.parquet",
                     entity_ids(ENTITIES, seed=11))


@pytest.fixture(scope="module")
def batch_get_output(workers: Fleet, entities: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """What the same job writes when read with BatchGetItem."""
    out = tmp_path_factory.mktemp("batch-get") / "features.parquet"
    job = submit("driver_stats", list(FEATURES), str(entities), str(out),
                 settings=sized(workers.settings()), dynamodb={"read_mode": "batch-get"})
    status = job.wait(timeout=240, progress=False)
    assert (status.summary or {})["read_mode"] == "batch-get"
    return pq.read_table(out)


def test_auto_scans_most_of_a_table_writes_the_batch_get_output_and_counts_what_it_read(
        workers: Fleet, fast_dynamo: EndpointProcess, entities: Path,
        batch_get_output: pa.Table, tmp_path: Path) -> None:
    out = tmp_path / "auto.parquet"
    env = {**workers.env, "FEATUREPULL_JOBS__SHARD_SIZE": str(SHARD_SIZE)}
    fast_dynamo.reset_stats()
    done = subprocess.run(
        [sys.executable, "-m", "featurepull", "submit", "--table", "driver_stats",
         "--features", ",".join(FEATURES), "--entities", str(entities), "--output", str(out),
         "--read-mode", "auto", "--wait", "--json"],
        env=env, capture_output=True, text=True, timeout=240)
    counted = fast_dynamo.stats()
    assert done.returncode == 0, done.stderr
    assert pq.read_table(out).equals(batch_get_output)  # same schema, rows and order
    # Planned at submit, and said: scan, with both estimates.
    assert "read_mode=scan: ~" in done.stderr and "RCU for batch-get" in done.stderr
    summary = json.loads(done.stdout)
    plan, read = summary["read_plan"], summary["read"]
    assert summary["read_mode"] == plan["mode"] == "scan" and plan["requested"] == "auto"
    tasks = plan["scan_tasks"]  # several: the job's keys are worth scanning ~1 MB each
    assert plan["scan_rcu"] * 2 <= plan["batch_get_rcu"] and 1 < tasks <= 4  # 4 shards
    shown = CliRunner().invoke(main, ["status", summary["job_id"]], env=env,
                               catch_exceptions=False)
    assert f"{tasks}/{tasks} scan tasks" in shown.stdout and "read_mode=scan: ~" in shown.stdout
    assert "pages=" in shown.stdout and "items_scanned=" in shown.stdout
    # The statistics are what the endpoint counted: every item of the table scanned once,
    # each unique known key matched once, no BatchGetItem at all.
    known = {d for d in entity_ids(ENTITIES, seed=11) if d < DRIVERS}
    assert read["items_scanned"] == counted["scanned_items"] == DRIVERS
    assert read["items_matched"] == len(known) and read["keys"] == ENTITIES
    assert read["pages"] == counted["scan_pages"] and counted["batch_get_item"] == 0
    assert read["consumed_rcu"] == pytest.approx(counted["consumed_rcu"], abs=0.01)
    assert read["missing"] == batch_get_output.column("event_timestamp").null_count
    # Redis keeps nothing of the scan once the job is done.
    assert not list(workers.redis().scan_iter(f"featurepull:job:{summary['job_id']}:scan:*"))


def test_auto_reads_a_small_fraction_by_key_and_says_why(workers: Fleet,
                                                         tmp_path: Path) -> None:
    # Planned by a worker (featurepull.submit_job), as a scoring app would start the job.
    few = write_ids(tmp_path / "few.parquet", entity_ids(500, seed=12))
    started = _send_submit_job(workers, {"table": "driver_stats", "features": ["city"],
                                         "entities": str(few),
                                         "dynamodb": {"read_mode": "auto"}})
    status = Job(started.get(timeout=60)["job_id"], workers.settings()).wait(
        timeout=120, progress=False)
    assert status.read_mode == "batch-get" and status.scan_tasks == 0
    assert status.read_reason and status.read_reason.startswith("read_mode=batch-get: ~")
    assert "a scan must be 2x cheaper" in status.read_reason
    assert (status.summary or {})["read"]["pages"] == 0
    shown = CliRunner().invoke(main, ["status", status.job_id], env=workers.env,
                               catch_exceptions=False)
    assert status.read_reason in shown.stdout.splitlines()
    assert "read_mode=batch-get: ~" in workers.log_text()  # job_created says it too


def _send_submit_job(workers: Fleet, request: dict[str, Any]) -> Any:
    from celery import Celery

    app = Celery("scoring", broker=workers.redis_url, backend=workers.redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    result_accept_content=["json"])
    return app.send_task("featurepull.submit_job", queue=workers.queue, args=[request])


def test_a_bad_read_mode_is_refused_before_anything_is_stored(workers: Fleet,
                                                             entities: Path) -> None:
    refused = _send_submit_job(workers, {"table": "driver_stats", "features": ["city"],
                                         "entities": str(entities),
                                         "dynamodb": {"read_mode": "scna"}})
    with pytest.raises(Exception, match=r"read_mode 'scna' is not one of batch-get, scan, "
                                        r"auto"):
        refused.get(timeout=60)
    with pytest.raises(InvalidJobRequest, match="read_mode 'fast' is not one of"):
        submit("driver_stats", ["city"], str(entities), settings=workers.settings(),
               dynamodb={"read_mode": "fast"})
    done = subprocess.run(
        [sys.executable, "-m", "featurepull", "submit", "--table", "driver_stats",
         "--features", "city", "--entities", str(entities), "--read-mode", "scna"],
        env=workers.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--read-mode" in done.stderr and "'scna'" in done.stderr
    # A scan a scan task could not hold: refused with the limit, nothing left in Redis;
    # auto reads the same job with BatchGetItem and says why.
    small = workers.settings()
    small.jobs.max_scan_keys = 1_000
    stored = set(workers.redis().scan_iter("featurepull:job:*"))
    with pytest.raises(ScanRefused, match=r"over jobs.max_scan_keys \(1,000\).* raise "
                                          r"jobs.max_scan_keys"):
        submit("driver_stats", ["city"], str(entities), settings=small,
               dynamodb={"read_mode": "scan"})
    assert set(workers.redis().scan_iter("featurepull:job:*")) == stored
    job = submit("driver_stats", ["city"], str(entities), settings=small,
                 dynamodb={"read_mode": "auto"})
    job.cancel()  # the plan is what this checks: no need to read
    plan = job.store.meta(job.id).request.read_plan or {}
    assert plan["mode"] == "batch-get" and "over jobs.max_scan_keys (1,000)" in plan["reason"]


@pytest.fixture(scope="module")
def plain_table(ddb: Any) -> str:
    """A plain-layout table on moto: a number hash key, features of three types."""
    return moto_table(ddb, "plainscan", [("user_id", "N")], [
        {"user_id": {"N": str(i)}, "plan": {"S": f"p{i % 7}"}, "score": {"N": f"{i / 8}"},
         "visits": {"N": str(i * 3)},
         "event_ts": {"S": f"2026-11-{1 + i % 28:02d}T00:00:00+00:00"}} for i in range(USERS)])


def test_a_plain_layout_scan_job_reads_what_batch_get_reads(
        workers: Fleet, endpoint_url: str, plain_table: str, tmp_path: Path) -> None:
    rng = random.Random(13)
    users = rng.sample(range(USERS), 250) + list(range(10_000, 10_030))
    users += rng.choices(users, k=20)
    rng.shuffle(users)
    entities = tmp_path / "users.csv"
    entities.write_text("user_id\n" + "".join(f"{u}\n" for u in users))
    rows = {}
    for mode in ("batch-get", "scan"):
        job = submit(plain_table, ["plan", "score", "visits"], str(entities), layout="plain",
                     settings=sized(workers.settings(), 100),
                     dynamodb={"endpoint_url": endpoint_url, "read_mode": mode})
        status = job.wait(timeout=120, progress=False)
        assert status.shards == 3 and (status.summary or {})["read_mode"] == mode
        rows[mode] = pa.concat_tables(job.tables())
    assert rows["scan"].equals(rows["batch-get"])
    assert rows["scan"].column("user_id").to_pylist() == users
    assert rows["scan"].column("plan").null_count == sum(u >= USERS for u in users)


def freeze_mid_scan(job: Job, timeout: float = 120) -> int:
    """SIGSTOP the pool child running a scan task not done yet, and return its pid: frozen
    first, then checked, so a kill that follows lands mid-scan (as freeze_mid_shard)."""
    def running(owner: str) -> bool:
        return any(who == owner and not job.store.is_scan_done(job.id, part)
                   for part, who in job.store.scan_owners(job.id).items())

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for owner in set(job.store.scan_owners(job.id).values()):
            victim = int(owner.rsplit(":", 1)[1])
            if running(owner):
                os.kill(victim, signal.SIGSTOP)
                if running(owner):
                    return victim
                os.kill(victim, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("no pool child was caught in the middle of a scan task")


def test_a_child_killed_mid_scan_loses_nothing_and_the_budget_paces_the_scan(
        workers: Fleet, fast_dynamo: EndpointProcess, entities: Path,
        batch_get_output: pa.Table, tmp_path: Path) -> None:
    budget = 200.0  # RCU/s: the table's ~430 RCU take about two seconds
    out = tmp_path / "killed.parquet"
    job = submit("driver_stats", list(FEATURES), str(entities), str(out),
                 settings=sized(workers.settings()),
                 dynamodb={"read_mode": "scan", "max_rcu_per_s": budget})
    victim = freeze_mid_scan(job)
    assert victim in workers.children(workers.workers[0])
    os.kill(victim, signal.SIGKILL)
    status = job.wait(timeout=240, progress=False)
    assert pq.read_table(out).equals(batch_get_output)
    assert "signal 9" in workers.log_text()
    read = (status.summary or {})["read"]
    # The killed task stored nothing: its segments count once, as scanned again.
    assert read["items_scanned"] == DRIVERS and read["budget_rcu_per_s"] == budget
    assert status.items_scanned == DRIVERS  # and so does its progress
    # At the endpoint, second by second while the job ran: within the budget after the
    # first second (its burst), the killed task's pages included.
    meta = job.store.meta(job.id)
    per_second = fast_dynamo.capacity()["clients"][CLIENT]["per_second"]
    series = [per_second.get(str(s), 0.0)
              for s in range(int(meta.created), int(meta.finished or time.time()) + 1)]
    assert sum(series) >= read["consumed_rcu"] - 0.01, series
    assert all(units <= 1.1 * budget for units in series[1:]), series


class _Terminal(io.StringIO):
    """stderr as a terminal: Job.wait's bar (tqdm) draws only on one."""

    def isatty(self) -> bool:
        return True


def test_wait_shows_the_items_scanned_while_the_scan_tasks_run(
        workers: Fleet, entities: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The budget stretches the scan over seconds (the table is ~430 RCU); no shard can
    # start before every scan task is done, so rows read would show 0 all that time.
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    job = submit("driver_stats", ["city"], str(entities), settings=sized(workers.settings()),
                 dynamodb={"read_mode": "scan", "max_rcu_per_s": 150})
    status = job.wait(timeout=240, poll_s=0.1)
    assert status.state == "succeeded"
    frames = [frame.strip() for frame in re.split(r"[\r\n]", terminal.getvalue())
              if frame.strip()]
    drawn = [(match["phase"], int(match["done"]), int(match["total"]), match["unit"])
             for match in map(_BAR.search, frames) if match]
    assert len(drawn) == len(frames), frames
    phases = [phase for phase, *_ in drawn]
    first, last = phases.index(" scanning"), len(phases) - 1 - phases[::-1].index(" scanning")
    before, scanning, reading = drawn[:first], drawn[first:last + 1], drawn[last + 1:]
    # The scan's progress, against the table's item count: neither nothing nor all of it.
    assert any(0 < done < DRIVERS for _, done, _, _ in scanning), frames
    assert {(phase, total, unit) for phase, _, total, unit in scanning} == {
        (" scanning", DRIVERS, "items")}
    # Before it the bar's first frame, after it the entity rows the shards read, to the end.
    assert {frame[::3] for frame in before + reading} == {("", "rows")}
    assert reading[-1][1:] == (ENTITIES, ENTITIES, "rows")
    # `featurepull status` says the same: every item scanned once.
    assert status.items_scanned == DRIVERS and status.table_items == DRIVERS
    assert f"({DRIVERS:,} of ~{DRIVERS:,} items scanned)" in status.line()


# tqdm's bar: "job 1a2b3c4d scanning:  45%|████▌     | 9000/20000 [00:01<00:01, 8.0kitems/s]"
_BAR = re.compile(r"^job [0-9a-f]{8}(?P<phase>( scanning)?): +\d+%\|[^|]*\| "
                  r"(?P<done>\d+)/(?P<total>\d+) \[.*?(?P<unit>items|rows)/s\]$")
