"""``featurepull demo``: the whole product on embedded services, in one command.

Starts a private redis-server, a local DynamoDB endpoint serving a seeded Feast-layout feature
view, and a Celery worker with 2 prefork processes; writes an entity file with as many rows as
seeded drivers (shuffled, with unknown ids and repeats), submits a job, shows its progress,
writes ``demo-output/features.parquet`` (the features and each driver's ``risk`` from the
example scorer ``driver_risk``, run in the workers), prints the summary and the first rows,
and stops
everything — also after Ctrl-C. Every process it starts carries ``FEATUREPULL_DEMO_ID`` in its
environment, so tests (and curious users) can check that none is left behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.bench.endpoint import FEATURES, start_endpoint
from featurepull.client import Job, submit
from featurepull.config import Settings, load_settings
from featurepull.local import start_redis, start_worker

PROJECT = "demo"
VIEW = "driver_hourly_stats"
QUEUE = "featurepull-demo"
DEMO_ID_ENV = "FEATUREPULL_DEMO_ID"
WORKER_READY_TIMEOUT_S = 60
# The example scorer, registered in the workers' (and the submitter's) settings; the job
# names it, and the workers add its `risk` column beside the features.
SCORER = "driver_risk"
SCORERS = [{"name": SCORER, "path": "featurepull.examples.scorers:driver_risk"}]


@dataclass
class DemoServices:
    """What the demo started, and how to reach it."""

    redis_url: str
    endpoint_url: str
    worker_pid: int
    worker_log: Path
    settings: Settings


def write_entities(path: Path, rows: int, seed: int = 1) -> int:
    """``rows`` entity ids, shuffled: 85% known drivers, 10% unknown ids, 5% repeats."""
    rng = random.Random(seed)
    known = rng.sample(range(rows), rows - rows // 10 - rows // 20)
    unknown = [10_000_000 + i for i in range(rows // 10)]
    ids = known + unknown
    ids += rng.choices(known, k=rows - len(ids))
    rng.shuffle(ids)
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return len(ids)


def _worker_env(redis_url: str, endpoint_url: str, demo_id: str,
                out_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATUREPULL_")}
    # What a job may touch (docs/security.md): the demo's folder, the demo's endpoint only.
    here = json.dumps([str(out_dir.resolve())])
    env.update({
        DEMO_ID_ENV: demo_id,
        "FEATUREPULL_REDIS_URL": redis_url,
        "FEATUREPULL_PROJECT": PROJECT,
        "FEATUREPULL_DYNAMODB__ENDPOINT_URL": endpoint_url,
        "FEATUREPULL_DYNAMODB__REGION": "us-east-1",
        "FEATUREPULL_JOBS__QUEUE": QUEUE,
        "FEATUREPULL_JOBS__SHARD_SIZE": "10000",
        "FEATUREPULL_SCORERS": json.dumps(SCORERS),
        "FEATUREPULL_JOBS__ALLOWED_INPUTS": here,
        "FEATUREPULL_JOBS__ALLOWED_OUTPUTS": here,
        "FEATUREPULL_JOBS__ALLOWED_ENDPOINTS": "[]",
    })
    return env


@contextmanager
def demo_services(drivers: int, out_dir: Path, say: Callable[[str], None],
                  processes: int = 2) -> Iterator[DemoServices]:
    """Start redis-server, the DynamoDB endpoint and the worker; stop them on exit."""
    demo_id = uuid.uuid4().hex
    os.environ[DEMO_ID_ENV] = demo_id  # inherited by the services we start
    # The local endpoint accepts any credentials; never send real ones to it.
    os.environ.update(AWS_ACCESS_KEY_ID="featurepull-demo",
                      AWS_SECRET_ACCESS_KEY="featurepull-demo")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    with ExitStack() as stack:
        redis = start_redis()
        stack.callback(redis.stop)
        say(f"redis-server on {redis.url}")
        endpoint = stack.enter_context(
            start_endpoint(drivers=drivers, table=f"{PROJECT}.{VIEW}"))
        say(f"local DynamoDB endpoint on {endpoint.url}, table {PROJECT}.{VIEW} seeded with "
            f"{drivers:,} drivers ({', '.join(FEATURES)})")
        env = _worker_env(redis.url, endpoint.url, demo_id, out_dir)
        worker = start_worker(env, out_dir / "worker.log", name="demo", queue=QUEUE,
                              concurrency=processes, timeout=WORKER_READY_TIMEOUT_S)
        stack.callback(worker.stop)
        say(f"Celery worker with {processes} prefork processes (pid {worker.pid})")
        settings = load_settings(overrides={
            "redis_url": redis.url, "project": PROJECT,
            "dynamodb": {"endpoint_url": endpoint.url, "region": "us-east-1"},
            "jobs": {"queue": QUEUE, "shard_size": 10_000}, "scorers": SCORERS,
        })
        yield DemoServices(redis.url, endpoint.url, worker.pid, out_dir / "worker.log",
                           settings)


def run_job(services: DemoServices, out_dir: Path, drivers: int) -> Job:
    """Submit the demo job (features and the example scorer's risk) and wait for it with a
    progress bar."""
    entities = out_dir / "entities.parquet"
    write_entities(entities, drivers)
    job = submit(VIEW, list(FEATURES), str(entities), str(out_dir / "features.parquet"),
                 settings=services.settings, overwrite=True, scorer=SCORER, with_features=True)
    job.wait(progress=True)
    return job


def explore_hint(services: DemoServices, out_dir: Path) -> str:
    """How to use the running services from another terminal."""
    return "\n".join([
        "The services keep running. In another terminal:",
        f"  export FEATUREPULL_REDIS_URL={services.redis_url} FEATUREPULL_PROJECT={PROJECT}",
        f"  export FEATUREPULL_DYNAMODB__ENDPOINT_URL={services.endpoint_url}"
        " FEATUREPULL_DYNAMODB__REGION=us-east-1",
        f"  export FEATUREPULL_JOBS__QUEUE={QUEUE}"
        " AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo",
        f"  export FEATUREPULL_SCORERS='{json.dumps(SCORERS)}'",
        f"  featurepull submit --table {VIEW} --features {','.join(FEATURES)} \\",
        f"      --entities {out_dir / 'entities.parquet'} \\",
        f"      --output {out_dir / 'more.parquet'} --wait",
        f"      # add --scorer {SCORER} (--with-features) for the example scorer's risk",
        "  celery -A featurepull.worker flower     # then open http://127.0.0.1:5555",
        "Press Ctrl-C here to stop everything.",
    ])


def preview(path: str, rows: int = 5) -> str:
    """The first rows of the output as an aligned text table."""
    table = pq.read_table(path).slice(0, rows).to_pylist()
    columns = list(table[0]) if table else []
    cells = [[_short(row[c]) for c in columns] for row in table]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "null" if value is None else str(value)


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so the demo's cleanup runs either way."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
