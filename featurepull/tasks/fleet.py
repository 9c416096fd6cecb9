"""The fleet's pool sizes, and the shard size a job is cut into from them.

Each worker records in Redis how many pool processes serve each queue it consumes; a
submitter adds up those of its queue (``jobs.queue``) and cuts a big job into shards for
``SHARDS_PER_PROCESS`` per process: a small fleet runs fewer, bigger shards (each shard has a
fixed cost: ~30 ms of CPU, Celery's own work, a gap in its pool process), a big one still
gets a shard for every process. Keys:

    featurepull:fleet:{queue}          set   hostnames of the workers that recorded a pool
                                             on ``queue`` (pruned of expired records by the
                                             workers as they record theirs)
    featurepull:fleet:{queue}:{host}   str   that worker's pool processes; TTL RECORD_TTL_S,
                                             set again every RECORD_EVERY_S by the worker's
                                             main process (``PoolRecord``), deleted when it
                                             stops

A worker killed without its shutdown (SIGKILL, its machine gone) is counted until its record
expires: more processes than there are, so smaller shards (never below ``jobs.shard_size``)
for at most RECORD_TTL_S. With no record (no worker started yet, or workers of a version
before this one) a job is cut as it always was, in shards of ``jobs.shard_size``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis

from featurepull.config import DynamoSettings, JobSettings
from featurepull.tasks._lazy_log import LazyLogger
from featurepull.tasks.store import JobStore, UnknownJob, connect

log = LazyLogger(__name__)  # structlog at the first line: a submit imports this module

PREFIX = "featurepull:fleet:"
RECORD_TTL_S = 30
RECORD_EVERY_S = 10.0
# Shards per pool process a job is cut into at least (while they are above
# jobs.shard_size and below jobs.max_shard_size): enough that the processes finish
# together — the last shards are the only ones a process may run alone — and few enough
# that each shard's fixed cost is small against its read (docs/whole-process.md).
SHARDS_PER_PROCESS = 4
# What a shard that ran past jobs.shard_soft_time_limit_s says to change, unless it was
# sized for the fleet (time_limit_advice; a scan task: scans.SCAN_TASK_TOO_LONG).
LOWER_SHARD_SIZE = "lower jobs.shard_size or raise jobs.shard_soft_time_limit_s"


def _members(queue: str) -> str:
    return f"{PREFIX}{queue}"


def _record(queue: str, hostname: str) -> str:
    return f"{PREFIX}{queue}:{hostname}"


def record_pool(client: redis.Redis, hostname: str, queues: Sequence[str],
                processes: int) -> None:
    """Record (again) that ``processes`` pool processes of worker ``hostname`` serve each
    of ``queues``, for RECORD_TTL_S; drop the queues' members whose record expired."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.set(_record(queue, hostname), processes, ex=RECORD_TTL_S)
            pipe.sadd(_members(queue), hostname)
            pipe.expire(_members(queue), RECORD_TTL_S)
        pipe.execute()
    for queue in queues:
        records = _records(client, queue)
        gone = [host for host, count in records.items() if count is None]
        if gone:
            client.srem(_members(queue), *gone)


def forget_pool(client: redis.Redis, hostname: str, queues: Sequence[str]) -> None:
    """Remove worker ``hostname``'s records: it stops serving ``queues``."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.delete(_record(queue, hostname))
            pipe.srem(_members(queue), hostname)
        pipe.execute()


def _records(client: redis.Redis, queue: str) -> dict[str, int | None]:
    hosts = sorted(host.decode() if isinstance(host, bytes) else host
                   for host in client.smembers(_members(queue)))
    if not hosts:
        return {}
    values = client.mget([_record(queue, host) for host in hosts])
    return {host: None if value is None else int(value)
            for host, value in zip(hosts, values, strict=True)}


def fleet_processes(client: redis.Redis, queue: str) -> int:
    """The pool processes the live workers recorded for ``queue`` (0: none recorded)."""
    return sum(count or 0 for count in _records(client, queue).values())


def fleet_shard_size(rows: int, processes: int, smallest: int, largest: int) -> int:
    """Entities per shard of a ``rows``-entity job on ``processes`` pool processes: a
    multiple of ``smallest`` (so the output's row groups fall where shards of ``smallest``
    would put them), as large as leaves SHARDS_PER_PROCESS shards per process, at most
    ``largest``; ``smallest`` when no process is known."""
    if processes <= 0:
        return smallest
    fair = rows // (SHARDS_PER_PROCESS * processes)
    return max(smallest, min(largest, fair) // smallest * smallest)


def job_shard_size(jobs: JobSettings, dynamo: DynamoSettings, rows: int, output: str | None,
                   scorer: str | None, client: redis.Redis) -> tuple[int, dict[str, Any]]:
    """The shard size of a new job, and what the job records of how it was chosen
    (``fleet_processes`` when the fleet was asked); ``dynamo``: the job's own settings.

    Only a job writing an output file, with no scorer and no read budget, is cut for its
    fleet: a dataset's parts, the tables of a job kept in Redis and a scorer's calls are one
    per shard, and a budget (``max_rcu_per_s``, ``table_budgets``) paces every shard, so a
    bigger one could outlast ``jobs.shard_soft_time_limit_s``: they stay ``jobs.shard_size``.
    So does every job while ``jobs.max_shard_size`` is not above ``jobs.shard_size`` (an
    explicit ``jobs.shard_size`` alone: ``JobSettings.largest_shard``)."""
    smallest, largest = jobs.shard_size, jobs.largest_shard
    paced = dynamo.max_rcu_per_s is not None or bool(dynamo.table_budgets)
    if (largest < 2 * smallest or not output or output.endswith("/") or scorer is not None
            or paced or rows < SHARDS_PER_PROCESS * 2 * smallest):
        return smallest, {}  # nothing to choose: every fleet gets shards of shard_size
    try:
        processes = fleet_processes(client, jobs.queue)
    except redis.RedisError as exc:  # the submit stores its shards there next, and says
        log.warning("fleet_unknown", queue=jobs.queue, error=f"{type(exc).__name__}: {exc}")
        return smallest, {}
    return fleet_shard_size(rows, processes, smallest, largest), {"fleet_processes": processes}


def time_limit_advice(store: JobStore, job_id: str) -> str:
    """What to change when a shard of the job ran past ``jobs.shard_soft_time_limit_s``:
    the setting that sized its shards. Shards cut for the fleet above ``jobs.shard_size``
    were sized by the pool processes, at most ``jobs.max_shard_size``: a lower
    ``jobs.shard_size`` alone may leave them as large. A job gone from Redis meanwhile
    gets LOWER_SHARD_SIZE (failing it does nothing either)."""
    try:
        spec = store.meta(job_id).request
    except UnknownJob:
        return LOWER_SHARD_SIZE
    if spec.shard_unit and spec.shard_size > spec.shard_unit:
        return (f"the job's shards of {spec.shard_size:,} entities were sized for its fleet: "
                f"lower jobs.max_shard_size (not below jobs.shard_size, {spec.shard_unit:,}) "
                "or raise jobs.shard_soft_time_limit_s")
    return LOWER_SHARD_SIZE


class PoolRecord(threading.Thread):
    """A worker's record of its pool (``processes()`` processes serving ``queues``), set
    by `record` and again every RECORD_EVERY_S until `stop`, which removes it."""

    def __init__(self, redis_url: str, hostname: str, queues: Sequence[str],
                 processes: Callable[[], int]) -> None:
        super().__init__(name="featurepull-pool-record", daemon=True)
        self.redis_url, self.hostname, self.queues = redis_url, hostname, list(queues)
        self.processes = processes  # asked at each record: an autoscaled pool changes
        self.stopped = threading.Event()
        self._client: redis.Redis | None = None

    def record(self) -> None:
        """Record the pool now (a failure is logged: the next record tries again)."""
        try:
            self._client = self._client or connect(self.redis_url)
            record_pool(self._client, self.hostname, self.queues, self.processes())
        except Exception as exc:
            log.warning("pool_record_failed", error=f"{type(exc).__name__}: {exc}")

    def run(self) -> None:
        while not self.stopped.wait(RECORD_EVERY_S):
            self.record()

    def stop(self) -> None:
        """Stop recording and remove the record (the worker stops serving its queues)."""
        self.stopped.set()
        if self.is_alive():
            self.join()
        try:
            forget_pool(self._client or connect(self.redis_url), self.hostname, self.queues)
        except Exception as exc:  # it expires by itself
            log.warning("pool_record_left", error=f"{type(exc).__name__}: {exc}")
