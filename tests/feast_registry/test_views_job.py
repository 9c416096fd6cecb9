"""Feast references through the worker fleet: a job submitted with a feature_store_yaml,
and a schedule's run with a scorer, each read by 2 prefork worker processes over 3 shards,
equal Feast's ``get_online_features`` row for row. The DynamoDB endpoint is behind the wire
proxy, which counts what the job asks for: one read per view per unique key of a shard."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from celery import Celery
from click.testing import CliRunner

from featurepull.cli import main
from featurepull.client import Job
from featurepull.config import ScheduleSettings
from featurepull.dynamo.feast_registry import registry_location
from featurepull.local import RedisService
from featurepull.tasks import JobStore
from featurepull.tasks.celery_tasks import enqueue_shards
from featurepull.tasks.schedules import start_scheduled_job
from featurepull.tasks.store import connect
from featurepull.worker.app import producer_app
from tests.conftest import service_port, wait_until
from tests.faultproxy import FaultProxy
from tests.feast_registry.conftest import DRIVERS, FeastRepo, write_yaml
from tests.feast_registry.test_pull_views import TWO_VIEWS, assert_same_as_feast
from tests.ops.test_metrics import scrape, total
from tests.tasks.conftest import Fleet, fleet

pytestmark = pytest.mark.slow  # starts a worker fleet

SHARD = 100  # 300 entity rows: 3 shards
# The views TWO_VIEWS reads, each a table of its own, and the join keys of each.
VIEW_KEYS = {"driver_hourly_stats": ("driver_id",), "customer_profile": ("customer_id",),
             "driver_customer": ("driver_id", "customer_id")}


@pytest.fixture(scope="module")
def proxy(endpoint_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(endpoint_url) as running:
        yield running


@pytest.fixture(scope="module")
def workers(redis_server: RedisService, proxy: FaultProxy) -> Iterator[Fleet]:
    with fleet(redis_server, proxy.url, shard_size=SHARD) as running:
        running.env["FEATUREPULL_SCORERS"] = json.dumps(
            [{"name": "gold_conv", "path": "tests.feast_registry.scorers:gold_conv"}])
        running.env["FEATUREPULL_METRICS_PORT"] = str(service_port())
        running.start_worker(concurrency=2)
        yield running


def reads_per_shard(repo: FeastRepo) -> tuple[int, dict[str, int]]:
    """Keys, and BatchGetItem requests by view, for one read per view per unique key of a
    shard."""
    keys, requests = 0, dict.fromkeys(VIEW_KEYS, 0)
    for start in range(0, len(repo.rows), SHARD):
        rows = repo.rows[start:start + SHARD]
        for view, names in VIEW_KEYS.items():
            unique = {tuple(r[name] for name in names) for r in rows}
            keys += len(unique)
            requests[view] += math.ceil(len(unique) / 100)
    return keys, requests


def test_a_job_over_three_views_equals_feast(feast_repo: FeastRepo, workers: Fleet,
                                             proxy: FaultProxy, tmp_path: Path) -> None:
    # The yaml the job names points at the proxy; the registry is the repo's.
    yaml = write_yaml(tmp_path / "repo", feast_repo.project, proxy.url,
                      registry_location(str(feast_repo.yaml)))
    out = tmp_path / "job.parquet"
    proxy.reset_counts()
    port = int(workers.env["FEATUREPULL_METRICS_PORT"])
    before = scrape(port)
    # A scoring app that shares the broker sends a JSON job request by task name.
    scoring = Celery("scoring", broker=workers.redis_url, backend=workers.redis_url)
    scoring.conf.update(task_serializer="json", accept_content=["json"],
                        result_accept_content=["json"])
    answer = scoring.send_task("featurepull.submit_job", queue=workers.queue, args=[{
        "features": TWO_VIEWS, "entities": str(feast_repo.entities), "output": str(out),
        "feature_store_yaml": str(yaml)}]).get(timeout=120)
    scoring.close()
    final = Job(answer["job_id"], workers.settings()).wait(timeout=120, progress=False)
    assert final.state == "succeeded", final
    assert final.shards == 3
    got = pq.read_table(out).to_pydict()
    assert_same_as_feast(got, feast_repo.online(TWO_VIEWS))
    assert got["driver_customer__event_timestamp"].count(None) > 0
    keys, requests = reads_per_shard(feast_repo)
    assert proxy.counts["keys_requested"] == keys < 3 * len(feast_repo.rows)
    assert proxy.counts["batch_requests"] == sum(requests.values())
    # Each view's table described once, by the submit: the job carries their key schemas,
    # so no pool process describes them again (featurepull.dynamo.plan.carried_keys).
    assert proxy.counts["describe_requests"] == len(VIEW_KEYS)
    summary = final.summary or {}
    assert summary["read"]["unique_keys"] == keys
    assert summary["read"]["keys"] == len(feast_repo.rows)

    # The job's tables as a user sees them: a list in its JSON log lines (a search by one
    # table's name finds them), each named in `featurepull status` and a list in its JSON.
    names = [f"{feast_repo.project}.{view}" for view in VIEW_KEYS]
    logged = [record for record in map(json.loads, filter(
        lambda line: line.startswith("{"), workers.log_text().splitlines()))
        if record.get("job_id") == final.job_id
        and record["event"] in ("job_created", "shard_start")]
    assert sorted(record["event"] for record in logged) == ["job_created", *["shard_start"] * 3]
    assert [(record.get("table"), record["tables"]) for record in logged] == [(None, names)] * 4
    env = {k: v for k, v in workers.env.items() if k.startswith("FEATUREPULL_")}
    shown = CliRunner(env=env).invoke(main, ["status", final.job_id], catch_exceptions=False)
    assert shown.output.splitlines()[1] == f"3 tables: {', '.join(names)}"
    as_json = CliRunner(env=env).invoke(main, ["status", final.job_id, "--json"])
    assert json.loads(as_json.output)["tables"] == names

    # /metrics: one series per table, each counting that table's reads (not one series
    # labelled with the tables' names joined).
    tables = {view: f"{feast_repo.project}.{view}" for view in VIEW_KEYS}

    def added(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # Every shard counted its reads before the job could succeed.
    after = scrape(port)
    labelled = {labels["table"] for samples in after.values() for labels, _ in samples
                if "table" in labels}
    assert [label for label in labelled if "," in label] == []
    assert set(tables.values()) <= labelled
    for view, table in tables.items():
        found = len(got[f"{view}__event_timestamp"]) - got[f"{view}__event_timestamp"].count(None)
        assert (added("featurepull_rows_total", table=table),
                added("featurepull_keys_found_total", table=table),
                added("featurepull_keys_missing_total", table=table),
                added("featurepull_requests_total", table=table, outcome="ok"),
                added("featurepull_requests_total", table=table),
                added("featurepull_shard_seconds_count", table=table)) == (
            len(feast_repo.rows), found, len(feast_repo.rows) - found, requests[view],
            requests[view], 3), view

    def job_counted() -> bool:
        now = scrape(port)
        return all(total(now, "featurepull_jobs_total", table=table, state="succeeded")
                   - total(before, "featurepull_jobs_total", table=table, state="succeeded")
                   == 1 for table in tables.values())

    # Its end is counted by the task that announces it, just after the job is marked ended.
    wait_until(job_counted, "count of the job's end in each table's featurepull_jobs_total")


def test_a_scheduled_run_of_a_feature_service(feast_repo: FeastRepo, workers: Fleet,
                                              tmp_path: Path) -> None:
    schedule = ScheduleSettings(
        name="nightly", every_s=3600, entities=str(feast_repo.entities),
        output=str(tmp_path / "{name}-{date}.parquet"), feature_service="scoring",
        feature_store_yaml=str(feast_repo.yaml), full_feature_names=True)
    settings = workers.settings().model_copy(update={"schedules": [schedule]})
    store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
    app = producer_app(settings)
    started = start_scheduled_job("nightly", settings, store, socket.gethostname(),
                                  lambda meta: enqueue_shards(app, meta, settings.jobs.queue),
                                  now=datetime(2026, 5, 4, tzinfo=UTC))
    final = Job(started["job_id"], settings, store).wait(timeout=120, progress=False)
    assert final.state == "succeeded", final
    got = pq.read_table(tmp_path / "nightly-2026-05-04.parquet").to_pydict()
    assert list(got)[-2:] == ["driver_hourly_stats__conv_rate", "customer_profile__tier"]
    assert_same_as_feast(got, feast_repo.online("scoring", full_feature_names=True))


def test_submit_with_a_scorer_and_respect_ttl(feast_repo: FeastRepo, workers: Fleet,
                                              tmp_path: Path) -> None:
    out = tmp_path / "scored.parquet"
    refs = ["driver_hourly_stats:conv_rate", "customer_profile:tier"]
    env = {k: v for k, v in workers.env.items() if k.startswith("FEATUREPULL_")}
    result = CliRunner(env=env).invoke(main, [
        "submit", "--feature-store-yaml", str(feast_repo.yaml), "--features", ",".join(refs),
        "--entities", str(feast_repo.entities), "--output", str(out), "--scorer", "gold_conv",
        "--with-features", "--respect-ttl", "--wait", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stale = [r["driver_id"] < DRIVERS and r["driver_id"] % 3 == 0 for r in feast_repo.rows]
    assert json.loads(result.output.splitlines()[-1])["read"]["stale"] == sum(stale)
    got = pq.read_table(out).to_pydict()
    expected = feast_repo.online(refs)
    conv = [None if old else c for old, c in zip(stale, expected["conv_rate"], strict=True)]
    assert got["conv_rate"] == conv
    assert got["tier"] == expected["tier"]
    assert got["gold_conv"] == [c if t == "gold" and c is not None else 0.0
                                for c, t in zip(conv, expected["tier"], strict=True)]
    assert any(got["gold_conv"])
