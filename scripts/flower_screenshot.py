#!/usr/bin/env python
"""Retake docs/flower-running-job.png: Flower's tasks page while a real job runs.

    .venv/bin/python scripts/flower_screenshot.py [--output docs/flower-running-job.png]

Everything runs on this machine and is stopped at the end (also on Ctrl-C or an error): a
private redis-server, the lean DynamoDB endpoint (``featurepull.bench.endpoint``) slowed to
``--latency-ms`` a request, two featurepull workers of two prefork processes each (two reading
threads per process, so a 10,000-entity shard takes a few seconds), and Flower with
featurepull's task columns. The script submits a job through ``featurepull.submit_job``, waits
until Flower shows shards done and shards in ``PROGRESS``, has headless Chromium screenshot
``/tasks``, then waits for the job to finish.

Needs Debian's ``chromium`` (``apt-get install chromium``); the tests do not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, start_endpoint
from featurepull.cli import FLOWER_DEFAULTS
from featurepull.client import Job
from featurepull.config import load_settings
from featurepull.local import running_flower, running_redis, start_worker
from featurepull.tasks.celery_tasks import send_submit_job
from featurepull.worker.app import producer_app

QUEUE = "featurepull-screenshot"
MAX_PNG_BYTES = 300_000
WORKERS = ("reader1", "reader2")


def log(message: str) -> None:
    print(f"flower_screenshot: {message}", file=sys.stderr, flush=True)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"flower_screenshot: {what} within {timeout:.0f}s")
        time.sleep(0.2)


def screenshot(chromium: str, url: str, output: Path, scale: float) -> None:
    with tempfile.TemporaryDirectory(prefix="featurepull-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--window-size=1400,900", f"--force-device-scale-factor={scale}",
               # The tasks table loads by ajax: let the page's timers and requests run first.
               "--virtual-time-budget=5000", f"--screenshot={output}", url]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=90)


def task_counts(flower_url: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in get_json(f"{flower_url}/api/tasks?taskname=featurepull.read_shard").values():
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("docs/flower-running-job.png"))
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--chromium", default="chromium")
    opts = parser.parse_args()
    chromium = shutil.which(opts.chromium)
    if chromium is None:
        raise SystemExit(f"flower_screenshot: no {opts.chromium!r} on PATH; apt-get install "
                         "chromium (or pass --chromium)")
    # The local endpoint accepts any credentials; never send real ones to it.
    os.environ.update(AWS_ACCESS_KEY_ID="screenshot", AWS_SECRET_ACCESS_KEY="screenshot")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="featurepull-screenshot-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        redis = stack.enter_context(running_redis())
        endpoint = stack.enter_context(start_endpoint(
            drivers=opts.entities, latency_ms=opts.latency_ms, table=DEFAULT_TABLE))
        log(f"redis-server {redis.url}, DynamoDB endpoint {endpoint.url} "
            f"({opts.latency_ms:g} ms a request)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATUREPULL_")}
        env.update({
            "FEATUREPULL_REDIS_URL": redis.url,
            "FEATUREPULL_PROJECT": "demo",
            "FEATUREPULL_DYNAMODB__ENDPOINT_URL": endpoint.url,
            "FEATUREPULL_DYNAMODB__REGION": "us-east-1",
            "FEATUREPULL_DYNAMODB__MAX_READ_WORKERS": "2",
            "FEATUREPULL_JOBS__QUEUE": QUEUE,
            "FEATUREPULL_JOBS__SHARD_SIZE": str(opts.shard_size),
        })
        for name in WORKERS:
            # featurepull worker, 2 prefork processes each; ready once it answers a ping.
            started = start_worker(env, work / f"{name}.log", name=name, concurrency=2,
                                   loglevel="INFO", cli=True)
            stack.callback(started.stop)
        flower = stack.enter_context(running_flower(
            {**env, "FLOWER_UNAUTHENTICATED_API": "true"},
            args=[f"--tasks_columns={FLOWER_DEFAULTS['tasks_columns']}"]))
        log(f"workers {', '.join(WORKERS)} and Flower {flower.url} are up")
        wait_until(lambda: sum(alive for alive in
                               get_json(f"{flower.url}/api/workers?status=1").values())
                   >= len(WORKERS), 30, "Flower did not see the workers")

        entities = work / "drivers.parquet"
        pq.write_table(pa.table({"driver_id": pa.array(range(opts.entities), pa.int64())}),
                       entities)
        settings = load_settings(overrides={
            "redis_url": redis.url, "jobs": {"queue": QUEUE, "shard_size": opts.shard_size}})
        app = producer_app(settings)
        stack.callback(app.close)
        request = {"table": "driver_stats", "features": list(FEATURES),
                   "entities": str(entities), "output": str(work / "features.parquet")}
        started = send_submit_job(app, request, QUEUE)
        wait_until(lambda: (counts := task_counts(flower.url)).get("SUCCESS", 0) >= 2
                   and counts.get("PROGRESS", 0) >= 2, 60,
                   "Flower did not show shards done and reading")
        log(f"shards in Flower now: {task_counts(flower.url)}; taking the screenshot")
        scale = 1.0
        screenshot(chromium, f"{flower.url}/tasks", opts.output, scale)
        while opts.output.stat().st_size > MAX_PNG_BYTES and scale > 0.5:
            scale -= 0.15
            log(f"{opts.output.stat().st_size:,} bytes is too big; again at scale {scale:.2f}")
            screenshot(chromium, f"{flower.url}/tasks", opts.output, scale)
        job = Job(started.get(timeout=60)["job_id"], settings)
        status = job.wait(timeout=600, progress=False)
        log(f"job {job.id} {status.state}: {status.rows:,} entities in {status.shards} shards")
    log(f"wrote {opts.output} ({opts.output.stat().st_size:,} bytes); everything is stopped")


if __name__ == "__main__":
    main()
