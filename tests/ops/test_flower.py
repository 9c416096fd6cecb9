"""Flower watching a real job: a real Flower process, real prefork workers, a real HTTP
DynamoDB endpoint slowed down enough that shards are seen reading. What Flower shows comes
from Celery events only, so this checks what an operator actually sees: task names, short
argument summaries, PROGRESS while a shard reads, SUCCESS at the end, and the workers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.local import RedisService, start_flower, stop_process_group
from featurepull.tasks.celery_tasks import send_submit_job
from featurepull.tasks.monitor import finish_args, reference, shard_args, submit_args
from featurepull.tasks.store import JobMeta, JobSpec
from featurepull.worker.app import producer_app
from tests.conftest import service_port, wait_until
from tests.tasks.conftest import TABLE, fleet

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

ENTITIES = 50_000
SHARD_SIZE = 10_000
SHARDS = ENTITIES // SHARD_SIZE
FLOWER_ENV = {"FLOWER_UNAUTHENTICATED_API": "true"}


@pytest.fixture(scope="module")
def slow_dynamo() -> Iterator[EndpointProcess]:
    """50,000 drivers behind an endpoint that answers each request after 20 ms."""
    with start_endpoint(drivers=ENTITIES, latency_ms=20, table=TABLE) as endpoint:
        yield endpoint


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_flower_shows_a_running_job(redis_server: RedisService, slow_dynamo: EndpointProcess,
                                    tmp_path: Path) -> None:
    entities = tmp_path / "drivers.parquet"
    # Known ids with 1,000,000+ mixed in, so an entity value in an argument would stand out.
    ids = [1_000_000 + i if i % 10 == 0 else i for i in range(ENTITIES)]
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), entities)
    output = tmp_path / "features.parquet"
    with fleet(redis_server, slow_dynamo.url, shard_size=SHARD_SIZE) as workers:
        # One reading thread per process: a 10,000-key shard takes about 2 s.
        workers.env["FEATUREPULL_DYNAMODB__MAX_READ_WORKERS"] = "1"
        # A read budget the workers give every job; high enough not to slow it down.
        workers.env["FEATUREPULL_DYNAMODB__MAX_RCU_PER_S"] = "20000"
        names = ("flower0@", "flower1@")
        for name in names:
            workers.start_worker(concurrency=1, name=name.rstrip("@"))
        flower = start_flower({**workers.env, **FLOWER_ENV}, port=service_port())
        try:
            # Flower knows a worker from its heartbeats: then it is receiving events.
            wait_until(lambda: sum(name.startswith(names) for name, alive in
                                   get_json(f"{flower.url}/api/workers?status=1").items()
                                   if alive) == 2, "sight of both workers in Flower")
            app = producer_app(workers.settings())
            try:
                request = {"table": "driver_stats", "features": list(FEATURES),
                           "entities": str(entities), "output": str(output)}
                started = send_submit_job(app, request, workers.queue)
                seen: dict[str, set[str]] = {}
                progress: list[str] = []

                def finished() -> dict[str, Any] | None:
                    tasks = get_json(f"{flower.url}/api/tasks")
                    for uuid, task in tasks.items():
                        seen.setdefault(uuid, set()).add(task["state"])
                        if task["state"] == "PROGRESS":
                            progress.append(task["result"])
                    done = [t for t in tasks.values() if t["name"] == "featurepull.finish_job"
                            and t["state"] == "SUCCESS"]
                    return tasks if done else None

                tasks = wait_until(finished, "end of the job in Flower", 120)
                job_id = started.get(timeout=10)["job_id"]
            finally:
                app.close()
            workers_info = get_json(f"{flower.url}/api/workers?refresh=1")
            # Searching Flower for the job id finds all its tasks (submit_job by its result).
            found = get_json(f"{flower.url}/api/tasks?search={job_id}")
        finally:
            flower.stop()

    by_name: dict[str, list[dict[str, Any]]] = {}
    for task in tasks.values():
        by_name.setdefault(task["name"], []).append(task)
    assert {name: len(found) for name, found in by_name.items()} == {
        "featurepull.submit_job": 1, "featurepull.read_shard": SHARDS,
        "featurepull.finish_job": 1}
    assert all(task["state"] == "SUCCESS" for task in tasks.values())

    # Short summaries, never entity values.
    for task in tasks.values():
        assert len(task["args"]) < 200 and "[" not in task["args"], task["args"]
        assert "1000000" not in task["args"] and "1,000,000" not in task["args"]
    submit = by_name["featurepull.submit_job"][0]
    assert submit["args"] == (f"table=driver_stats features={len(FEATURES)} "
                              f"entities={reference(str(entities))} output={reference(str(output))}")
    shard_args = sorted(task["args"] for task in by_name["featurepull.read_shard"])
    assert shard_args == [f"shard={n}/{SHARDS} job={job_id} table={TABLE} entities={SHARD_SIZE}"
                          for n in range(SHARDS)]
    finish = by_name["featurepull.finish_job"][0]
    assert finish["args"] == (f"job={job_id} table={TABLE} shards={SHARDS} "
                              f"entities={ENTITIES} output={reference(str(output))}")

    # A reading shard was seen in state PROGRESS, its result column showing done/total.
    shard_ids = {uuid for uuid, task in tasks.items() if task["name"] == "featurepull.read_shard"}
    assert any("PROGRESS" in seen[uuid] for uuid in shard_ids), seen
    # ... and what it spends of the table: RCU/s, the budget, time held back, in flight.
    assert progress and all(re.fullmatch(
        rf"[\d,]+/[\d,]+ keys; job \d/{SHARDS} shards done; [\d,]+ RCU/s of 20,000 budget, "
        r"[\d.]+s waited; 1-1 in flight", text) for text in progress), progress

    assert sum(name.startswith(names) for name in workers_info) == 2, list(workers_info)
    assert set(found) == set(tasks)
    assert pq.read_table(output).num_rows == ENTITIES


def test_featurepull_flower_listens_on_loopback_and_shows_args(
        redis_server: RedisService) -> None:
    port = service_port()
    with fleet(redis_server, "http://127.0.0.1:9") as workers:
        proc = subprocess.Popen([sys.executable, "-m", "featurepull", "flower", f"--port={port}"],
                                env={**workers.env, **FLOWER_ENV}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"

            def page() -> str | None:
                try:
                    with urllib.request.urlopen(f"{url}/tasks", timeout=2) as response:
                        return str(response.read().decode())
                except OSError:
                    assert proc.poll() is None, "featurepull flower exited"
                    return None

            html = wait_until(page, "answer from featurepull flower", 30)
            listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
            local = {line.split()[1] for line in listening if line.split()[3] == "0A"}
        finally:
            stop_process_group(proc)
    assert f"0100007F:{port:04X}" in local and f"00000000:{port:04X}" not in local
    for column in ("Name", "State", "args", "Result", "Worker"):
        assert f">{column}<" in html, column


def test_summaries_show_references_without_secrets() -> None:
    request = {"table": "driver_stats", "features": ["a", "b"], "project": "fraud",
               "entities": "redis://:hunter2@redis.internal:6379/0",
               "output": "https://ml:pw@bucket.s3.amazonaws.com/out/f.parquet?X-Amz-Signature=abc"}
    text = submit_args(request)
    assert text == ("table=driver_stats features=2 project=fraud "
                    "entities=redis://redis.internal:6379/0 "
                    "output=https://bucket.s3.amazonaws.com/out/f.parquet")
    # Inline entities (refused by submit) show as their type; nothing crashes on junk.
    assert submit_args({"entities": [1, 2, 3]}) == "table=None features=? entities=<list>"
    # A Feast-reference request names no table: its views, or its feature service.
    views = {"features": ["drivers:rate", "trips:count", "drivers:age"], "entities": "e.csv"}
    assert submit_args(views) == "views=drivers,trips features=3 entities=e.csv"
    service = {"feature_service": "scoring_v2", "entities": "e.csv"}
    assert submit_args(service) == "feature_service=scoring_v2 features=? entities=e.csv"
    long = submit_args({"table": "t" * 500, "features": ["x"] * 500, "entities": "s3://b/" + "k" * 500})
    assert len(long) <= 190 and long.startswith("table=ttt")
    assert reference("s3://bucket/" + "d" * 200 + "/drivers.parquet").endswith("/drivers.parquet")

    meta = JobMeta(job_id="j1", request={"table": "demo.t", "shard_size": 400,
                                         "request": {"output": None}},
                   state="queued", shards=3, rows=1000, created=0.0, started=None,
                   finished=None, error=None, summary=None)
    assert [shard_args(meta, n) for n in range(3)] == [
        "shard=0/3 job=j1 table=demo.t entities=400", "shard=1/3 job=j1 table=demo.t entities=400",
        "shard=2/3 job=j1 table=demo.t entities=200"]
    assert finish_args(meta) == "job=j1 table=demo.t shards=3 entities=1000 output=redis"
    # A job stored before shard sizes were recorded.
    meta.request = JobSpec.model_validate({"table": "demo.t", "request": {"output": None}})
    assert shard_args(meta, 0) == "shard=0/3 job=j1 table=demo.t"
