#!/usr/bin/env python
"""The methods ``scripts/bench.py`` measures, one benchmark cell per process.

    .venv/bin/python scripts/bench_methods.py '{"method": "raw_floor", "size": 10000, ...}'
    # prints, as its last line: BENCH-RESULT {"wall_s": ..., "cpu_s": ..., ...}

A fresh process per cell keeps cells apart: each starts with its own peak RSS (VmHWM), its
own CPU clock and a cold boto3 client, and no cell's garbage is another's. The methods:

- ``baseline_sequential`` / ``baseline_threaded``: the seed algorithm, Feast's DynamoDB
  ``online_read`` idea, written out here as the reference (see :func:`feast_online_read`);
- ``raw_floor``: HTTP POST + ``json.loads`` and nothing else — no signing, no decoding;
- ``featurepull_pull``: the real :func:`featurepull.pull.pull`, Parquet in, Parquet out; with
  transport ``aiohttp``, the fast transport on aiohttp's HTTP client (``bench_aiohttp.py``);
- ``celery``: :func:`featurepull.client.submit` to one prefork worker instance (started
  before the timer) on a private redis-server, until the ordered Parquet output is written.
"""

from __future__ import annotations

import gc
import http.client
import itertools
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import psutil
import pyarrow.parquet as pq

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES
from featurepull.dynamo import EntityKeyEncoder
from featurepull.dynamo.feast_values import ValueProto
from featurepull.local import WorkerService, start_worker

PROJECT, FEATURE_VIEW = DEFAULT_TABLE.split(".")  # the endpoint serves demo.driver_stats
REGION = "us-east-1"
BATCH_KEYS = 100  # DynamoDB's BatchGetItem limit, and Feast's default batch_size
RESULT_PREFIX = "BENCH-RESULT "
WORKER_READY_TIMEOUT_S = 90.0
# A transport only the benchmark has (scripts/bench_aiohttp.py), for featurepull_pull cells.
BENCH_ONLY_TRANSPORT = "aiohttp"
MIB_PER_KIB = 1 / 1024

FeastRow = tuple[datetime | None, dict[str, Any] | None]


@dataclass
class CellSpec:
    """One cell to measure: a method, a size and a thread count, against one endpoint."""

    method: str  # baseline_sequential | baseline_threaded | raw_floor | featurepull_pull | celery
    size: int
    threads: int
    endpoint_url: str
    entities: str  # Parquet file with one int64 column `driver_id`
    workdir: str
    transport: str | None = None  # DynamoSettings.transport, when featurepull has it
    processes: int = 1  # celery: prefork concurrency of the one worker instance
    shard_size: int = 50_000  # celery: entities per shard
    timeout_s: float = 3600.0


@dataclass
class CellResult:
    """What one cell measured."""

    wall_s: float
    cpu_s: float  # user+sys of the processes doing the work (see details for the parts)
    peak_rss_mb: float  # VmHWM of the process doing the work (celery: the largest pool child)
    rows: int
    found: int
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# The seed algorithm: Feast's online_read
# ---------------------------------------------------------------------------------------


def feast_online_read(driver_ids: Sequence[int], endpoint_url: str,
                      workers: int | None) -> list[FeastRow]:
    """Feast's DynamoDB ``online_read``: batches of 100 entity ids through the boto3
    *resource* API (TypeDeserializer turns ``B`` into Binary), each feature parsed into a
    ``Value`` protobuf, ``event_ts`` through ``datetime.fromisoformat``, one
    ``(event_ts, {name: Value})`` per key, ``(None, None)`` when absent.

    ``workers=None`` sends the batches one after another, as ``online_read`` does;
    otherwise a ``ThreadPoolExecutor(workers)`` shares one resource (and its client), as
    newer Feast versions do with ``max_read_workers``. Like Feast, keys left in
    ``UnprocessedKeys`` are not asked for again. One deliberate difference: Feast indexes
    *every* entity id of the call for each batch it sorts, which is quadratic in the call's
    size; here each batch indexes its own ids, so the baseline is the idea at its best.
    """
    import boto3
    from botocore.config import Config

    resource = boto3.resource(
        "dynamodb", region_name=REGION, endpoint_url=endpoint_url,
        config=Config(max_pool_connections=max(10, workers or 1)))
    encoder = EntityKeyEncoder({"driver_id": "int64"})
    entity_ids = [encoder.entity_id([driver]) for driver in driver_ids]
    batches = [entity_ids[start:start + BATCH_KEYS]
               for start in range(0, len(entity_ids), BATCH_KEYS)]

    def read_batch(batch: list[str]) -> list[FeastRow]:
        response = resource.batch_get_item(RequestItems={DEFAULT_TABLE: {
            "Keys": [{"entity_id": entity_id} for entity_id in batch],
            "ConsistentRead": False,
        }})
        return _feast_batch_rows(response, batch)

    if workers is None:
        parts: Iterator[list[FeastRow]] = map(read_batch, batches)
        return list(itertools.chain.from_iterable(parts))
    with ThreadPoolExecutor(workers) as pool:
        return list(itertools.chain.from_iterable(pool.map(read_batch, batches)))


def _feast_batch_rows(response: dict[str, Any], batch: list[str]) -> list[FeastRow]:
    """Feast's ``_process_batch_get_response``: sort the items into batch order, pad the
    gaps with ``(None, None)``."""
    items = response.get("Responses", {}).get(DEFAULT_TABLE)
    rows: list[FeastRow] = []
    if items:
        order = {entity_id: i for i, entity_id in enumerate(batch)}
        position = 0
        for item in sorted(items, key=lambda item: order[item["entity_id"]]):
            while item["entity_id"] != batch[position]:
                rows.append((None, None))
                position += 1
            features = {}
            for name, binary in item["values"].items():
                value = ValueProto()
                value.ParseFromString(binary.value)
                features[name] = value
            rows.append((datetime.fromisoformat(item["event_ts"]), features))
            position += 1
    rows.extend([(None, None)] * (len(batch) - len(rows)))
    return rows


# ---------------------------------------------------------------------------------------
# The raw floor
# ---------------------------------------------------------------------------------------


def raw_floor(driver_ids: Sequence[int], endpoint_url: str, threads: int) -> int:
    """Items found, by the least any Python client must do: hash the keys, POST each
    100-key BatchGetItem body over a keep-alive connection per thread, ``json.loads`` the
    answer. No signing, no retries, no decoding."""
    encoder = EntityKeyEncoder({"driver_id": "int64"})
    entity_ids = [encoder.entity_id([driver]) for driver in driver_ids]
    parts = urlsplit(endpoint_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = {"Content-Type": "application/x-amz-json-1.0",
               "X-Amz-Target": "DynamoDB_20120810.BatchGetItem"}
    local = threading.local()
    opened: list[http.client.HTTPConnection] = []

    def read_batch(start: int) -> int:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host, port, timeout=30)
            opened.append(connection)
        body = json.dumps({"RequestItems": {DEFAULT_TABLE: {"Keys": [
            {"entity_id": {"S": entity_id}}
            for entity_id in entity_ids[start:start + BATCH_KEYS]]}}})
        connection.request("POST", "/", body, headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"the endpoint answered {response.status}: {answer}")
        return len(answer["Responses"][DEFAULT_TABLE])

    try:
        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(read_batch, range(0, len(entity_ids), BATCH_KEYS)))
    finally:
        for connection in opened:
            connection.close()


# ---------------------------------------------------------------------------------------
# featurepull
# ---------------------------------------------------------------------------------------


def dynamodb_overrides(spec: CellSpec) -> dict[str, Any]:
    """featurepull's dynamodb settings for a cell."""
    values: dict[str, Any] = {"endpoint_url": spec.endpoint_url, "region": REGION,
                              "max_read_workers": spec.threads}
    if spec.transport is not None:
        # aiohttp is the benchmark's own: the fast transport with aiohttp's HTTP client.
        values["transport"] = "fast" if spec.transport == BENCH_ONLY_TRANSPORT else spec.transport
    return values


def featurepull_pull(spec: CellSpec) -> tuple[int, int, dict[str, Any]]:
    """Rows written, keys found and read statistics of one in-process ``pull``."""
    from featurepull.config import load_settings
    from featurepull.pull import PullRequest, pull

    settings = load_settings(overrides={"project": PROJECT,
                                        "dynamodb": dynamodb_overrides(spec)})
    output = Path(spec.workdir) / "pull.parquet"
    swap = nullcontext()
    if spec.transport == BENCH_ONLY_TRANSPORT:
        import bench_aiohttp  # imported before the timer by run_cell

        swap = bench_aiohttp.installed()
    with swap:
        outcome = pull(PullRequest(table=FEATURE_VIEW, features=list(FEATURES)),
                       spec.entities, str(output), settings, overwrite=True)
    stats = outcome.stats
    return outcome.rows_written, stats.found, {"requests": stats.requests,
                                               "retries": stats.retries}


# ---------------------------------------------------------------------------------------
# Processes: CPU and memory (psutil; VmHWM, which psutil does not give, from /proc)
# ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a live process (0.0 once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def peak_rss_mb(pid: int | str) -> float:
    """VmHWM of a live process in MiB (0.0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) * MIB_PER_KIB, 1)
    return 0.0


# ---------------------------------------------------------------------------------------
# featurepull through Celery
# ---------------------------------------------------------------------------------------


@contextmanager
def celery_worker(env: dict[str, str], queue: str, processes: int,
                  log_path: Path) -> Iterator[WorkerService]:
    """One prefork worker instance, ready (it answers a ping) with its pool started."""
    worker = start_worker(env, log_path, name=f"bench-{uuid.uuid4().hex[:6]}", queue=queue,
                          concurrency=processes, loglevel="INFO",
                          timeout=WORKER_READY_TIMEOUT_S)
    try:
        if len(worker.pool_pids()) != processes:
            raise RuntimeError(f"the worker has {worker.pool_pids()} pool processes, "
                               f"not {processes}:\n{worker.log_tail()}")
        yield worker
    finally:
        worker.stop(30.0)


def celery_job(spec: CellSpec) -> CellResult:
    """Submit → ordered Parquet output, through one worker instance of ``processes``
    prefork children; CPU summed over the worker's processes and this submitting one."""
    import featurepull.worker.app  # noqa: F401  (the producer app: imported before the timer)
    from featurepull.client import submit
    from featurepull.config import load_settings
    from featurepull.local import start_redis

    redis_service = start_redis()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(spec.workdir)
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("FEATUREPULL_")}
    env.update({
        "FEATUREPULL_REDIS_URL": redis_service.url,
        "FEATUREPULL_PROJECT": PROJECT,
        "FEATUREPULL_JOBS__QUEUE": queue,
        "FEATUREPULL_JOBS__SHARD_SIZE": str(spec.shard_size),
        "FEATUREPULL_LOG_FORMAT": "console",
        **{f"FEATUREPULL_DYNAMODB__{name.upper()}": str(value)
           for name, value in dynamodb_overrides(spec).items()},
    })
    settings = load_settings(overrides={
        "project": PROJECT, "redis_url": redis_service.url,
        "dynamodb": dynamodb_overrides(spec),
        "jobs": {"shard_size": spec.shard_size, "queue": queue}})
    output = workdir / "celery.parquet"
    try:
        with celery_worker(env, queue, spec.processes, workdir / "worker.log") as worker:
            children = worker.pool_pids()
            watched = {"worker_main": [worker.pid], "pool_children": children,
                       "submitter": [os.getpid()], "redis_server": [redis_service.process.pid]}
            before = {role: sum(map(cpu_seconds, pids)) for role, pids in watched.items()}
            started = time.perf_counter()
            job = submit(FEATURE_VIEW, list(FEATURES), spec.entities, str(output),
                         settings=settings, overwrite=True)
            status = job.wait(timeout=spec.timeout_s, progress=False, poll_s=0.02)
            wall = time.perf_counter() - started
            cpu = {role: round(sum(map(cpu_seconds, pids)) - before[role], 3)
                   for role, pids in watched.items()}
            if sorted(worker.pool_pids()) != sorted(children):
                raise RuntimeError("a prefork child was replaced mid-job; its CPU is lost")
            child_peaks = [peak_rss_mb(pid) for pid in children]
            main_peak = peak_rss_mb(worker.pid)
    finally:
        redis_service.stop()
    summary = status.summary or {}
    read = summary.get("read", {})
    details = {"cpu_s_by_process": cpu, "pool_children_peak_rss_mb": child_peaks,
               "worker_main_peak_rss_mb": main_peak, "shards": status.shards,
               "shard_size": spec.shard_size, "requests": read.get("requests"),
               "retries": read.get("retries")}
    return CellResult(
        wall_s=wall,
        cpu_s=round(cpu["worker_main"] + cpu["pool_children"] + cpu["submitter"], 3),
        peak_rss_mb=max(child_peaks, default=0.0),
        rows=int(pq.read_metadata(output).num_rows),
        found=int(read.get("found", -1)),
        details=details)


# ---------------------------------------------------------------------------------------
# One cell
# ---------------------------------------------------------------------------------------


def measure_here(work: Callable[[], tuple[int, int, dict[str, Any]]]) -> CellResult:
    """Wall and CPU seconds (all threads of this process) of ``work``, and this process's
    peak RSS."""
    gc.collect()
    before, started = os.times(), time.perf_counter()
    rows, found, details = work()
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return CellResult(wall, round(cpu, 3), peak_rss_mb("self"), rows, found, details)


def run_cell(spec: CellSpec) -> CellResult:
    """Measure the cell ``spec`` names. Every method's modules are imported before its
    timer starts (as ``celery_job`` imports the client): an import is paid once per process,
    not per read, and featurepull's (0.3 s) would otherwise weigh on every small cell."""
    import boto3  # noqa: F401  (the baselines)
    import botocore.config  # noqa: F401

    import featurepull.config
    import featurepull.pull  # noqa: F401

    if spec.method == "celery":
        return celery_job(spec)
    if spec.method == "featurepull_pull":
        if spec.transport == BENCH_ONLY_TRANSPORT:
            import bench_aiohttp  # noqa: F401
        return measure_here(lambda: featurepull_pull(spec))
    driver_ids = pq.read_table(spec.entities).column("driver_id").to_pylist()
    if spec.method in ("baseline_sequential", "baseline_threaded"):
        workers = None if spec.method == "baseline_sequential" else spec.threads

        def baseline() -> tuple[int, int, dict[str, Any]]:
            rows = feast_online_read(driver_ids, spec.endpoint_url, workers)
            return len(rows), sum(row[0] is not None for row in rows), {}

        return measure_here(baseline)
    if spec.method == "raw_floor":
        return measure_here(lambda: (len(driver_ids),
                                     raw_floor(driver_ids, spec.endpoint_url, spec.threads),
                                     {}))
    raise SystemExit(f"bench_methods: unknown method {spec.method!r}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    # SIGTERM from bench.py ends a cell through the cleanup above (worker, redis-server).
    signal.signal(signal.SIGTERM, _interrupt)
    spec = CellSpec(**json.loads(args[0]))
    with tempfile.TemporaryDirectory(prefix="featurepull-bench-cell-") as workdir:
        spec.workdir = workdir
        result = run_cell(spec)
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
