"""Prometheus metrics and default logging of a real prefork worker.

``featurepull worker --metrics-port`` with 2 pool processes runs jobs against a lean
endpoint that answers every BatchGetItem after 50 ms; ``/metrics`` is scraped over HTTP and
parsed with prometheus_client's own parser. The counters must equal the jobs' summaries —
also after a pool process was SIGKILLed in the middle of a shard and replaced (its earlier
counts kept, its running-shard gauge dropped). A worker started without ``--loglevel``
logs that it is ready and featurepull's job lines, and not Celery's per-task lines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.client import Job, submit
from featurepull.local import RedisService
from tests.conftest import service_port, wait_until
from tests.tasks.conftest import TABLE, Fleet, fleet, freeze_mid_shard

DRIVERS = 5_000
LATENCY_MS = 50
ENTITIES = 5_000
SHARD_SIZE = 500
SHARDS = ENTITIES // SHARD_SIZE
# One request in flight: a shard is 5 requests of 50 ms, long enough to be caught mid-read.
ONE_AT_A_TIME = {"max_read_workers": 1}


@pytest.fixture(scope="module")
def slow_dynamo() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=DRIVERS, latency_ms=LATENCY_MS, table=TABLE) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 10% unknown ids: some rows missing, so found and missing both count.
    ids = list(range(ENTITIES - 500)) + [DRIVERS + n for n in range(500)]
    path = tmp_path_factory.mktemp("metrics") / "drivers.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


def start_cli_worker(workers: Fleet, *args: str, ready: bool = True) -> subprocess.Popen[bytes]:
    """``featurepull worker`` (not ``celery worker``) with the fleet's settings; waits for
    its ready line unless ``ready`` is False (a worker that logs only warnings has none)."""
    name = f"m-{uuid.uuid4().hex[:4]}"
    log = workers._dir / f"{name}.log"
    cmd = [sys.executable, "-m", "featurepull", "worker", "--concurrency", "2",
           "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=workers.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    workers.workers.append(proc)
    workers.logs.append(log)
    if ready:
        workers.wait_ready(proc, log, name)
    return proc


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> (labels, value) pairs, parsed by prometheus_client's parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    return sum(value for have, value in samples.get(name, [])
               if all(have.get(k) == v for k, v in labels.items()))


def run_job(workers: Fleet, entities: Path) -> Job:
    return submit("driver_stats", list(FEATURES), str(entities), None,
                  settings=workers.settings(), dynamodb=ONE_AT_A_TIME)


def summary_of(job: Job) -> dict[str, Any]:
    return job.wait(timeout=120, progress=False).summary or {}


def test_metrics_equal_the_summaries_also_after_a_pool_process_is_killed(
        redis_server: RedisService, slow_dynamo: EndpointProcess, entities: Path) -> None:
    port = service_port()
    with fleet(redis_server, slow_dynamo.url, shard_size=SHARD_SIZE) as workers:
        worker = start_cli_worker(workers, "--metrics-port", str(port), "--loglevel", "INFO")
        first = run_job(workers, entities)
        one = summary_of(first)
        read = one["read"]
        # A job's end is counted just after its summary is stored (announce_end).
        wait_until(lambda: total(scrape(port), "featurepull_jobs_total") == 1, "end of the job")
        samples = scrape(port)
        assert total(samples, "featurepull_rows_total", table=TABLE) == ENTITIES
        assert total(samples, "featurepull_consumed_rcu_total", table=TABLE) == \
            pytest.approx(read["consumed_rcu"], abs=0.01)
        assert read["consumed_rcu"] > 0
        assert total(samples, "featurepull_keys_found_total") == read["found"] == ENTITIES - 500
        assert total(samples, "featurepull_keys_missing_total") == read["missing"] == 500
        assert total(samples, "featurepull_requests_total") == read["requests"]
        assert total(samples, "featurepull_requests_total", outcome="ok") == read["requests"]
        assert total(samples, "featurepull_request_seconds_count") == read["requests"]
        assert total(samples, "featurepull_request_seconds_sum") >= \
            read["requests"] * LATENCY_MS / 1000
        assert total(samples, "featurepull_shard_seconds_count", table=TABLE) == SHARDS
        assert total(samples, "featurepull_jobs_total", table=TABLE, state="succeeded") == 1
        assert total(samples, "featurepull_shards_running") == 0
        assert samples["featurepull_queue_messages"] == [({"queue": workers.queue}, 0.0)]

        # A pool process that read shards of the first job is SIGKILLed in the middle of a
        # shard of the second: its earlier counts stay, its running shard is not counted.
        counted = {int(o.rsplit(":", 1)[1]) for o in first.store.owners(first.id).values()}
        second = run_job(workers, entities)
        victim = freeze_mid_shard(second, among=counted)
        os.kill(victim, signal.SIGKILL)
        two = summary_of(second)
        assert two["redelivered_shards"] >= 1
        wait_until(lambda: len(workers.children(worker)) == 2
                 and victim not in workers.children(worker), "replacement of the pool process")
        wait_until(lambda: total(scrape(port), "featurepull_shards_running") == 0,
                 "drop of the killed process's running shard")
        wait_until(lambda: total(scrape(port), "featurepull_jobs_total") == 2,
                 "end of the second job")
        samples = scrape(port)
        assert total(samples, "featurepull_rows_total", table=TABLE) == 2 * ENTITIES
        assert total(samples, "featurepull_consumed_rcu_total", table=TABLE) == pytest.approx(
            read["consumed_rcu"] + two["read"]["consumed_rcu"], abs=0.01)
        assert total(samples, "featurepull_requests_total") == \
            read["requests"] + two["read"]["requests"]
        assert total(samples, "featurepull_jobs_total", state="succeeded") == 2


def test_a_worker_without_loglevel_shows_ready_and_job_lines(
        redis_server: RedisService, slow_dynamo: EndpointProcess, entities: Path,
        tmp_path: Path) -> None:
    with fleet(redis_server, slow_dynamo.url, shard_size=2_500) as workers:
        # Metrics from the environment, their files in a directory of the worker's own under
        # the PROMETHEUS_MULTIPROC_DIR it was given, removed when it stops.
        port = service_port()
        workers.env["FEATUREPULL_METRICS_PORT"] = str(port)
        workers.env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
        workers.env["FEATUREPULL_LOG_FORMAT"] = "console"
        default = workers.start_worker(concurrency=1, loglevel=None)
        summary_of(submit("driver_stats", list(FEATURES), str(entities), None,
                          settings=workers.settings()))
        assert total(scrape(port), "featurepull_rows_total") == ENTITIES
        [own] = tmp_path.iterdir()
        assert own.name.startswith("featurepull-metrics-") and any(own.iterdir())
        default.terminate()
        default.wait(timeout=20)
        assert list(tmp_path.iterdir()) == []
        log = workers.logs[-1].read_text()
        assert "worker_ready" in log and f":{port}/metrics" in log
        assert log.count("shard_start") == 2 and log.count("shard_done") == 2
        assert "job_done" in log
        # Celery's own per-task lines stay at INFO, below the default WARNING.
        assert "Task featurepull.read_shard[" not in log and " ready." not in log

        # --loglevel still decides: WARNING hides featurepull's INFO lines too.
        del workers.env["FEATUREPULL_METRICS_PORT"], workers.env["PROMETHEUS_MULTIPROC_DIR"]
        start_cli_worker(workers, "--loglevel", "WARNING", ready=False)
        summary_of(submit("driver_stats", list(FEATURES), str(entities), None,
                          settings=workers.settings()))
        quiet = workers.logs[-1].read_text()
        assert "shard_done" not in quiet and "worker_ready" not in quiet


def test_a_metrics_port_in_use_stops_the_worker_at_start(redis_server: RedisService,
                                                         slow_dynamo: EndpointProcess) -> None:
    with fleet(redis_server, slow_dynamo.url) as workers, socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_cli_worker(workers, "--metrics-port", str(port), ready=False)
        assert proc.wait(timeout=60) == 2
        log = workers.logs[-1].read_text()
        assert f"cannot serve metrics on port {port}" in log
        assert "choose another --metrics-port (FEATUREPULL_METRICS_PORT)" in log
