"""Ten 100k-entity jobs at once over two worker processes: all correct, all progress, and
Redis memory returns near its baseline once the jobs are deleted."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.local import start_redis
from tests.conftest import service_port
from tests.hardening._util import run_job, write_entities
from tests.tasks.conftest import DRIVERS, fast_dynamo, fleet  # noqa: F401

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

JOBS = 10
ENTITIES = 100_000
# scripts/load_figures.py names a file for the figures; a plain test run writes nothing.
REPORT_ENV = "LOAD_REPORT_JSON"


def _ids() -> list[int]:
    rng = random.Random(7)
    ids = rng.sample(range(DRIVERS), 85_000) + [DRIVERS + i for i in range(10_000)]
    ids += rng.choices(ids, k=ENTITIES - len(ids))
    rng.shuffle(ids)
    return ids


def test_ten_jobs_at_once(fast_dynamo: EndpointProcess,  # noqa: F811
                          tmp_path: Path) -> None:
    entities = write_entities(tmp_path / "e.parquet", _ids())
    reference_path = tmp_path / "reference.parquet"
    subprocess.run(
        [sys.executable, "-m", "featurepull", "pull", "--project", "demo", "--table",
         "driver_stats", "--features", ",".join(FEATURES), "--entities", str(entities),
         "--output", str(reference_path), "--endpoint-url", fast_dynamo.url,
         "--region", "us-east-1"], check=True, capture_output=True, timeout=120)
    reference = pq.read_table(reference_path)

    server = start_redis(port=service_port())
    try:
        with fleet(server, fast_dynamo.url, shard_size=50_000) as workers:
            workers.start_worker(concurrency=2)
            client = workers.redis()

            def used_memory(field: str = "used_memory") -> int:
                return int(client.info("memory")[field])

            baseline = used_memory()
            baseline_dataset = used_memory("used_memory_dataset")
            started = time.monotonic()
            jobs = [run_job(workers, entities, tmp_path / f"job{i}.parquet")
                    for i in range(JOBS)]
            submitted_s = time.monotonic() - started
            peak = used_memory()
            seen_running = {job.id: False for job in jobs}
            progressed = {job.id: False for job in jobs}
            pending = {job.id: job for job in jobs}
            deadline = time.monotonic() + 200  # within the 300 s pytest timeout
            while pending:
                assert time.monotonic() < deadline, [j.status().line()
                                                     for j in pending.values()]
                for job_id, job in list(pending.items()):
                    status = job.status()
                    if status.state in ("running", "finishing"):
                        seen_running[job_id] = True
                        progressed[job_id] |= status.rows_done > 0
                    elif status.state != "queued":
                        assert status.state == "succeeded", status.line()
                        del pending[job_id]
                peak = max(peak, used_memory())
                time.sleep(0.1)
            seconds = time.monotonic() - started
            for i in range(JOBS):
                assert pq.read_table(tmp_path / f"job{i}.parquet").equals(reference), i
            after_jobs = used_memory()
            for job in jobs:
                job.delete()
            after_delete = used_memory()
            dataset_after_delete = used_memory("used_memory_dataset")
            keys_after_delete = int(client.dbsize())
            job_keys_after_delete = list(client.scan_iter("featurepull:job:*"))

        figures = {
            "jobs": JOBS, "entities_per_job": ENTITIES, "shard_size": 50_000,
            "worker_processes": 2, "submit_seconds": round(submitted_s, 2),
            "seconds": round(seconds, 2), "rows_per_s": round(JOBS * ENTITIES / seconds),
            "redis_used_memory_baseline": baseline, "redis_used_memory_peak": peak,
            "redis_used_memory_after_jobs": after_jobs,
            "redis_used_memory_after_delete": after_delete,
            # used_memory minus Redis' own overhead as Redis estimates it (noisy).
            "redis_used_memory_dataset_baseline": baseline_dataset,
            "redis_used_memory_dataset_after_delete": dataset_after_delete,
            "redis_keys_after_delete": keys_after_delete,
            "jobs_seen_running": sum(seen_running.values()),
            "jobs_seen_progressing": sum(progressed.values()),
        }
        print(json.dumps(figures, indent=2))
        if os.environ.get(REPORT_ENV):
            Path(os.environ[REPORT_ENV]).write_text(json.dumps(figures, indent=2) + "\n")
        assert all(seen_running.values()), seen_running
        assert all(progressed.values()), progressed
        # Client connections' buffers make up most of what stays above the baseline.
        assert after_delete < baseline + 8 * 1024 * 1024
        assert job_keys_after_delete == []  # what is left is Celery's small task results
    finally:
        server.stop()
