"""Scheduled pulls: validation of ``[[schedules]]``, output templates, the skip-if-running
rule on a real redis-server, and a real ``featurepull beat`` process driving real prefork
workers against a real HTTP DynamoDB endpoint."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from celery.schedules import crontab
from celery.schedules import schedule as interval

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.config import ConfigError, Settings, load_settings
from featurepull.local import RedisService, stop_process_group
from featurepull.tasks.schedules import (
    RUN_SCHEDULE_TASK,
    beat_entry,
    celery_schedule,
    find_schedule,
    render_output,
    schedule_request,
    start_scheduled_job,
)
from featurepull.tasks.store import JobMeta, JobStore, connect
from featurepull.worker.app import beat_schedule
from tests.tasks.conftest import Fleet, fleet

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

SCHEDULE = """
[[schedules]]
name = "{name}"
{timing}
table = "driver_stats"
features = {features}
entities = "{entities}"
output = "{output}"
{extra}
"""


def schedule_toml(path: Path, name: str = "nightly", timing: str = 'cron = "0 2 * * *"',
                  output: str = "s3://out/{name}/{date}.parquet",
                  entities: str = "s3://in/drivers.parquet", extra: str = "") -> Path:
    path.write_text(SCHEDULE.format(name=name, timing=timing, features=json.dumps(FEATURES[:2]),
                                    entities=entities, output=output, extra=extra))
    return path


def load_one(tmp_path: Path, **kwargs: str) -> Settings:
    return load_settings(schedule_toml(tmp_path / "schedules.toml", **kwargs))


# --- validation ------------------------------------------------------------------------


def test_a_schedule_loads_from_toml_and_from_env_json(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = load_one(tmp_path, extra='dynamodb = {max_read_workers = 2}').schedules[0]
    assert (schedule.name, schedule.cron, schedule.every_s) == ("nightly", "0 2 * * *", None)
    assert schedule.dynamodb == {"max_read_workers": 2}
    monkeypatch.setenv("FEATUREPULL_SCHEDULES", json.dumps([{
        "name": "often", "every_s": 30, "table": "t", "features": ["a"],
        "entities": "redis-key:drivers", "output": "/data/{name}-{datetime}.csv"}]))
    assert load_settings().schedules[0].every_s == 30
    monkeypatch.delenv("FEATUREPULL_SCHEDULES")
    assert Settings().schedules == []


@pytest.mark.parametrize(("timing", "message"), [
    ('cron = "0 2 * * *"\nevery_s = 30', "set exactly one of cron"),
    ("", "set exactly one of cron"),
    ('cron = "0 2 * *"', "must have 5 fields: minute hour day_of_month month_of_year day_of_week"),
    ("every_s = 0", "greater than or equal to 1"),
])
def test_timing_must_be_exactly_one_cron_or_interval(tmp_path: Path, timing: str,
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_one(tmp_path, timing=timing)
    assert "schedules.0" in str(info.value)


@pytest.mark.parametrize(("cron", "field"), [
    ("61 2 * * *", "minute '61'"),
    ("0 25 * * *", "hour '25'"),
    ("0 2 0 * *", "day_of_month '0'"),
    ("0 2 * 13 *", "month_of_year '13'"),
    ("0 2 * * mon-xyz", "day_of_week 'mon-xyz'"),
    ("0 */0 * * *", "hour '\\*/0'"),
])
def test_a_bad_cron_field_is_named_with_its_schedule(tmp_path: Path, cron: str,
                                                     field: str) -> None:
    settings = load_one(tmp_path, timing=f'cron = "{cron}"')
    with pytest.raises(ConfigError, match=f"schedule 'nightly': cron '.*': {field} is not valid"):
        beat_schedule(settings)


def test_schedule_names_must_be_unique(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    one = schedule_toml(tmp_path / "one.toml").read_text()
    path.write_text(one + one)
    with pytest.raises(ConfigError, match="schedule names must be unique; repeated: nightly"):
        load_settings(path)


@pytest.mark.parametrize(("output", "message"), [
    ("s3://out/{name}/{day}.parquet", "unknown placeholders day; allowed: {name}, {date}, "
                                      "{datetime}"),
    ("s3://out/{}.parquet", "unknown placeholders {}"),
    ("s3://out/{date.year}.parquet", "unknown placeholders date.year"),
    ("s3://out/{name.parquet", "is not a valid template"),
])
def test_unknown_output_placeholders_are_refused(tmp_path: Path, output: str,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_one(tmp_path, output=output)


def test_a_job_setting_a_schedule_may_not_choose_is_refused_when_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"schedules\.0\.dynamodb .*a job may not set "
                                          r"max_pool_connections"):
        load_one(tmp_path, extra='dynamodb = {max_pool_connections = 3}')


# --- templates, requests and beat entries ----------------------------------------------


def test_output_template_renders_name_date_and_datetime_in_utc() -> None:
    at = datetime(2026, 3, 1, 1, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    assert render_output("s3://b/features/{name}/{date}.parquet", "nightly", at) == \
        "s3://b/features/nightly/2026-02-28.parquet"
    assert render_output("/data/{name}-{datetime}.csv", "n", at) == "/data/n-20260228T233005Z.csv"


def test_a_run_becomes_a_job_request(tmp_path: Path) -> None:
    schedule = load_one(tmp_path, extra='project = "fraud"\njoin_keys = ["driver_id"]\n'
                                        'dynamodb = {max_read_workers = 1}').schedules[0]
    request = schedule_request(schedule, datetime(2026, 5, 4, 2, 0, tzinfo=UTC))
    assert request.model_dump() == {
        "table": "driver_stats", "features": list(FEATURES[:2]),
        "entities": "s3://in/drivers.parquet", "output": "s3://out/nightly/2026-05-04.parquet",
        "overwrite": False, "layout": "feast", "join_keys": ["driver_id"], "join_key_types": {},
        "event_ts_attribute": "event_ts", "project": "fraud",
        "dynamodb": {"max_read_workers": 1}, "notify": None, "scorer": None,
        "with_features": False, "allow_missing_features": False,
        "feature_store_yaml": None, "feature_service": None, "full_feature_names": False,
        "respect_ttl": False}


def test_a_schedule_may_allow_missing_features(tmp_path: Path) -> None:
    schedule = load_one(tmp_path, extra="allow_missing_features = true").schedules[0]
    now = datetime(2026, 5, 4, 2, 0, tzinfo=UTC)
    assert schedule_request(schedule, now).allow_missing_features is True


def test_beat_entries_carry_the_schedule_name_only(tmp_path: Path) -> None:
    settings = load_one(tmp_path)
    settings.jobs.queue = "scoring"
    entries = beat_schedule(settings)
    assert list(entries) == ["featurepull.schedule.nightly"]
    entry = entries["featurepull.schedule.nightly"]
    assert (entry["task"], entry["args"], entry["options"]) == (
        RUN_SCHEDULE_TASK, ["nightly"], {"queue": "scoring"})
    assert entry["schedule"] == crontab(minute="0", hour="2")
    often = load_one(tmp_path, timing="every_s = 30").schedules[0]
    entry = beat_entry(often, "q")
    assert isinstance(entry["schedule"], interval) and entry["schedule"].seconds == 30
    assert entry["options"] == {"queue": "q", "expires": 30}
    assert celery_schedule(often).seconds == 30


# --- skip while the previous run's job is not finished (real redis-server) --------------


@pytest.fixture
def store(redis_server: RedisService) -> JobStore:
    return JobStore(connect(redis_server.url), ttl_s=600)


def _no_enqueue(meta: JobMeta) -> None:
    raise AssertionError(f"job {meta.job_id} must not be started")


def test_a_run_is_skipped_while_the_last_job_is_unfinished(tmp_path: Path,
                                                           store: JobStore) -> None:
    name = f"s{uuid.uuid4().hex[:8]}"
    settings = load_one(tmp_path, name=name, timing="every_s = 60")
    running = store.new_job_id()
    store.create(running, {"request": {}}, iter([]))  # a queued job with no shards
    store.record_schedule_run(name, running)
    outcome = start_scheduled_job(name, settings, store, "tick-1", _no_enqueue)
    assert outcome == {"schedule": name, "skipped": True, "running_job": running,
                       "reason": "job queued"}
    assert store.schedule_runs(name) == [running]
    assert store.lock_schedule(name, "tick-2", 5)  # the skipped run let go of the lock
    store.unlock_schedule(name, "tick-2")


def test_a_run_is_skipped_while_another_is_starting(tmp_path: Path, store: JobStore) -> None:
    name = f"s{uuid.uuid4().hex[:8]}"
    settings = load_one(tmp_path, name=name, timing="every_s = 60")
    assert store.lock_schedule(name, "tick-1", 30)
    outcome = start_scheduled_job(name, settings, store, "tick-2", _no_enqueue)
    assert outcome["skipped"] is True and outcome["reason"] == "another run is starting"
    assert not store.lock_schedule(name, "tick-3", 30)  # still tick-1's
    store.unlock_schedule(name, "tick-1")


def test_an_unknown_schedule_name_says_to_share_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schedule 'weekly' is not in this worker's settings "
                                          r"\(it has: nightly\); give beat and the workers"):
        find_schedule(load_one(tmp_path), "weekly")


# --- a real beat process and real workers -----------------------------------------------

DRIVERS = 5_000
LATENCY_MS = 100


@pytest.fixture(scope="module")
def slow_dynamo() -> Iterator[EndpointProcess]:
    """A small Feast-layout table whose every BatchGetItem takes LATENCY_MS."""
    with start_endpoint(drivers=DRIVERS, latency_ms=LATENCY_MS) as endpoint:
        yield endpoint


def write_entities(path: Path, count: int) -> Path:
    pq.write_table(pa.table({"driver_id": pa.array(range(count), pa.int64())}), path)
    return path


@contextmanager
def running_beat(workers: Fleet, workdir: Path) -> Iterator[Path]:
    """``featurepull beat`` in its own process group, with the workers' settings."""
    log = workdir / "beat.log"
    cmd = [sys.executable, "-m", "featurepull", "beat", "--schedule",
           str(workdir / "celerybeat-schedule"), "--max-interval", "1", "--loglevel", "INFO"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=workers.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=workdir)
    try:
        yield log
    finally:
        stop_process_group(proc)


def scheduled_fleet(workers: Fleet, config: Path, concurrency: int) -> None:
    workers.env["FEATUREPULL_CONFIG"] = str(config)
    workers.start_worker(concurrency=concurrency)


def finished_runs(store: JobStore, name: str, count: int, workers: Fleet, beat_log: Path,
                  timeout: float = 120) -> list[JobMeta]:
    """The schedule's first ``count`` jobs, oldest first, once they have all ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metas = sorted((store.meta(job) for job in store.schedule_runs(name)),
                       key=lambda meta: meta.created)
        if len(metas) >= count and all(meta.terminal for meta in metas[:count]):
            return metas[:count]
        time.sleep(0.2)
    raise AssertionError(f"{count} runs of {name} did not end in {timeout}s; beat log:\n"
                         + beat_log.read_text(errors="replace")[-2000:] + "\nworker log:\n"
                         + workers.log_text()[-4000:])


def test_beat_runs_an_interval_schedule_into_dated_files(
        redis_server: RedisService, slow_dynamo: EndpointProcess, tmp_path: Path) -> None:
    entities = write_entities(tmp_path / "drivers.parquet", 500)
    out = tmp_path / "out"
    config = schedule_toml(tmp_path / "schedules.toml", name="every3", timing="every_s = 3",
                           entities=str(entities), output=f"{out}/{{name}}-{{datetime}}.parquet")
    with fleet(redis_server, slow_dynamo.url) as workers:
        scheduled_fleet(workers, config, concurrency=2)
        store = JobStore(workers.redis(), ttl_s=600)
        with running_beat(workers, tmp_path) as beat_log:
            runs = finished_runs(store, "every3", 2, workers, beat_log)
        assert "Sending due task featurepull.schedule.every3 (featurepull.run_schedule)" \
            in beat_log.read_text()
    assert [meta.state for meta in runs] == ["succeeded", "succeeded"]
    outputs = [Path(str((meta.summary or {})["output"])) for meta in runs]
    assert len(set(outputs)) == 2
    for path in outputs:
        assert re.fullmatch(r"every3-\d{8}T\d{6}Z\.parquet", path.name)
        assert path.parent == out and path.exists()
        table = pq.read_table(path)
        assert table.num_rows == 500
        assert table.column("driver_id").to_pylist() == list(range(500))
        assert table.column("event_timestamp").null_count == 0


def test_a_tick_during_a_running_job_is_skipped_not_stacked(
        redis_server: RedisService, slow_dynamo: EndpointProcess, tmp_path: Path) -> None:
    # 4,000 keys in 40 requests of 100 ms on one reader thread: a run takes about 4 s,
    # so the ticks every 2 s land while it is still reading.
    entities = write_entities(tmp_path / "drivers.parquet", 4_000)
    config = schedule_toml(tmp_path / "schedules.toml", name="slow", timing="every_s = 2",
                           entities=str(entities),
                           output=f"{tmp_path}/out/{{name}}-{{datetime}}.parquet",
                           extra="dynamodb = {max_read_workers = 1}")
    with fleet(redis_server, slow_dynamo.url) as workers:
        scheduled_fleet(workers, config, concurrency=2)
        store = JobStore(workers.redis(), ttl_s=600)
        with running_beat(workers, tmp_path) as beat_log:
            runs = finished_runs(store, "slow", 2, workers, beat_log)
        # The log first: a run a skip names was created before the skip, so it is among the
        # runs listed after (beat's last ticks may still start or skip a third run).
        log = workers.log_text()
        every_run = sorted((store.meta(job) for job in store.schedule_runs("slow")),
                           key=lambda meta: meta.created)
        results = [json.loads(workers.redis().get(key) or b"{}").get("result")
                   for key in workers.redis().scan_iter(match="celery-task-meta-*")]
    assert [meta.state for meta in runs] == ["succeeded", "succeeded"]
    first, second = runs
    for before, after in itertools.pairwise(every_run):
        # each run's job was created only after the previous one had ended
        assert before.finished is not None and after.created >= before.finished
    skipped = re.findall(r"schedule_skipped schedule=slow running_job=(\w+) reason=job (\w+)",
                         log)
    assert skipped, log[-3000:]
    assert {job for job, _ in skipped} <= {meta.job_id for meta in every_run}
    assert any(isinstance(r, dict) and r.get("skipped") is True
               and r.get("running_job") in (first.job_id, second.job_id) for r in results)
    for meta in runs:
        assert pq.read_metadata(str((meta.summary or {})["output"])).num_rows == 4_000
