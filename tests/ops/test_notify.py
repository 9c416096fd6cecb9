"""Completion notifications end to end: a Celery app that never imports featurepull
(tests/ops/notify_receiver.py, its own worker process on its own queue, sharing the test
Redis) starts jobs with ``featurepull.submit_job`` and ``notify``, and its worker receives
exactly one message per job — succeeded, failed by a raising scorer, cancelled, finished
after its finisher was SIGKILLed mid-write, started by ``featurepull submit --notify-task``
or by a schedule."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from celery import Celery

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.client import Job, JobFailed
from featurepull.config import ConfigError, load_settings
from featurepull.local import RedisService
from tests.conftest import wait_until
from tests.hardening._util import freeze_finisher_mid_write
from tests.ops import notify_receiver
from tests.tasks.conftest import DRIVERS, TABLE, Fleet, fast_dynamo, fleet  # noqa: F401

ENTITIES = 20_000
SHARD_SIZE = 5_000
SUMMARY_FIELDS = {"job_id", "state", "rows", "output", "error", "read"}


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(21)
    ids = rng.sample(range(DRIVERS), ENTITIES - 1_000) + [DRIVERS + n for n in range(1_000)]
    rng.shuffle(ids)
    path = tmp_path_factory.mktemp("notify") / "drivers.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


class Receiver:
    """The other app: its Celery object (to send submit_job) and its worker process."""

    def __init__(self, workers: Fleet) -> None:
        self.workers = workers
        self.queue = f"scoring-{uuid.uuid4().hex[:6]}"
        env = {**workers.env, "RECEIVER_REDIS_URL": workers.redis_url,
               "RECEIVER_QUEUE": self.queue}
        log = workers._dir / f"{self.queue}.log"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tests.ops.notify_receiver", "worker",
                 "--pool", "solo", "-Q", self.queue, "--loglevel", "INFO",
                 "--without-mingle", "--without-gossip", "--hostname", f"{self.queue}@%h"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        workers.workers.append(self.process)  # stopped with the fleet
        workers.logs.append(log)
        workers.wait_ready(self.process, log, self.queue)
        self.app = Celery("scoring", broker=workers.redis_url, backend=workers.redis_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"],
                             result_accept_content=["json"])

    def notify(self) -> dict[str, str]:
        return {"task": notify_receiver.TASK, "queue": self.queue}

    def submit(self, **request: Any) -> str:
        """Start a job by name, as the scoring app does; returns its id."""
        request = {"table": "driver_stats", "features": list(FEATURES), **request}
        answer = self.app.send_task("featurepull.submit_job", args=[request],
                                    queue=self.workers.queue).get(timeout=60)
        return str(answer["job_id"])

    def received(self, job_id: str) -> list[dict[str, Any]]:
        """Every notification for ``job_id``, once nothing that could send one is left:
        no message queued or unacknowledged on either app's queue."""
        client = self.workers.redis()

        def settled() -> list[dict[str, Any]] | None:
            busy = (client.llen(self.workers.queue) or client.llen(self.queue)
                    or client.hlen("unacked"))
            records = [json.loads(r) for r in client.lrange(notify_receiver.RECEIVED_KEY, 0, -1)]
            mine = [r for r in records if r["summary"]["job_id"] == job_id]
            return mine if mine and not busy else None

        try:
            mine: list[dict[str, Any]] = wait_until(settled, f"notification for job {job_id}",
                                                    60, every_s=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; logs:\n{self.workers.log_text()[-3000:]}") from None
        assert not any(r["featurepull_imported"] for r in mine)
        return [r["summary"] for r in mine]


@pytest.fixture(scope="module")
def workers(redis_server: RedisService, fast_dynamo: EndpointProcess,  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    config = tmp_path_factory.mktemp("notify-config") / "featurepull.toml"
    with fleet(redis_server, fast_dynamo.url, shard_size=SHARD_SIZE) as running:
        running.env["FEATUREPULL_SCORERS"] = json.dumps(
            [{"name": "boom", "path": "tests.tasks.scorers_for_tests:boom"}])
        running.env["FEATUREPULL_CONFIG"] = str(config)
        yield running


@pytest.fixture(scope="module")
def receiver(workers: Fleet, entities: Path) -> Receiver:
    other = Receiver(workers)
    # A schedule that notifies: run by sending featurepull.run_schedule (beat sends just that).
    Path(workers.env["FEATUREPULL_CONFIG"]).write_text(f"""
[[schedules]]
name = "nightly"
every_s = 86400
table = "driver_stats"
features = {json.dumps(list(FEATURES))}
entities = "{entities}"
output = "{entities.parent}/nightly-{{date}}.parquet"
overwrite = true
notify = {{ task = "{notify_receiver.TASK}", queue = "{other.queue}" }}
""", encoding="utf-8")
    workers.start_worker(concurrency=2)
    return other


def _wait(workers: Fleet, job_id: str) -> str:
    try:
        return Job(job_id, workers.settings()).wait(timeout=60, progress=False).state
    except JobFailed:
        return "failed"


def test_a_succeeded_job_notifies_once_with_its_summary(workers: Fleet, receiver: Receiver,
                                                        entities: Path, tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    job_id = receiver.submit(entities=str(entities), output=str(out), notify=receiver.notify())
    assert _wait(workers, job_id) == "succeeded"
    [summary] = receiver.received(job_id)
    assert set(summary) >= SUMMARY_FIELDS
    assert summary["state"] == "succeeded" and summary["error"] is None
    assert summary["rows"] == summary["rows_written"] == ENTITIES
    assert summary["output"] == str(out)
    assert summary["read"]["found"] + summary["read"]["missing"] == ENTITIES
    assert summary["read"]["missing"] == 1_000
    stored = Job(job_id, workers.settings()).status().summary or {}
    assert summary["read"] == stored["read"]


def test_a_failed_job_notifies_once_with_its_error(workers: Fleet, receiver: Receiver,
                                                   entities: Path, tmp_path: Path) -> None:
    out = tmp_path / "never.parquet"
    job_id = receiver.submit(entities=str(entities), output=str(out), scorer="boom",
                             notify=receiver.notify())
    assert _wait(workers, job_id) == "failed"
    # Every shard raises, so several tasks see the job fail; one notification goes out.
    [summary] = receiver.received(job_id)
    assert set(summary) >= SUMMARY_FIELDS
    assert summary["state"] == "failed"
    assert "scorer 'boom' raised ZeroDivisionError" in summary["error"]
    assert summary["rows"] == ENTITIES and summary["output"] == str(out)
    assert summary["shards_done"] == 0 and summary["read"]["keys"] == 0
    assert not out.exists()


def test_a_job_whose_finisher_is_killed_notifies_once(workers: Fleet, receiver: Receiver,
                                                      entities: Path, tmp_path: Path) -> None:
    # CSV: its rows are encoded one by one, so the finisher is caught mid-write.
    out = tmp_path / "features.csv"
    job, temporary, victim = freeze_finisher_mid_write(
        lambda: Job(receiver.submit(entities=str(entities), output=str(out),
                                    notify=receiver.notify()), workers.settings()),
        tmp_path, out.name, 60)
    job_id = job.id
    assert temporary.exists() and not out.exists()  # frozen mid-write
    os.kill(victim, signal.SIGKILL)
    assert _wait(workers, job_id) == "succeeded"
    [summary] = receiver.received(job_id)
    assert summary["state"] == "succeeded" and summary["rows_written"] == ENTITIES
    assert f"pid:{victim} exited with 'signal 9" in workers.log_text()
    assert len(out.read_text().splitlines()) == ENTITIES + 1


def test_a_cancelled_job_notifies_once(workers: Fleet, receiver: Receiver,
                                       entities: Path) -> None:
    # This job reads an endpoint that answers each request after 200 ms, one request at a
    # time: its shards are still reading when it is cancelled, and stop at their next check.
    with start_endpoint(drivers=1_000, latency_ms=200, table=TABLE) as slow:
        job_id = receiver.submit(entities=str(entities), notify=receiver.notify(),
                                 dynamodb={"endpoint_url": slow.url, "max_read_workers": 1})
        job = Job(job_id, workers.settings())
        wait_until(lambda: job.store.owners(job_id), "a started shard", 30)
        assert job.cancel()
        [summary] = receiver.received(job_id)
    assert summary["state"] == "cancelled" and summary["error"] == "cancelled by request"
    assert summary["rows"] == ENTITIES and summary["shards_done"] == 0


def test_submit_flags_notify(workers: Fleet, receiver: Receiver, entities: Path,
                             tmp_path: Path) -> None:
    base = [sys.executable, "-m", "featurepull", "submit", "--table", "driver_stats",
            "--features", ",".join(FEATURES), "--entities", str(entities),
            "--redis-url", workers.redis_url, "--project", "demo",
            "--endpoint-url", workers.env["FEATUREPULL_DYNAMODB__ENDPOINT_URL"],
            "--region", "us-east-1"]
    env = {k: v for k, v in workers.env.items() if k != "FEATUREPULL_CONFIG"}
    submitted = subprocess.run([*base, "--output", str(tmp_path / "cli.parquet"),
                                "--notify-task", notify_receiver.TASK,
                                "--notify-queue", receiver.queue],
                               env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert _wait(workers, job_id) == "succeeded"
    [summary] = receiver.received(job_id)
    assert summary["state"] == "succeeded" and summary["rows"] == ENTITIES

    refused = subprocess.run([*base, "--notify-task", "featurepull.submit_job"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "'featurepull.submit_job' is a featurepull or Celery task" in refused.stderr
    lone_queue = subprocess.run([*base, "--notify-queue", receiver.queue], env=env,
                                capture_output=True, text=True, timeout=120)
    assert lone_queue.returncode == 2 and "add --notify-task NAME" in lone_queue.stderr
    own_queue = subprocess.run([*base, "--notify-task", notify_receiver.TASK,
                                "--notify-queue", workers.queue], env=env,
                               capture_output=True, text=True, timeout=120)
    assert own_queue.returncode == 2
    assert f"notify.queue {workers.queue!r} is featurepull's own job queue" in own_queue.stderr


def test_a_scheduled_job_notifies(workers: Fleet, receiver: Receiver) -> None:
    started = receiver.app.send_task("featurepull.run_schedule", args=["nightly"],
                                     queue=workers.queue).get(timeout=60)
    job_id = started["job_id"]
    assert _wait(workers, job_id) == "succeeded"
    [summary] = receiver.received(job_id)
    assert summary["state"] == "succeeded" and summary["output"] == started["output"]


@pytest.mark.parametrize(("notify", "message"), [
    ({"task": "celery.backend_cleanup"}, "is a featurepull or Celery task"),
    ({"task": "scoring:features_ready"}, "String should match pattern"),
    ({"task": "os.system('x')"}, "String should match pattern"),
    ({"task": "scoring.ready", "queue": "bad queue"}, "String should match pattern"),
    ({"task": "scoring.ready", "args": ["x"]}, "Extra inputs are not permitted"),
])
def test_a_notify_that_is_not_a_plain_task_name_is_refused(notify: dict[str, Any],
                                                           message: str) -> None:
    from featurepull.tasks import JobRequest

    with pytest.raises(ValueError, match=message):
        JobRequest(table="t", features=["f"], entities="e.parquet", notify=notify)


def test_a_schedule_notifying_featurepulls_own_queue_is_refused(tmp_path: Path) -> None:
    from featurepull.tasks.schedules import check_schedules

    config = tmp_path / "featurepull.toml"
    config.write_text("""
[jobs]
queue = "celery"

[[schedules]]
name = "nightly"
every_s = 60
table = "driver_stats"
features = ["conv_rate"]
entities = "drivers.parquet"
output = "out.parquet"
notify = { task = "scoring.ready" }
""", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"schedule 'nightly': notify\.queue 'celery' is "
                                          r"featurepull's own job queue"):
        check_schedules(load_settings(str(config)))
