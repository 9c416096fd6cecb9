#!/usr/bin/env python
"""Measure big featurepull jobs through the real pipeline: submit, Redis, prefork workers.

    .venv/bin/python scripts/measure_job.py --entities 1000000,5000000 --shard-size 50000 \\
        --workers 2 --output-kind file --json-out bench-output/measure_job.json

Answers: "A 2,000,000-entity job: report submit time, Redis memory at peak, and peak RSS per
worker process (bounded by shard size, not job size); no Celery message over 1 MB."

Everything runs on this machine and is stopped at the end (also on Ctrl-C or an error): the
lean DynamoDB endpoint (``featurepull.bench.endpoint``) serving as many drivers as the largest
job has entities, and, for each entity count, a fresh private redis-server (so its
``used_memory_peak`` belongs to that job alone) and one Celery worker instance
(``--pool prefork --concurrency K``). For each entity count the script

1. writes a shuffled entity Parquet file (85% known drivers, 10% unknown, 5% repeats);
2. times ``featurepull.client.submit`` while no worker runs (validation, sharding, storing
   the shards' keys in Redis, enqueueing), then weighs every message on the queue;
3. starts the worker and samples, every ``--interval`` seconds, Redis ``used_memory`` and the
   RSS (``VmRSS``, ``VmHWM``) of the worker's main process and of each prefork child;
4. waits for the job, checks the output (a Parquet file, or with ``--output-kind dataset`` a
   Parquet dataset read with ``pyarrow.dataset``) has one row per entity in input order, and
   reports the job's read statistics;
5. prints one table row per job: submit seconds and the submitting process's peak RSS, Redis
   ``used_memory_peak``, the largest worker-process RSS, job and publish seconds, rows/s —
   then every worker process's own peak.

MB in the output means MiB (2**20 bytes).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import redis

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.client import Job, JobStatus, submit
from featurepull.config import Settings, load_settings
from featurepull.local import RedisService, start_redis, start_worker

FEATURE_VIEW = "driver_stats"  # with project "demo": the endpoint's table demo.driver_stats
PROJECT = "demo"
REGION = "us-east-1"
MESSAGE_LIMIT_BYTES = 1_000_000
MIB = 1024 * 1024
ENDPOINT_TIMEOUT_S = 900.0  # building 2M drivers' items takes a while on a small machine
WORKER_STOP_TIMEOUT_S = 30.0
TERMINAL_STATES = ("succeeded", "failed", "cancelled")
# Dummy credentials: the endpoint accepts anything, and real ones must never be used here.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION}


def log(message: str) -> None:
    print(f"measure_job: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Processes and their memory
# ---------------------------------------------------------------------------------------


def proc_status(pid: int | str) -> dict[str, int] | None:
    """VmRSS, VmHWM and RssAnon of a process in kB; None once it is gone."""
    wanted = {"VmRSS", "VmHWM", "RssAnon"}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in wanted:
            values[name] = int(rest.split()[0])
    return values


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (a prefork worker's pool children)."""
    try:
        return [child.pid for child in psutil.Process(parent).children()]
    except psutil.NoSuchProcess:
        return []


def reset_own_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux: ``5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def own_peak_rss_mb() -> float:
    status = proc_status("self") or {}
    return round(status.get("VmHWM", 0) / 1024, 1)


@dataclass
class ProcessPeak:
    """The most memory one worker process was seen to hold."""

    pid: int
    role: str  # "main" or "child"
    rss_mb: float = 0.0  # largest sampled VmRSS
    hwm_mb: float = 0.0  # the kernel's own high-water mark (catches peaks between samples)
    rss_anon_mb: float = 0.0  # largest sampled RssAnon (RSS less file-backed pages)

    @property
    def peak_mb(self) -> float:
        return max(self.rss_mb, self.hwm_mb)

    def update(self, status: dict[str, int]) -> None:
        self.rss_mb = max(self.rss_mb, round(status.get("VmRSS", 0) / 1024, 1))
        self.hwm_mb = max(self.hwm_mb, round(status.get("VmHWM", 0) / 1024, 1))
        self.rss_anon_mb = max(self.rss_anon_mb, round(status.get("RssAnon", 0) / 1024, 1))


class Sampler(threading.Thread):
    """Samples Redis memory and the worker processes' RSS until stopped."""

    def __init__(self, client: redis.Redis, worker_pid: int, interval_s: float) -> None:
        super().__init__(name="measure-sampler", daemon=True)
        self.client = client
        self.worker_pid = worker_pid
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.started_at = time.monotonic()
        self.processes: dict[int, ProcessPeak] = {}
        self.redis_used_max = 0
        self.redis_rss_max = 0
        self.samples = 0
        self.errors = 0
        # (seconds since start, redis used MB, largest child RSS MB, main RSS MB)
        self.timeline: list[tuple[float, float, float, float]] = []

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=10)
        self.sample()  # VmHWM is monotonic: a last look gives each process's true peak

    def sample(self) -> None:
        with self.lock:
            try:
                memory = self.client.info("memory")
            except redis.RedisError:
                self.errors += 1
                memory = {}
            used = int(memory.get("used_memory", 0))
            self.redis_used_max = max(self.redis_used_max, used)
            self.redis_rss_max = max(self.redis_rss_max, int(memory.get("used_memory_rss", 0)))
            main_rss = child_rss = 0.0
            pids = [(self.worker_pid, "main")]
            pids += [(pid, "child") for pid in child_pids(self.worker_pid)]
            for pid, role in pids:
                status = proc_status(pid)
                if status is None:
                    continue
                peak = self.processes.setdefault(pid, ProcessPeak(pid, role))
                peak.update(status)
                rss = status.get("VmRSS", 0) / 1024
                if role == "main":
                    main_rss = rss
                else:
                    child_rss = max(child_rss, rss)
            self.samples += 1
            self.timeline.append((round(time.monotonic() - self.started_at, 2),
                                  round(used / MIB, 1), round(child_rss, 1), round(main_rss, 1)))


@contextmanager
def private_redis() -> Iterator[RedisService]:
    service = start_redis()
    try:
        yield service
    finally:
        service.stop()


# ---------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------


def entity_ids(count: int, drivers: int, seed: int) -> list[int]:
    """85% known drivers, 10% unknown ids, 5% repeats of those, shuffled."""
    rng = random.Random(seed)
    known = rng.sample(range(drivers), int(count * 0.85))
    ids = known + [drivers + i for i in range(count // 10)]
    ids += rng.choices(ids, k=count - len(ids))
    rng.shuffle(ids)
    return ids


def write_entities(path: Path, ids: pa.Array) -> None:
    """The ids as a one-column entity file, in the format its extension names."""
    if path.suffix == ".parquet":
        pq.write_table(pa.table({"driver_id": ids}), path)
        return
    with open(path, "w") as stream:  # .jsonl
        for start in range(0, len(ids), 1_000_000):
            stream.write("".join(f'{{"driver_id": {n}}}\n'
                                 for n in ids.slice(start, 1_000_000).to_pylist()))


def weigh_queue(client: redis.Redis, queue: str) -> list[int]:
    """Byte size of every message waiting on ``queue`` (and kombu's priority sub-queues)."""
    sizes: list[int] = []
    for key in client.scan_iter(match=f"{queue}*"):
        if client.type(key) == b"list":
            sizes += [len(message) for message in client.lrange(key, 0, -1)]
    return sizes


def weigh_results(client: redis.Redis) -> list[int]:
    """Byte size of every task result (and PROGRESS state) in the Celery result backend."""
    return [int(client.strlen(key)) for key in client.scan_iter(match="celery-task-meta-*")]


def redis_memory(client: redis.Redis) -> dict[str, int]:
    info = client.info("memory")
    return {name: int(info[name]) for name in ("used_memory", "used_memory_peak",
                                               "used_memory_rss")}


def timed_submit(entities: Path, output: str, settings: Settings,
                 profile_path: Path | None) -> tuple[Job, float]:
    """Submit the job; wall seconds of the call (under cProfile when ``profile_path``)."""
    profiler = cProfile.Profile() if profile_path else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        job = submit(FEATURE_VIEW, list(FEATURES), str(entities), output, settings=settings)
    finally:
        if profiler is not None:
            profiler.disable()
    seconds = time.perf_counter() - started
    if profiler is not None and profile_path is not None:
        profiler.dump_stats(profile_path)
        stats = pstats.Stats(profiler, stream=sys.stderr)
        log(f"submit profile written to {profile_path}; top functions by own time:")
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(25)
    return job, seconds


# Run as a separate process: a fresh interpreter submits, as `featurepull submit` would, and
# reports its own peak. The kernel's ru_maxrss is no good for this: a child started by fork
# (or vfork) then exec keeps the parent's high-water mark as its own, so a child of this
# script (which holds the whole entity list) would report this script's memory. VmHWM in
# /proc/self/status belongs to the new process image alone.
SEPARATE_SUBMIT = r"""
import json, sys, time
from featurepull.client import submit
from featurepull.config import load_settings
from featurepull.tasks.task_messages import SHARD_TASK, RedisTaskSender
import featurepull.worker.app  # imported before timing, as in the in-process submit

settings = load_settings(overrides=json.loads(sys.argv[1]))
first = []
send = RedisTaskSender.send

# The submitter writes its task messages into Redis itself (no Celery publish, no
# after_task_publish): the first shard is queued once its message's send has returned,
# read on the same clock, from the same start, inside the submit call.
def timed_send(self, task, args, argsrepr):
    send(self, task, args, argsrepr)
    if task == SHARD_TASK and not first:
        first.append(time.perf_counter() - started)

RedisTaskSender.send = timed_send

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0

before = hwm()
started = time.perf_counter()
submit(sys.argv[4], sys.argv[5].split(","), sys.argv[2], sys.argv[3], settings=settings)
seconds = time.perf_counter() - started
print(json.dumps({"peak_rss_mb": round(hwm(), 1), "after_imports_mb": round(before, 1),
                  "submit_s": round(seconds, 3),
                  "first_shard_queued_s": round(first[0], 3) if first else None}))
"""


def separate_submit(entities: Path, output: str, options: Options) -> dict[str, Any]:
    """Submit in a new process on its own redis-server (no worker): its own peak RSS, the
    submit's seconds and the seconds until the first shard's message was queued."""
    with private_redis() as service:
        overrides = {"project": PROJECT, "redis_url": service.url,
                     "jobs": {"shard_size": options.shard_size, "queue": "measure-separate"},
                     "dynamodb": {"endpoint_url": options.endpoint_url, "region": REGION}}
        done = subprocess.run([sys.executable, "-c", SEPARATE_SUBMIT, json.dumps(overrides),
                               str(entities), output, FEATURE_VIEW, ",".join(FEATURES)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the separate submitter failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["redis_peak_mb"] = round(
            redis_memory(redis.Redis.from_url(service.url))["used_memory_peak"] / MIB, 1)
    return result


def wait_for(job: Job, worker: subprocess.Popen[bytes], timeout_s: float) -> JobStatus:
    """``Job.wait`` in short slices, so a worker that died ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return job.wait(timeout=5.0, progress=False, poll_s=0.2)
        except TimeoutError:
            pass
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode} mid-job")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job.id} did not finish within {timeout_s:.0f}s")


def verify_output(path: Path, expected: pa.Array, missing: int) -> dict[str, Any]:
    """One output row per entity, driver ids in input order, nulls only for missing keys."""
    columns = ["driver_id", "event_timestamp"]
    table = (ds.dataset(path, format="parquet").to_table(columns=columns) if path.is_dir()
             else pq.read_table(path, columns=columns))
    ids = table.column("driver_id").combine_chunks()
    checks = {
        "rows": table.num_rows,
        "rows_match": table.num_rows == len(expected),
        "order_matches": ids.type == expected.type and ids.equals(expected),
        "null_rows": table.column("event_timestamp").null_count,
    }
    checks["nulls_match_missing"] = checks["null_rows"] == missing
    checks["ok"] = bool(checks["rows_match"] and checks["order_matches"]
                        and checks["nulls_match_missing"])
    return checks


@dataclass
class RunResult:
    entities: int
    shards: int
    submit_s: float
    submitter_peak_rss_mb: float
    separate_submitter_rss_mb: float
    first_shard_queued_s: float
    max_message_bytes: int
    redis_peak_mb: float
    worker_child_peak_rss_mb: float
    worker_main_peak_rss_mb: float
    job_seconds: float
    publish_s: float
    rows_per_s: float
    details: dict[str, Any] = field(default_factory=dict)


TABLE_COLUMNS = ("entities", "shards", "submit_s", "submitter_peak_rss_mb",
                 "separate_submitter_rss_mb", "first_shard_queued_s", "max_message_bytes",
                 "redis_peak_mb", "worker_child_peak_rss_mb",
                 "worker_main_peak_rss_mb", "job_seconds", "publish_s", "rows_per_s")


DEFINITIONS = {
    "submit_s": "wall seconds of featurepull.client.submit (read + validate entities, store "
                "shard keys, enqueue), no worker running; module imports done beforehand",
    "submitter_peak_rss_mb": "VmHWM of this (the submitting) process over the submit call, "
                             "reset just before it",
    "separate_submitter_rss_mb": "VmHWM of a new Python process that only submits the same "
                                 "file (as `featurepull submit` would) to its own redis-server "
                                 "(not ru_maxrss: a child inherits its parent's high-water "
                                 "mark across fork and exec)",
    "first_shard_queued_s": "in that separate process: submit call start to the first "
                            "read_shard message written into Redis (its send returned, "
                            "within the submit call)",
    "max_message_bytes": "largest message on the queue (LRANGE) after submit, before any "
                         "worker ran",
    "redis_peak_mb": "used_memory_peak of the run's own redis-server (MiB)",
    "worker_child_peak_rss_mb": "max over prefork children of max(sampled VmRSS, VmHWM)",
    "worker_main_peak_rss_mb": "the worker's main process, max(sampled VmRSS, VmHWM)",
    "job_seconds": "first shard started (job meta 'started') to output written and summary "
                   "stored (meta 'finished')",
    "publish_s": "the finisher's publishing of the output (job summary publish_seconds): "
                 "the staged parts streamed into one file, or put in place as a dataset",
    "rows_per_s": "entities / job_seconds",
    "details.submit_to_output_s": "submit call start to output written, including the pause "
                                  "for weighing messages and the worker's start-up",
}


@dataclass
class Options:
    shard_size: int
    workers: int
    interval_s: float
    timeout_s: float
    seed: int
    profile_dir: Path | None
    output_kind: str = "file"
    endpoint_url: str = ""
    entity_format: str = "parquet"


def measure_submit(count: int, workdir: Path, options: Options) -> dict[str, Any]:
    """Only the separate submitter of a job of ``count`` entities (no worker: nothing is
    read), for the submitting process's memory and time with each entity file format."""
    run_dir = workdir / f"submit-{count}"
    run_dir.mkdir()
    entities_path = run_dir / f"entities.{options.entity_format}"
    write_entities(entities_path, pa.array(entity_ids(count, count, options.seed), pa.int64()))
    output = f"{run_dir / 'out'}" + ("/" if options.output_kind == "dataset" else ".parquet")
    log(f"{count:,} entities ({options.entity_format}): submitting from a separate process")
    result = {"entities": count, "entity_format": options.entity_format,
              "entity_file_mb": round(entities_path.stat().st_size / MIB, 1),
              **separate_submit(entities_path, output, options),
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    log(f"{count:,} entities: {result}")
    return result


def measure(count: int, drivers: int, endpoint: EndpointProcess, workdir: Path,
            options: Options) -> RunResult:
    """One job of ``count`` entities, on its own redis-server and worker instance."""
    run_dir = workdir / f"run-{count}"
    run_dir.mkdir()
    entities_path = run_dir / f"entities.{options.entity_format}"
    output_path = run_dir / ("out" if options.output_kind == "dataset" else "out.parquet")
    # A dataset is named by a path ending in /.
    output = f"{output_path}/" if options.output_kind == "dataset" else str(output_path)
    ids = pa.array(entity_ids(count, drivers, options.seed), pa.int64())
    write_entities(entities_path, ids)
    queue = f"measure-{uuid.uuid4().hex[:8]}"
    log(f"{count:,} entities: submitting from a separate process (no worker)")
    separate = separate_submit(entities_path, f"{output_path}-separate"
                               + ("/" if options.output_kind == "dataset" else ".parquet"),
                               options)
    log(f"{count:,} entities: separate submitter {separate}")
    with ExitStack() as stack:
        service = stack.enter_context(private_redis())
        client = redis.Redis.from_url(service.url)
        stack.callback(client.close)
        settings = load_settings(overrides={
            "project": PROJECT,
            "redis_url": service.url,
            "dynamodb": {"endpoint_url": endpoint.url, "region": REGION},
            "jobs": {"shard_size": options.shard_size, "queue": queue},
        })
        before = redis_memory(client)

        log(f"{count:,} entities: submitting (no worker running yet)")
        reset_own_peak_rss()
        profile = (options.profile_dir / f"submit-{count}.prof"
                   if options.profile_dir else None)
        submit_wall = time.time()
        job, submit_s = timed_submit(entities_path, output, settings, profile)
        submitter_peak_mb = own_peak_rss_mb()
        after_submit = redis_memory(client)
        messages = weigh_queue(client, queue)
        meta = job.store.meta(job.id)
        log(f"{count:,} entities: submit took {submit_s:.2f}s; {len(messages)} messages queued "
            f"for {meta.shards} shards, largest {max(messages, default=0):,} bytes")

        env = {name: value for name, value in os.environ.items()
               if not name.startswith("FEATUREPULL_")}
        env.update(AWS_ENV)
        env.update({
            "FEATUREPULL_REDIS_URL": service.url,
            "FEATUREPULL_PROJECT": PROJECT,
            "FEATUREPULL_DYNAMODB__ENDPOINT_URL": endpoint.url,
            "FEATUREPULL_DYNAMODB__REGION": REGION,
            "FEATUREPULL_JOBS__QUEUE": queue,
            "FEATUREPULL_JOBS__SHARD_SIZE": str(options.shard_size),
        })
        worker_log = run_dir / "worker.log"
        worker_wall = time.time()
        worker = start_worker(env, worker_log, name=f"measure-{uuid.uuid4().hex[:6]}",
                              queue=queue, concurrency=options.workers)
        stack.callback(worker.stop, WORKER_STOP_TIMEOUT_S)
        sampler = Sampler(redis.Redis.from_url(service.url), worker.pid, options.interval_s)
        sampler.start()
        try:
            status = wait_for(job, worker.process, options.timeout_s)
        except BaseException:
            tail = worker_log.read_text(errors="replace")[-3000:]
            log(f"the job did not succeed; the worker log ends with:\n{tail}")
            raise
        finally:
            sampler.stop()
            sampler.client.close()
        end = redis_memory(client)
        results = weigh_results(client)
        meta = job.store.meta(job.id)
    summary = status.summary or {}
    read = summary.get("read", {})
    checks = verify_output(output_path, ids, int(read.get("missing", -1)))
    started = meta.started or worker_wall
    finished = meta.finished or time.time()
    job_seconds = finished - started
    children = [p for p in sampler.processes.values() if p.role == "child"]
    mains = [p for p in sampler.processes.values() if p.role == "main"]
    details = {
        "job_id": job.id,
        "queue": queue,
        "verification": checks,
        "messages": {"count": len(messages), "max_bytes": max(messages, default=0),
                     "total_bytes": sum(messages),
                     "all_under_1mb": all(m < MESSAGE_LIMIT_BYTES for m in messages)},
        "result_backend": {"entries": len(results), "max_bytes": max(results, default=0)},
        "redis": {
            "used_before_submit_mb": round(before["used_memory"] / MIB, 2),
            "used_after_submit_mb": round(after_submit["used_memory"] / MIB, 2),
            "used_at_end_mb": round(end["used_memory"] / MIB, 2),
            "used_sampled_max_mb": round(sampler.redis_used_max / MIB, 2),
            "used_memory_peak_mb": round(end["used_memory_peak"] / MIB, 2),
            "rss_sampled_max_mb": round(sampler.redis_rss_max / MIB, 2),
            "peak_bytes_per_entity": round(end["used_memory_peak"] / count, 1),
        },
        "submitter_peak_rss_mb": submitter_peak_mb,
        "separate_submitter": separate,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "submit_profiled": profile is not None,
        "worker_start_to_first_shard_s": round(started - worker_wall, 3),
        "submit_to_output_s": round(finished - submit_wall, 3),
        "processes": [asdict(p) for p in sorted(sampler.processes.values(),
                                                key=lambda p: (p.role != "main", p.pid))],
        "samples": sampler.samples,
        "sample_errors": sampler.errors,
        "timeline": sampler.timeline,
        "summary": summary,
    }
    return RunResult(
        entities=count,
        shards=meta.shards,
        submit_s=round(submit_s, 3),
        submitter_peak_rss_mb=submitter_peak_mb,
        separate_submitter_rss_mb=float(separate["peak_rss_mb"]),
        first_shard_queued_s=float(separate["first_shard_queued_s"] or -1),
        max_message_bytes=max(messages, default=0),
        redis_peak_mb=round(end["used_memory_peak"] / MIB, 1),
        worker_child_peak_rss_mb=max((p.peak_mb for p in children), default=0.0),
        worker_main_peak_rss_mb=max((p.peak_mb for p in mains), default=0.0),
        job_seconds=round(job_seconds, 2),
        publish_s=round(float(summary.get("publish_seconds", 0.0)), 2),
        rows_per_s=round(count / job_seconds) if job_seconds > 0 else 0.0,
        details=details,
    )


# ---------------------------------------------------------------------------------------
# Output and command line
# ---------------------------------------------------------------------------------------


def format_table(results: Sequence[RunResult]) -> str:
    rows = [list(TABLE_COLUMNS)]
    for result in results:
        values = asdict(result)
        rows.append([f"{values[name]:,}" if isinstance(values[name], int) else
                     f"{values[name]:,.2f}" if name in ("submit_s", "job_seconds",
                                                          "publish_s",
                                                          "first_shard_queued_s") else
                     f"{values[name]:,.1f}" for name in TABLE_COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
                     for row in rows)


def read_stats_line(result: RunResult) -> str:
    read = result.details["summary"].get("read", {})
    return (f"{result.entities:,} entities: requests={read.get('requests')} "
            f"retries={read.get('retries')} rcu={read.get('consumed_rcu')} "
            f"found={read.get('found')} missing={read.get('missing')}; "
            f"output verified: {result.details['verification']['ok']}")


def process_peaks_line(result: RunResult) -> str:
    """Every worker process's own peak RSS (MiB), main process first."""
    peaks = [f"{p['role']} {p['pid']}: {max(p['rss_mb'], p['hwm_mb']):,.1f}"
             for p in result.details["processes"]]
    return f"{result.entities:,} entities, worker processes' peak RSS MB: " + ", ".join(peaks)


def entity_counts(text: str) -> list[int]:
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "integers") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("entity counts must be positive")
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure featurepull jobs end to end: submit time, largest Celery "
        "message, Redis peak memory, peak RSS per worker process.")
    parser.add_argument("--entities", type=entity_counts, default=[2_000_000],
                        help="entity count, or several comma-separated (default 2000000)")
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2,
                        help="prefork concurrency of the one worker instance")
    parser.add_argument("--json-out", type=Path, default=Path("bench-output/measure_job.json"))
    parser.add_argument("--interval", type=float, default=0.2, help="sampling period, seconds")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds a job may take before the run fails")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output-kind", choices=["file", "dataset"], default="file",
                        help="the job's output: one Parquet file, or a Parquet dataset "
                        "(an output path ending in /)")
    parser.add_argument("--entity-format", choices=["parquet", "jsonl"], default="parquet",
                        help="the entity file's format")
    parser.add_argument("--submit-only", action="store_true",
                        help="only submit, from a separate process with no worker (its peak "
                        "memory and time); the endpoint holds a few drivers")
    parser.add_argument("--profile-submit", action="store_true",
                        help="run submit under cProfile (slower); .prof files and the top "
                        "functions go next to --json-out")
    return parser.parse_args(argv)


def git_state() -> dict[str, Any]:
    """The commit measured and whether the working tree had changes on top of it."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM end the run through the cleanup below (also when started with `&`,
    # which makes a non-interactive shell ignore SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    for name in [n for n in os.environ if n.startswith("FEATUREPULL_")]:
        del os.environ[name]  # the settings are this script's, not the shell's
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(AWS_ENV)
    # Import the producer's Celery app now, so no run's submit time includes module imports.
    import featurepull.worker.app  # noqa: F401

    counts: list[int] = args.entities
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    drivers = max(counts)
    options = Options(shard_size=args.shard_size, workers=args.workers,
                      interval_s=args.interval, timeout_s=args.timeout, seed=args.seed,
                      profile_dir=args.json_out.parent if args.profile_submit else None,
                      output_kind=args.output_kind, entity_format=args.entity_format)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="featurepull-measure-")))
        if args.submit_only:
            endpoint = stack.enter_context(start_endpoint(drivers=1_000))
            options.endpoint_url = endpoint.url
            submits = [measure_submit(count, workdir, options) for count in counts]
            args.json_out.write_text(json.dumps({
                "command": sys.argv if argv is None else ["scripts/measure_job.py", *argv],
                "git": git_state(), "load_average_at_start": load_at_start,
                "definitions": {"peak_rss_mb": DEFINITIONS["separate_submitter_rss_mb"],
                                "first_shard_queued_s": DEFINITIONS["first_shard_queued_s"]},
                "submits": submits}, indent=2) + "\n")
            for submitted in submits:
                print(json.dumps(submitted))
            print(f"JSON: {args.json_out}")
            return 0
        log(f"starting the bench endpoint with {drivers:,} drivers (table demo.driver_stats)")
        started = time.perf_counter()
        endpoint = stack.enter_context(start_endpoint(drivers=drivers,
                                                      timeout=ENDPOINT_TIMEOUT_S))
        log(f"endpoint ready at {endpoint.url} after {time.perf_counter() - started:.1f}s")
        options.endpoint_url = endpoint.url
        for count in counts:
            results.append(measure(count, drivers, endpoint, workdir, options))
            log(read_stats_line(results[-1]))
        endpoint_stats = endpoint.stats()
    report = {
        "requirement": "A 2,000,000-entity job: report submit time, Redis memory at peak, and "
                       "peak RSS per worker process (bounded by shard size, not job size); no "
                       "Celery message over 1 MB.",
        "command": sys.argv if argv is None else ["scripts/measure_job.py", *argv],
        "git": git_state(),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "platform": platform.platform(),
                 "load_average_at_start": load_at_start},
        "config": {"shard_size": args.shard_size, "worker_concurrency": args.workers,
                   "endpoint_drivers": drivers, "features": list(FEATURES),
                   "sample_interval_s": args.interval, "mb": "MiB",
                   "output_kind": args.output_kind},
        "endpoint": endpoint_stats,
        "definitions": DEFINITIONS,
        "table": [{name: getattr(r, name) for name in TABLE_COLUMNS} for r in results],
        "runs": [asdict(r) for r in results],
    }
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(results))
    for result in results:
        print(read_stats_line(result))
        print(process_peaks_line(result))
    print(f"JSON: {args.json_out}")
    failed = [r.entities for r in results if not r.details["verification"]["ok"]]
    oversized = [r.entities for r in results if r.max_message_bytes >= MESSAGE_LIMIT_BYTES]
    if failed or oversized:
        log(f"FAILED: output checks failed for {failed}, messages of 1 MB or more for "
            f"{oversized}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
