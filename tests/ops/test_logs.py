"""Worker logs in operation: a real prefork worker logging JSON against a Redis with a
password, planted AWS credentials in its environment, a throttling DynamoDB endpoint.

Every stderr line is JSON; every line logged inside a task carries ``task_id``, ``task``,
``job_id`` and ``shard`` (``shard`` is null for ``submit_job`` and ``finish_job``; ``job_id`` is
null in ``submit_job`` until the job exists) — lines from the reader's threads included; one
``shard_done`` stats line per shard; and no planted secret in the logs, in Redis (keys, values,
Celery messages and results) or in the job summary.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import structlog

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from featurepull.local import RedisService
from featurepull.worker.app import producer_app
from featurepull.worker.logging import MULTIPROCESSING_LOGGER, QUIET_LIBRARIES, configure_logging
from tests.ops.conftest import (
    DRIVERS,
    SECRETS,
    leaked,
    redis_contents,
    secret_fleet,
    start_worker,
)
from tests.tasks.conftest import TABLE

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

ENTITIES = 20_000
SHARD_SIZE = 5_000
SHARDS = ENTITIES // SHARD_SIZE
STATS_FIELDS = {"rows", "found", "missing", "requests", "retries", "throttles", "rcu",
                "latency_p50_ms", "latency_p99_ms", "rows_per_s", "seconds"}
# What Celery writes straight to stdout (os.write), outside logging, when it is stopped.
CELERY_STDOUT_NOTICE = re.compile(r"worker: (Warm|Cold) shutdown \(MainProcess\)")


def write_entities(folder: Path) -> Path:
    """90% known drivers, 10% unknown ids, shuffled."""
    rng = random.Random(11)
    ids = rng.sample(range(DRIVERS), ENTITIES * 9 // 10)
    ids += [DRIVERS + n for n in range(ENTITIES - len(ids))]
    rng.shuffle(ids)
    path = folder / "drivers.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


def json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"worker log line {number} is not JSON: {line!r}")
    return records


def test_json_worker_log_has_task_context_stats_and_no_secrets(
        secret_redis: RedisService, throttling_dynamo: EndpointProcess, tmp_path: Path) -> None:
    entities = write_entities(tmp_path)
    with secret_fleet(secret_redis, throttling_dynamo.url, shard_size=SHARD_SIZE) as workers:
        settings = workers.settings()
        request = {"table": "driver_stats", "features": list(FEATURES), "entities": str(entities),
                   "output": str(tmp_path / "features.parquet")}
        sent = producer_app(settings).send_task("featurepull.submit_job", args=[request],
                                                queue=workers.queue)
        queued = redis_contents(workers.redis())  # the submit_job message, not yet taken
        assert any(str(entities).encode() in blob and b"argsrepr" not in blob
                   for blob in queued), "the scan must see decoded message bodies"
        worker = start_worker(workers)
        job_id = sent.get(timeout=30)["job_id"]
        status = Job(job_id, settings).wait(timeout=60, progress=False)
        assert status.state == "succeeded", status.error
        stored = redis_contents(workers.redis())
        worker.stop()
    log_text = worker.log.read_text()
    records = json_lines(log_text)

    in_task = [r for r in records if "task_id" in r]
    assert in_task
    assert [r for r in in_task if not {"task", "job_id", "shard"} <= r.keys()] == []
    by_task = {name: [r for r in in_task if r["task"] == f"featurepull.{name}"]
               for name in ("submit_job", "read_shard", "finish_job")}
    assert all(by_task.values()), {name: len(lines) for name, lines in by_task.items()}
    assert {(r["job_id"], r["shard"]) for r in by_task["read_shard"]} == {
        (job_id, n) for n in range(SHARDS)}
    assert {r["shard"] for r in by_task["submit_job"] + by_task["finish_job"]} == {None}
    assert {r["job_id"] for r in by_task["finish_job"]} == {job_id}
    assert any(r["event"] == "job_created" and r["job_id"] == job_id
               for r in by_task["submit_job"])
    assert any(r["event"] == "job_done" for r in by_task["finish_job"])
    # Celery's own task lines go through the same renderer, inside the task's context.
    assert any(r["logger"].startswith("celery") and "succeeded" in r["event"]
               for r in by_task["read_shard"])

    # The reader's own lines (its retries: the endpoint throttles) are logged from inside
    # the read's event loop tasks; they carry the shard's context all the same.
    reader_lines = [r for r in records if r["logger"] == "featurepull.dynamo.reader"]
    assert {r.get("shard") for r in reader_lines} == set(range(SHARDS))
    assert all(r.get("job_id") == job_id and r.get("task_id") for r in reader_lines)

    done = [r for r in records if r["event"] == "shard_done"]
    assert sorted(r["shard"] for r in done) == list(range(SHARDS))
    assert all(r.keys() >= STATS_FIELDS for r in done)
    read = (status.summary or {})["read"]
    assert sum(r["rows"] for r in done) == ENTITIES
    assert sum(r["found"] for r in done) == read["found"] == ENTITIES * 9 // 10
    assert sum(r["throttles"] for r in done) == read["throttles"] > 0
    assert all(r["rows_per_s"] > 0 and r["latency_p99_ms"] >= r["latency_p50_ms"] > 0
               for r in done)

    starting = [r for r in records if r["event"] == "worker_starting"]
    assert len(starting) == 1 and ":**@127.0.0.1" in starting[0]["broker"]

    stdout = [line for line in worker.stdout.read_text().splitlines() if line.strip()]
    assert [line for line in stdout if not CELERY_STDOUT_NOTICE.fullmatch(line)] == []
    assert leaked(log_text) == []
    assert leaked("\n".join(stdout)) == []
    assert leaked(queued) == []
    assert leaked(stored) == []
    assert leaked(json.dumps(status.summary)) == []


def test_console_worker_banner_masks_the_redis_password(
        secret_redis: RedisService, throttling_dynamo: EndpointProcess) -> None:
    with secret_fleet(secret_redis, throttling_dynamo.url, log_format="console") as workers:
        worker = start_worker(workers, concurrency=1)
        worker.stop()
    banner, log = worker.stdout.read_text(), worker.log.read_text()
    assert f"redis://:**@127.0.0.1:{secret_redis.port}/{workers.db}" in banner
    assert "[info" in log and " ready." in log and not log.lstrip().startswith("{")
    assert leaked(banner + log) == []


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Give the process back its logging setup (pytest's capture handlers) afterwards."""
    root = logging.getLogger()
    names = (MULTIPROCESSING_LOGGER, *QUIET_LIBRARIES)
    saved = (list(root.handlers), root.level,
             {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level)
              for name in names})
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        root.handlers, root.level = saved[0], saved[1]
        for name, (handlers, level) in saved[2].items():
            logging.getLogger(name).handlers = handlers
            logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("transport", ["fast", "botocore"])
def test_reader_lines_are_logged_in_the_callers_context(throttling_dynamo: EndpointProcess,
                                                        restored_logging: None,
                                                        tmp_path: Path, transport: str) -> None:
    # Logged from the read's event-loop tasks, whichever transport sends the requests.
    logfile = tmp_path / "reader.log"
    configure_logging("json", logging.INFO, logfile=str(logfile), secrets=SECRETS)
    layout = FeastLayout({"driver_id": "int64"})
    settings = DynamoSettings(endpoint_url=throttling_dynamo.url, region="us-east-1",
                              retry_base_delay_s=0.01, retry_max_delay_s=0.2,
                              transport=transport)
    reader = BatchReader(TABLE, layout, settings)
    structlog.contextvars.bind_contextvars(job_id="job-1", shard=7)
    result = reader.read(layout.keys_for({"driver_id": list(range(5_000))}), ["conv_rate"])
    assert result.stats.throttles > 0
    records = json_lines(logfile.read_text())
    lines = [r for r in records if r["logger"] == "featurepull.dynamo.reader"]
    # One line per burst of throttles, not one per throttled request.
    assert 1 <= len(lines) < result.stats.throttles
    assert all(r["job_id"] == "job-1" and r["shard"] == 7 and r["retry"] == "throttle"
               and r["table"] == TABLE for r in lines)
