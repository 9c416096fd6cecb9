"""Real Celery worker processes (prefork) against the session's redis-server, reading a
fast HTTP DynamoDB endpoint (featurepull.bench.endpoint) so 200k-entity jobs take seconds."""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from featurepull.bench.endpoint import EndpointProcess
from featurepull.client import Job
from featurepull.config import Settings, load_settings
from featurepull.local import RedisService, start_worker, wait_for_worker, worker_hostname
from featurepull.tasks.store import JobMeta, JobStore, connect
from tests.conftest import FAST_DRIVERS, FAST_TABLE, unique_name, wait_until
from tests.feast_writer import create_feast_table, write_feast_rows

DRIVERS = FAST_DRIVERS
TABLE = FAST_TABLE
JOB_FEATURES = ["conv_rate", "city"]  # what the new_job fixture's jobs read
NewJob = Callable[..., JobMeta]  # the new_job fixture
# Redis dbs 1-14 of each server (by port) held by fleets not stopped yet, and the last one
# handed out: a new fleet takes the next db no living fleet holds, so a module's fleet and
# a test's fleet alive at once never share one (stop() empties its db), and a db just
# emptied is the last to be handed out again.
_LIVE_DBS: set[tuple[int, int]] = set()
_LAST_DB: dict[int, int] = {}


def _take_db(port: int) -> int:
    last = _LAST_DB.get(port, 0)
    for db in ((last + step) % 14 + 1 for step in range(14)):
        if (port, db) not in _LIVE_DBS:
            _LIVE_DBS.add((port, db))
            _LAST_DB[port] = db
            return db
    raise RuntimeError(f"all 14 Redis dbs of port {port} are held by fleets not stopped")


def local_job_settings(redis_url: str, endpoint_url: str, shard_size: int) -> Settings:
    """Settings of a job whose steps run in the test's own process (no Celery): project
    ``demo``, the endpoint at ``endpoint_url`` in us-east-1, shards of ``shard_size``."""
    return load_settings(overrides={
        "redis_url": redis_url, "project": "demo",
        "dynamodb": {"endpoint_url": endpoint_url, "region": "us-east-1"},
        "jobs": {"shard_size": shard_size}})


@pytest.fixture
def settings(redis_server: RedisService, fast_dynamo: EndpointProcess) -> Settings:
    """A job run in this process: the session's redis-server and endpoint, shards of 100 (a
    module may define its own)."""
    return local_job_settings(redis_server.url, fast_dynamo.url, shard_size=100)


@pytest.fixture
def store(settings: Settings) -> JobStore:
    return JobStore(connect(settings.redis_url), settings.jobs.ttl_s)


@pytest.fixture
def new_job(settings: Settings, store: JobStore, tmp_path: Path) -> NewJob:
    """Creates (not runs) a job reading ``JOB_FEATURES`` of driver_stats for the driver ids
    it is given, written to a Parquet file in tmp_path; keywords are further JobRequest
    fields (``output``, ``allow_missing_features``, ``features``, ...); ``using`` other
    settings than the test's."""
    from featurepull.tasks.create import create_job
    from featurepull.tasks.requests import JobRequest

    def create(ids: Sequence[int], using: Settings | None = None, **request: Any) -> JobMeta:
        entities = tmp_path / "ids.parquet"
        pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), entities)
        fields = {"table": "driver_stats", "features": JOB_FEATURES, "entities": str(entities),
                  **request}
        return create_job(JobRequest(**fields), using or settings, store)
    return create


@pytest.fixture(scope="session")
def fast_dynamo(fast_dynamo: EndpointProcess) -> EndpointProcess:
    """The session's 200,000-driver endpoint (tests/conftest.py). A module that imports this
    name (``from tests.tasks.conftest import fast_dynamo``) gets this thin fixture, which
    asks for the one above it: every module shares one endpoint (it takes seconds to start)."""
    return fast_dynamo


class Fleet:
    """Worker instances of one test, on a queue and Redis db no other test uses."""

    def __init__(self, redis_server: RedisService, endpoint_url: str, **jobs: Any) -> None:
        self.queue = f"q-{uuid.uuid4().hex[:8]}"
        self._port = redis_server.port
        self._own_db = self.db = _take_db(redis_server.port)
        self.redis_url = f"redis://127.0.0.1:{redis_server.port}/{self.db}"
        self.env = {
            **os.environ,
            "FEATUREPULL_REDIS_URL": self.redis_url,
            "FEATUREPULL_PROJECT": "demo",
            "FEATUREPULL_DYNAMODB__ENDPOINT_URL": endpoint_url,
            "FEATUREPULL_DYNAMODB__REGION": "us-east-1",
            "FEATUREPULL_DYNAMODB__RETRY_BASE_DELAY_S": "0.01",
            "FEATUREPULL_DYNAMODB__RETRY_MAX_DELAY_S": "0.2",
            "FEATUREPULL_JOBS__QUEUE": self.queue,
            # The fleet tests were written for jobs whose shards read by key; auto would scan
            # the larger ones. Scan jobs choose their read mode (tests/tasks/test_scan_jobs.py).
            "FEATUREPULL_DYNAMODB__READ_MODE": "batch-get",
        }
        for name, value in jobs.items():
            self.env[f"FEATUREPULL_JOBS__{name.upper()}"] = str(value)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self._dir = Path(tempfile.mkdtemp(prefix="featurepull-workers-"))
        # Logs are read after the workers stop; remove them when the test session ends.
        atexit.register(shutil.rmtree, self._dir, True)

    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update({k: v for k, v in self.env.items() if k.startswith("FEATUREPULL_")})
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def start_worker(self, concurrency: int = 2, name: str | None = None,
                     loglevel: str | None = "INFO",
                     cli: bool = False) -> subprocess.Popen[bytes]:
        """A ready worker instance (featurepull.local.start_worker): ``celery -A
        featurepull.worker worker``, or with ``cli`` our own ``featurepull worker`` (which
        picks the queue from the settings itself); ``loglevel=None`` starts it without
        --loglevel."""
        name = name or f"w{len(self.workers)}-{uuid.uuid4().hex[:4]}"
        log = self._dir / f"{name}.log"
        self.logs.append(log)
        worker = start_worker(self.env, log, name=name, queue=None if cli else self.queue,
                              concurrency=concurrency, loglevel=loglevel, cli=cli)
        self.workers.append(worker.process)
        return worker.process

    def wait_ready(self, proc: subprocess.Popen[bytes], log: Path, name: str) -> None:
        """Wait for a worker a test started itself with ``--hostname name@%h``."""
        wait_for_worker(proc, self.redis_url, worker_hostname(name), log)

    def children(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """The prefork pool processes of a worker instance."""
        try:
            return [child.pid for child in psutil.Process(proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def log_text(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs)

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                os.killpg(proc.pid, signal.SIGCONT)  # one a test froze and left frozen
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        try:
            self.redis().flushdb()
        finally:
            _LIVE_DBS.discard((self._port, self._own_db))


@contextmanager
def fleet(redis_server: RedisService, endpoint_url: str, **jobs: Any) -> Iterator[Fleet]:
    running = Fleet(redis_server, endpoint_url, **jobs)
    try:
        yield running
    finally:
        running.stop()


def queued_messages(redis: Any, queue: str) -> list[tuple[str, list[Any], str, bytes]]:
    """The Celery messages waiting on ``queue`` (kombu's list in Redis), left there: (task
    name, arguments, argsrepr, the message as stored), in the list's order."""
    found = []
    for raw in redis.lrange(queue, 0, -1):
        message = json.loads(raw)
        found.append((message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0],
                      message["headers"]["argsrepr"], raw))
    return found


def taken_messages(store: JobStore, queue: str) -> list[tuple[str, list[Any], str]]:
    """The Celery messages waiting on ``queue``, taken off it: (task name, arguments,
    argsrepr), sorted. For tests that send with no worker."""
    messages = queued_messages(store.redis, queue)
    store.redis.delete(queue)
    return sorted((task, args, argsrepr) for task, args, argsrepr, _ in messages)


def wait_for_progress(job: Job, fraction: float, timeout: float = 120) -> None:
    def progressed() -> bool:
        status = job.status()
        return status.rows_done >= fraction * status.rows or status.state == "succeeded"

    wait_until(progressed, f"progress to {fraction:.0%} of the job", timeout)


def freeze_mid_shard(job: Job, prefix: str = "", group: int | None = None,
                     among: Collection[int] | None = None, first: int = 0,
                     timeout: float = 120) -> int:
    """SIGSTOP a pool child (or, with ``group``, that whole worker instance's process group)
    in the middle of a shard numbered ``first`` or more — of a worker whose owner name
    starts with ``prefix``, and a child in ``among`` if given — and return the child's pid.
    Frozen first, then checked: a child that finished its shard between the look and the
    stop is let go and another is picked, so a kill that follows always lands mid-shard."""
    def running(owner: str) -> bool:
        return any(who == owner and shard >= first and not job.store.is_done(job.id, shard)
                   for shard, who in job.store.owners(job.id).items())

    def signal_(pid: int, sig: signal.Signals) -> None:
        if group is None:
            os.kill(pid, sig)
        else:
            os.killpg(group, sig)

    def frozen() -> int | None:
        for owner in set(job.store.owners(job.id).values()):
            victim = int(owner.rsplit(":", 1)[1])
            if not owner.startswith(prefix) or (among is not None and victim not in among):
                continue
            if running(owner):
                signal_(victim, signal.SIGSTOP)
                if running(owner):
                    return victim
                signal_(victim, signal.SIGCONT)
        return None

    victim: int = wait_until(frozen, f"pool child of {prefix!r} caught in the middle of a "
                             "shard", timeout, every_s=0.02)
    return victim


def mixed_scores_table(ddb: Any) -> str:
    """A new Feast table in moto (project demo) whose ``score`` is a double for driver 250
    and a string for driver 350 (no other driver): its name, without the project."""
    name = unique_name("mixed")
    create_feast_table(ddb, f"demo.{name}")
    stamp = datetime(2026, 3, 1, tzinfo=UTC)
    write_feast_rows(ddb, f"demo.{name}", [
        ({"driver_id": ("int64", 250)}, stamp, {"score": ("double_val", 1.5)}),
        ({"driver_id": ("int64", 350)}, stamp, {"score": ("string_val", "high")})])
    return name
