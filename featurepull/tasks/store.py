"""JobStore: every Redis key of a job, and the only code that knows their names.

A job lives under ``featurepull:job:{id}:``; every key carries the job's TTL.

    meta        hash  request (JSON), state, shards, rows, times, error, summary (JSON),
                      finisher ("host:pid" of the process that last began writing the output),
                      published_as (the job's local output file's identity, recorded once it
                      is in place: a finisher's retry knows the file as the job's own),
                      submitting ("host:pid" of the process storing and sending its shards;
                      removed once every shard is sent)
    keys:{n}    str   shard n's entity key columns, Arrow IPC (deleted once the shard is done)
                      — only for a job without an output (at most
                      jobs.max_entities_without_output entities); with one, the submitter
                      stages them beside the output (``featurepull.tasks.shard_keys``), so
                      Redis holds a fixed amount per shard whatever the job's size
    rows:{n}    str   shard n's output rows, Arrow IPC (written idempotently: SET) — only for
                      a job without an output; with one, each shard writes a Parquet part
                      beside the output instead (``featurepull.io.parts``): Redis holds no rows
    schema:{n}  str   shard n's Arrow schema (the finisher unifies them without the rows)
    done        set   shard numbers whose rows are stored (SADD is idempotent)
    stats       hash  n -> the shard's ReadStats (JSON)
    progress    hash  n -> entity rows of shard n read so far (repeated keys each count)
    attempts    hash  n -> how many times shard n started (> 1: redelivered)
    owners      hash  n -> "hostname:pid" of the worker process that last started shard n
    finish      str   the finisher's lock (SET NX with a TTL)
    ended       str   the job's end announced (notification sent, counted): "sent"; while
                      one task announces it, that task's id (with a short TTL)
    alive       str   exists while the job shows signs of life: set with a TTL of the idle
                      limit (jobs.visibility_timeout_s) at submit, at each shard start,
                      progress report and end, and while the finisher writes
    submitter   str   exists while the submitting process lives: set with a TTL of
                      jobs.submitter_timeout_s, again by it every third of that
                      (``featurepull.tasks.submitter``), deleted with meta's submitting
    wake        stream one entry, the final state, added (with the job's TTL) in the
                      transaction that ends the job (succeeded, failed, cancelled): what
                      Job.wait blocks on (:meth:`JobStore.wait_end`) instead of sleeping

A scan job (``read_plan`` in the request field: ``featurepull.tasks.scans``) also has:

    scan:{p}:{n}  str   the items scan task p matched of entity shard n's keys, Arrow IPC
                        (a position in the shard and its row); stored with scan task p's
                        ``scanned`` member in one transaction, deleted once shard n is done
    scanned       set   scan task numbers whose partitions are stored (SADD is idempotent)
    scan_stats    hash  p -> scan task p's ReadStats (JSON): pages, items scanned, RCU
    scan_progress hash  p -> items scan task p scanned so far (its total once it is done)
    scan_owners   hash  p -> "hostname:pid" of the worker process that last started task p

``featurepull:jobs:active`` (sorted set, job id -> created) lists the jobs the watchdog
(``featurepull.tasks.watchdog``) looks after; it drops those that ended or expired.

A schedule (``featurepull beat``) keeps, under ``featurepull:schedule:{name}:``:

    last_job    str   the id of the job its latest run started
    runs        list  ids of the jobs its runs started, newest first (the last 100)
    lock        str   held while a run checks the last job and starts the next (SET NX, TTL)

The fleet's read budgets (a bucket per table and one per budget, ``featurepull:capacity:*``)
are mapped in ``featurepull.tasks.capacity``.

Completion is a Redis set, not a Celery chord: a shard that runs twice (redelivered after a
worker died) adds the same member again, so "all shards done" is exact under redelivery.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import Any, Literal, cast

import pyarrow as pa
import redis
from pydantic import BaseModel, ConfigDict

from featurepull.errors import InputError, RunFailed
from featurepull.redact import redact_url

PREFIX = "featurepull:job:"
ACTIVE_JOBS = "featurepull:jobs:active"
# Read with MGET this many at a time: one round trip per thousand shards, not one per shard.
MGET_BATCH = 1000
SCHEDULE_PREFIX = "featurepull:schedule:"
SCHEDULE_RUNS_KEPT = 100


class JobState(StrEnum):
    """Where a job is. The values are what the meta hash stores and JSON shows."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHING = "finishing"  # a finisher is writing the ordered output
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the job has ended: it never changes state again."""
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


def _state(value: bytes | None) -> JobState | None:
    """A job's state as its meta hash holds it (None: the job is gone)."""
    return JobState(value.decode()) if value is not None else None

# How long a Redis outage (a restart, a failover) is waited out, by a shard before its retry
# and by Job.wait before it gives up: the same for both, so a producer does not report a
# job lost while the workers are still waiting to go on with it. Two minutes covers a
# restart with persistence and a Sentinel failover; the result backend's retries
# (worker.producer.RESULT_BACKEND_RETRIES) last about as long.
REDIS_OUTAGE_WAIT_S = 120.0
# SET NX, except that the lock's own holder may take it again: a finish_job message comes
# back with the same task id when the process running it died (acks_late), and must not
# wait for the dead process's lock to expire.
_LOCK_FINISH = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# A reading shard's report: its progress and the job's sign of life, only while the job is
# there and has not failed or been cancelled (a shard that stops writes nothing back into
# a job that ended or was cleaned up); the state, as read, either way.
_REPORT_PROGRESS = """
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'failed' and state ~= 'cancelled' then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
    redis.call('EXPIRE', KEYS[2], ARGV[3])
    redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
end
return state
"""
# A shard's start: its attempt counted, its worker noted, the job's sign of life; and, given
# a start time (a job's first shards), the job marked running if it is still queued (as
# mark_running, whose WATCH and transaction took three round trips).
_COUNT_ATTEMPT = """
local attempts = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], 'shard started', 'EX', ARGV[4])
if ARGV[5] ~= '' and redis.call('HGET', KEYS[4], 'state') == 'queued' then
    redis.call('HSET', KEYS[4], 'state', 'running', 'started', ARGV[5])
end
return attempts
"""
# Release only a lock this owner still holds, in one step: a GET then a DEL could delete
# the lock of another owner that took it over between the two (after the TTL expired).
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# The end of a job is announced once: a task takes the claim (its own id, so the same task
# redelivered after its process died takes it again at once), sends, then marks it "sent".
_CLAIM_END = """
local held = redis.call('GET', KEYS[1])
if held == 'sent' or (held and held ~= ARGV[1]) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
ENDED = b"sent"

# The watchdog's check of one job, atomic so that one of many watchdogs acts: an ended or
# expired job leaves the active set ({-1}); a job still being submitted whose submitter's
# key (KEYS[5]) expired lost its submitter ({-3, "host:pid"}); a job with signs of life is
# left alone ({-2}): its alive key, or a message of its own still waiting in the broker's
# queue lists (KEYS[6..5+ARGV[3]]) or held unacked by a worker (the hash after them) — a
# job queued behind another job is waiting, not stalled, and counts as alive again. Else
# the alive key is taken for the idle limit and the shards not done are returned
# ({0, n, ...}; none: every shard is done and the job needs its finisher).
_STALLED = """
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'succeeded' or state == 'failed' or state == 'cancelled' then
    redis.call('ZREM', KEYS[4], ARGV[2])
    return {-1}
end
local submitter = redis.call('HGET', KEYS[1], 'submitting')
if submitter and redis.call('EXISTS', KEYS[5]) == 0 then
    return {-3, submitter}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    return {-2}
end
local lists = tonumber(ARGV[3])
local function holds(messages)
    for _, message in ipairs(messages) do
        if string.find(message, ARGV[2], 1, true) then
            return true
        end
    end
    return false
end
local waiting = KEYS[6 + lists] ~= nil and holds(redis.call('HVALS', KEYS[6 + lists]))
for i = 6, 5 + lists do
    local length = redis.call('LLEN', KEYS[i])
    for start = 0, length - 1, 500 do
        if waiting then break end
        waiting = holds(redis.call('LRANGE', KEYS[i], start, start + 499))
    end
end
if waiting then
    redis.call('SET', KEYS[2], 'queued', 'EX', ARGV[1])
    return {-2}
end
redis.call('SET', KEYS[2], 'watchdog', 'EX', ARGV[1])
local shards = tonumber(redis.call('HGET', KEYS[1], 'shards'))
local missing = {0}
for n = 0, shards - 1 do
    if redis.call('SISMEMBER', KEYS[3], n) == 0 then
        missing[#missing + 1] = n
    end
end
return missing
"""


class JobStoreError(RunFailed, RuntimeError):
    """Redis cannot be reached or answered unexpectedly; the message names the URL."""


class RedisUnavailable(JobStoreError):
    """Redis does not answer (down, unreachable, or gone mid-wait): the run failed, not the
    input — the CLI exits 1 for it."""


class RedisRefused(InputError, JobStoreError):
    """Redis refused the credentials in the URL: a configuration error (exit 2)."""


class SubmitterGone(RunFailed):
    """A job's submitting process stopped showing signs of life before it had stored and
    sent every shard (killed, or its machine died): the job can never complete."""

    def __init__(self, job_id: str, submitter: str) -> None:
        super().__init__(
            f"the process that submitted the job ({submitter}) stopped before it had stored "
            "and sent every shard (it was killed, or its machine died); submit the job again")
        self.job_id = job_id


class UnknownJob(InputError, KeyError):
    """No job with this id (never submitted, or expired after its TTL)."""

    def __str__(self) -> str:
        return (f"no job {self.args[0]!r} in Redis: check the id, and that it has not "
                "expired (jobs.ttl_s) or been cleaned up")


def connect(url: str, timeout_s: float = 5.0) -> redis.Redis:
    """A Redis client that fails within ``timeout_s`` when the server is unreachable."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s,
                                  socket_timeout=max(timeout_s, 30.0), health_check_interval=30)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisRefused(
            f"Redis at {redact_url(url)} refused the credentials ({exc}); check the password "
            "in FEATUREPULL_REDIS_URL or redis_url in the config file "
            "(redis://:PASSWORD@host:port/db)"
        ) from None
    except redis.RedisError as exc:
        unreachable = isinstance(exc, redis.ConnectionError | redis.TimeoutError)
        raise (RedisUnavailable if unreachable else RedisRefused)(
            f"cannot reach Redis at {redact_url(url)} ({exc}); is redis-server running there? "
            "Set FEATUREPULL_REDIS_URL or redis_url in the config file"
        ) from None
    return client


def table_to_bytes(table: pa.Table) -> bytes:
    """Arrow IPC stream bytes, lz4-compressed: compact and typed, no pickling."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def table_from_bytes(data: bytes) -> pa.Table:
    """The table written by :func:`table_to_bytes`."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


ErrorKind = Literal["input", "failed"]


class JobSpec(BaseModel):
    """What ``create_job`` stores to run a job (the meta hash's ``request`` field).

    ``request`` is the :class:`~featurepull.tasks.requests.JobRequest` as JSON, parsed by
    the step that needs it, so that a record that no longer parses can still be shown and
    ended. The layout's fields (``layout``, ``key_schema``, ``key_types``, ``views``, ...)
    differ by layout: they are kept as extra fields, and ``featurepull.dynamo.plan`` reads
    them back from :meth:`~pydantic.BaseModel.model_dump`.
    """

    model_config = ConfigDict(extra="allow")

    request: dict[str, Any] = {}
    table: str = ""
    shard_size: int = 0  # 0: a job stored before it was recorded
    # A job cut for its fleet (featurepull.tasks.fleet): jobs.shard_size when it was
    # stored; shard_size is a multiple of it, and the finisher writes the output in slices
    # of it. 0: any other job (its output written a part at a time).
    shard_unit: int = 0
    key_columns: list[str] = []
    # How the job reads (featurepull.tasks.scans): None for a job stored before it was
    # recorded, which reads with BatchGetItem.
    read_plan: dict[str, Any] | None = None


class JobMeta(BaseModel):
    """A job's record, as stored in its meta hash (the one place that reads it back).

    ``request`` is the job's :class:`JobSpec`; :attr:`table`, :attr:`tables`, :attr:`output`,
    :attr:`notify` and :attr:`shard_size` read it for the callers that need one field.
    """

    job_id: str
    request: JobSpec
    state: JobState
    shards: int
    rows: int
    created: float
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    error_kind: ErrorKind | None = None  # "input": the job failed on its input (exit 2)
    published_as: str | None = None  # see the module docstring

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def table(self) -> str:
        """The DynamoDB table the job reads ("" for a spec without one)."""
        return self.request.table

    @property
    def tables(self) -> list[str]:
        """The DynamoDB tables the job reads (one per Feast view of a multi-view job), read
        from the two fields that name them rather than a dump of the whole request (status
        asks at every poll)."""
        from featurepull.tasks.feast_views import VIEWS, spec_tables

        views = (self.request.model_extra or {}).get(VIEWS)
        return spec_tables({"table": self.request.table, VIEWS: views})

    @property
    def shard_size(self) -> int | None:
        """Entities per shard; None for a job stored before it was recorded."""
        size = self.request.shard_size
        return size if size > 0 else None

    @property
    def output(self) -> str | None:
        """Where the finisher writes the rows; None: they stay in Redis."""
        output = self.request.request.get("output")
        return str(output) if output else None

    @property
    def notify(self) -> dict[str, str] | None:
        """The task (and queue) told when the job ends, if the request named one."""
        notify = self.request.request.get("notify")
        return dict(notify) if notify else None


# The key whose entry announces a job's end to its waiters (the module docstring's ``wake``).
WAKE = "wake"
# The states a job can still leave.
_LIVE = (JobState.QUEUED, JobState.RUNNING, JobState.FINISHING)


class JobStore:
    """Reads and writes the Redis keys of jobs."""

    def __init__(self, client: redis.Redis, ttl_s: int, idle_s: float = 3_600.0) -> None:
        # redis-py's annotations cannot tell bytes replies (our clients) from decoded ones.
        self.redis: Any = client
        self.ttl_s = ttl_s
        # A job with no sign of life for this long is stalled (jobs.visibility_timeout_s).
        self.idle_s = max(1, math.ceil(idle_s))

    @staticmethod
    def new_job_id() -> str:
        return uuid.uuid4().hex

    def _key(self, job_id: str, name: str) -> str:
        return f"{PREFIX}{job_id}:{name}"

    def create(self, job_id: str, request: dict[str, Any], shard_tables: Iterator[pa.Table]
               ) -> tuple[int, int]:
        """Store a new job's request and its shards' keys; returns (shards, rows)."""
        shards = rows = 0
        pipe = self.redis.pipeline(transaction=False)
        for shard, table in enumerate(shard_tables):
            pipe.set(self._key(job_id, f"keys:{shard}"), table_to_bytes(table), ex=self.ttl_s)
            shards, rows = shard + 1, rows + table.num_rows
            if shard % 16 == 15:
                pipe.execute()
        self._add_meta(pipe, job_id, request, shards, rows)
        pipe.execute()
        return shards, rows

    def open_job(self, job_id: str, request: dict[str, Any], shards: int, rows: int,
                 submitter: str | None = None, submitter_ttl_s: float = 0.0) -> None:
        """Store a new job's record before its shards' keys (``create_job`` then stores
        and enqueues them one by one, so the first shard runs while the rest are read),
        and its ``submitter``'s sign of life (see `submitter_alive`)."""
        pipe = self.redis.pipeline(transaction=True)
        self._add_meta(pipe, job_id, request, shards, rows)
        if submitter is not None:
            pipe.hset(self._key(job_id, "meta"), "submitting", submitter)
            self.submitter_alive(job_id, submitter, submitter_ttl_s, pipe)
        pipe.execute()

    def submitter_alive(self, job_id: str, submitter: str, ttl_s: float,
                        pipe: Any = None) -> None:
        """The submitting process's sign of life, for ``ttl_s``: the watchdog fails a job
        still ``submitting`` without one (its submitter was killed mid-submit). With
        ``pipe``, added to that pipeline instead of sent."""
        target = self.redis if pipe is None else pipe  # an empty pipeline is falsy
        target.set(self._key(job_id, "submitter"), submitter, ex=max(1, math.ceil(ttl_s)))

    def submitted(self, job_id: str) -> None:
        """Every shard of the job is stored and sent: its submitter is no longer needed."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self._key(job_id, "meta"), "submitting")
        pipe.delete(self._key(job_id, "submitter"))
        pipe.execute()

    def update_spec(self, job_id: str, request: dict[str, Any]) -> None:
        """Rewrite a job's stored request: its read plan, made once every shard is stored
        and before any message is sent (``create_job``)."""
        self.redis.hset(self._key(job_id, "meta"), "request", json.dumps(request))

    def _add_meta(self, pipe: Any, job_id: str, request: dict[str, Any], shards: int,
                  rows: int) -> None:
        meta = {"request": json.dumps(request), "state": JobState.QUEUED.value, "shards": shards,
                "rows": rows, "created": time.time()}
        pipe.hset(self._key(job_id, "meta"), mapping=meta)
        pipe.expire(self._key(job_id, "meta"), self.ttl_s)
        pipe.set(self._key(job_id, "alive"), "submitted", ex=self.idle_s)
        pipe.zadd(ACTIVE_JOBS, {job_id: meta["created"]})

    def put_shard_keys(self, job_id: str, shard: int, table: pa.Table) -> None:
        """Store one shard's entity keys (a job without an output; see the docstring) and
        count it as a sign of life of the job being submitted."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._key(job_id, f"keys:{shard}"), table_to_bytes(table), ex=self.ttl_s)
        pipe.set(self._key(job_id, "alive"), "submitting", ex=self.idle_s)
        pipe.execute()

    def meta(self, job_id: str) -> JobMeta:
        return self._meta_from(job_id, self.redis.hgetall(self._key(job_id, "meta")))

    def meta_and_done(self, job_id: str, shard: int) -> tuple[JobMeta, bool]:
        """:meth:`meta` and :meth:`is_done` in one round trip (a shard's start)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self._key(job_id, "meta"))
        pipe.sismember(self._key(job_id, "done"), shard)
        reply, done = pipe.execute()
        return self._meta_from(job_id, reply), bool(done)

    @staticmethod
    def _meta_from(job_id: str, reply: dict[bytes, bytes]) -> JobMeta:
        raw = {k.decode(): v.decode() for k, v in reply.items()}
        if not raw:
            raise UnknownJob(job_id)

        def number(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return JobMeta(
            job_id=job_id, request=json.loads(raw["request"]), state=JobState(raw["state"]),
            shards=int(raw["shards"]), rows=int(raw["rows"]), created=float(raw["created"]),
            started=number("started"), finished=number("finished"), error=raw.get("error"),
            summary=json.loads(raw["summary"]) if raw.get("summary") else None,
            error_kind=cast(ErrorKind | None, raw.get("error_kind") or None),
            published_as=raw.get("published_as"),
        )

    def state(self, job_id: str) -> JobState | None:
        return _state(self.redis.hget(self._key(job_id, "meta"), "state"))

    def _set_state(self, job_id: str, state: JobState, only_from: tuple[JobState, ...],
                   **fields: Any) -> bool:
        """Move to ``state`` if the job is in one of ``only_from`` (atomically)."""
        key = self._key(job_id, "meta")
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = pipe.hget(key, "state")
                    if current is None or current.decode() not in only_from:
                        pipe.reset()
                        return False
                    pipe.multi()
                    pipe.hset(key, mapping={"state": state.value, **fields})
                    if state.terminal:  # the job's end wakes its waiters, atomically with it
                        wake = self._key(job_id, WAKE)
                        pipe.xadd(wake, {"state": state.value})
                        pipe.expire(wake, self.ttl_s)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def wait_end(self, job_id: str, timeout_s: float) -> bool:
        """Block until the job has ended, ``timeout_s`` at most: True once it has (at once
        if it ended before), False once ``timeout_s`` passed (or the job is gone, or ended
        in a worker that announced no end: its state tells). Never longer than half the
        client's socket timeout, which a longer block would trip. Redis ends a block that
        times out at its next tick (``hz`` 10: up to ~0.1 s later); an end, at once."""
        socket_s = self.redis.connection_pool.connection_kwargs.get("socket_timeout")
        if socket_s:
            timeout_s = min(timeout_s, socket_s / 2)
        # XREAD from id 0 reads the entry without consuming it: every waiter sees it, also
        # one that starts after the end. A BLPOP token would wake one waiter; pub/sub only
        # those subscribed when it is published, on a second connection, and its channels
        # are outside docs/security.md's ACL (a PUBLISH refused would fail the transaction
        # that ends the job). BLOCK 0 is forever: 1 ms at least.
        return bool(self.redis.xread({self._key(job_id, WAKE): "0"},
                                     block=max(1, round(timeout_s * 1000))))

    def mark_running(self, job_id: str) -> None:
        self._set_state(job_id, JobState.RUNNING, (JobState.QUEUED,), started=time.time())

    def fail(self, job_id: str, error: str, kind: ErrorKind = "failed") -> bool:
        """Fail the job (first error wins); False if it had already ended. ``kind`` is
        "input" when the job's input is at fault (the submitter exits 2), else "failed"."""
        return self._set_state(job_id, JobState.FAILED, _LIVE, error=error, error_kind=kind,
                               finished=time.time())

    def cancel(self, job_id: str) -> bool:
        return self._set_state(job_id, JobState.CANCELLED, (JobState.QUEUED, JobState.RUNNING),
                               error="cancelled by request", finished=time.time())

    def begin_finish(self, job_id: str) -> bool:
        return self._set_state(job_id, JobState.FINISHING, _LIVE)

    def succeed(self, job_id: str, summary: dict[str, Any]) -> None:
        self._set_state(job_id, JobState.SUCCEEDED, (JobState.FINISHING,),
                        summary=json.dumps(summary), finished=time.time())

    def shard_keys(self, job_id: str, shard: int) -> pa.Table:
        data = self.redis.get(self._key(job_id, f"keys:{shard}"))
        if data is None:
            raise UnknownJob(job_id)
        return table_from_bytes(data)

    def put_shard_rows(self, job_id: str, shard: int, table: pa.Table,
                       stats: dict[str, Any], keep_rows: bool = True) -> int:
        """Store a shard's stats and schema (and its rows, with ``keep_rows``: a job without
        an output) and mark it done; returns shards done so far. Its keys are dropped."""
        return self.shard_stored(job_id, shard, table, stats, keep_rows)[0]

    def shard_stored(self, job_id: str, shard: int, table: pa.Table, stats: dict[str, Any],
                     keep_rows: bool = True, progress: int | None = None
                     ) -> tuple[int, JobState | None]:
        """:meth:`put_shard_rows`, with the shard's ``progress`` (entity rows) set and the
        job's state read in the same transaction: shards done so far, and the state."""
        done_key = self._key(job_id, "done")
        stats_key = self._key(job_id, "stats")
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(done_key, shard)
        pipe.scard(done_key)
        if keep_rows:
            pipe.set(self._key(job_id, f"rows:{shard}"), table_to_bytes(table), ex=self.ttl_s)
        pipe.set(self._key(job_id, f"schema:{shard}"), table.schema.serialize().to_pybytes(),
                 ex=self.ttl_s)
        pipe.hset(stats_key, str(shard), json.dumps(stats))
        for key in (done_key, stats_key):
            pipe.expire(key, self.ttl_s)
        # A redelivered copy of this shard finds it done before it looks for its keys.
        pipe.delete(self._key(job_id, f"keys:{shard}"))
        pipe.set(self._key(job_id, "alive"), "shard done", ex=self.idle_s)
        if progress is not None:
            progress_key = self._key(job_id, "progress")
            pipe.hset(progress_key, str(shard), progress)
            pipe.expire(progress_key, self.ttl_s)
        pipe.hget(self._key(job_id, "meta"), "state")
        results = pipe.execute()
        return int(results[1]), _state(results[-1])

    def put_scan_part(self, job_id: str, part: int, partitions: dict[int, pa.Table],
                      stats: dict[str, Any]) -> int:
        """Store what scan task ``part`` matched, by entity shard, and its stats, and mark it
        done, in one transaction (a task killed midway stored nothing); returns scan tasks
        done so far. Written with SET: a task that runs twice writes the same again."""
        done_key, stats_key = self._key(job_id, "scanned"), self._key(job_id, "scan_stats")
        pipe = self.redis.pipeline(transaction=True)
        for shard, table in partitions.items():
            pipe.set(self._key(job_id, f"scan:{part}:{shard}"), table_to_bytes(table),
                     ex=self.ttl_s)
        progress_key = self._key(job_id, "scan_progress")
        pipe.hset(stats_key, str(part), json.dumps(stats))
        pipe.sadd(done_key, part)
        pipe.scard(done_key)
        pipe.hset(progress_key, str(part), int(stats.get("items_scanned", 0)))
        for key in (done_key, stats_key, progress_key):
            pipe.expire(key, self.ttl_s)
        pipe.set(self._key(job_id, "alive"), "scan task done", ex=self.idle_s)
        return int(pipe.execute()[len(partitions) + 2])  # SCARD's answer

    def note_scan_owner(self, job_id: str, part: int, worker: str) -> None:
        """Note which worker process runs scan task ``part`` now (a sign of life, too)."""
        self._set_field(job_id, "scan_owners", str(part), worker, alive="scan task started")

    def set_scan_progress(self, job_id: str, part: int, items_scanned: int) -> None:
        """Items scan task ``part`` has scanned so far (a sign of life, too): a scan job's
        progress before its shards can start."""
        self._set_field(job_id, "scan_progress", str(part), items_scanned,
                        alive="scan progress")

    def scan_progress(self, job_id: str) -> int:
        """Items the job's scan tasks have scanned so far (a task run again counts once)."""
        return sum(int(v) for v in self.redis.hvals(self._key(job_id, "scan_progress")))

    def scan_owners(self, job_id: str) -> dict[int, str]:
        """Scan task number -> the worker that last started it."""
        raw = self.redis.hgetall(self._key(job_id, "scan_owners"))
        return {int(k): v.decode() for k, v in raw.items()}

    def scan_done_count(self, job_id: str) -> int:
        return int(self.redis.scard(self._key(job_id, "scanned")))

    def is_scan_done(self, job_id: str, part: int) -> bool:
        return bool(self.redis.sismember(self._key(job_id, "scanned"), part))

    def scan_parts_done(self, job_id: str) -> set[int]:
        return {int(v) for v in self.redis.smembers(self._key(job_id, "scanned"))}

    def scan_partitions(self, job_id: str, shard: int, parts: int) -> list[pa.Table]:
        """What every scan task matched of entity shard ``shard`` (MGET, a thousand at a
        time; a task that matched none of its keys stored nothing)."""
        tables: list[pa.Table] = []
        for start in range(0, parts, MGET_BATCH):
            names = [self._key(job_id, f"scan:{p}:{shard}")
                     for p in range(start, min(start + MGET_BATCH, parts))]
            tables.extend(table_from_bytes(data) for data in self.redis.mget(names)
                          if data is not None)
        return tables

    def drop_scan_partitions(self, job_id: str, shard: int, parts: int) -> None:
        """Free what the scan tasks stored for an entity shard that is done."""
        names = [self._key(job_id, f"scan:{p}:{shard}") for p in range(parts)]
        for start in range(0, len(names), 1000):
            self.redis.delete(*names[start:start + 1000])

    def all_scan_stats(self, job_id: str) -> dict[int, dict[str, Any]]:
        raw = self.redis.hgetall(self._key(job_id, "scan_stats"))
        return {int(k): json.loads(v) for k, v in raw.items()}

    def shard_rows(self, job_id: str, shard: int) -> pa.Table:
        data = self.redis.get(self._key(job_id, f"rows:{shard}"))
        if data is None:
            raise JobStoreError(f"rows of shard {shard} of job {job_id} are gone from Redis "
                                "(expired or cleaned up)")
        return table_from_bytes(data)

    def shard_schemas(self, job_id: str, shards: int) -> list[pa.Schema]:
        """Every shard's schema, in shard order (MGET, a thousand at a time)."""
        schemas: list[pa.Schema] = []
        for start in range(0, shards, MGET_BATCH):
            numbers = range(start, min(start + MGET_BATCH, shards))
            values = self.redis.mget([self._key(job_id, f"schema:{n}") for n in numbers])
            for n, data in zip(numbers, values, strict=True):
                if data is None:
                    raise JobStoreError(f"schema of shard {n} of job {job_id} is gone from "
                                        "Redis")
                schemas.append(pa.ipc.read_schema(pa.py_buffer(data)))
        return schemas

    def done_count(self, job_id: str) -> int:
        return int(self.redis.scard(self._key(job_id, "done")))

    def is_done(self, job_id: str, shard: int) -> bool:
        return bool(self.redis.sismember(self._key(job_id, "done"), shard))

    def all_stats(self, job_id: str) -> dict[int, dict[str, Any]]:
        raw = self.redis.hgetall(self._key(job_id, "stats"))
        return {int(k): json.loads(v) for k, v in raw.items()}

    def count_attempt(self, job_id: str, shard: int, worker: str = "",
                      mark_running: bool = False) -> int:
        """Count one more start of a shard (more than one: it was redelivered) and note which
        worker runs it now; with ``mark_running``, also what :meth:`mark_running` does, in
        the same round trip (a job's first shards: four trips were one)."""
        keys = [self._key(job_id, name) for name in ("attempts", "owners", "alive", "meta")]
        started = time.time() if mark_running else ""
        return int(self.redis.eval(_COUNT_ATTEMPT, len(keys), *keys, str(shard), worker,
                                   self.ttl_s, self.idle_s, started))

    def owners(self, job_id: str) -> dict[int, str]:
        """Shard number -> the worker that last started it."""
        raw = self.redis.hgetall(self._key(job_id, "owners"))
        return {int(k): v.decode() for k, v in raw.items()}

    def attempts(self, job_id: str) -> dict[int, int]:
        raw = self.redis.hgetall(self._key(job_id, "attempts"))
        return {int(k): int(v) for k, v in raw.items()}

    def drop_rows(self, job_id: str, shards: int) -> None:
        """Free a finished job's row and key data (its meta, stats and summary stay)."""
        names = [f"{kind}:{n}" for n in range(shards) for kind in ("rows", "keys", "schema")]
        for start in range(0, len(names), 1000):
            self.redis.delete(*(self._key(job_id, name) for name in names[start:start + 1000]))

    def set_progress(self, job_id: str, shard: int, answered: int) -> None:
        self._set_field(job_id, "progress", str(shard), answered, alive="shard progress")

    def report_progress(self, job_id: str, shard: int, answered: int) -> JobState | None:
        """:meth:`set_progress` unless the job failed, was cancelled or is gone (nothing of
        it written back then), and the job's state (None: gone), in one round trip (a
        reading shard's report: it stops if the job ended)."""
        keys = (self._key(job_id, "meta"), self._key(job_id, "progress"),
                self._key(job_id, "alive"))
        return _state(self.redis.eval(_REPORT_PROGRESS, len(keys), *keys, str(shard), answered,
                                      self.ttl_s, "shard progress", self.idle_s))

    def _set_field(self, job_id: str, name: str, field: str, value: str | int, alive: str
                   ) -> None:
        """One field of the job's hash ``name``, and the job's sign of life, in one trip."""
        key = self._key(job_id, name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, field, value)
        pipe.expire(key, self.ttl_s)
        pipe.set(self._key(job_id, "alive"), alive, ex=self.idle_s)
        pipe.execute()

    def progress(self, job_id: str) -> int:
        values = self.redis.hvals(self._key(job_id, "progress"))
        return sum(int(v) for v in values)

    def snapshot(self, job_id: str) -> tuple[JobMeta, int, int]:
        """The job's meta, shards done and keys answered, in one round trip (status)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self._key(job_id, "meta"))
        pipe.scard(self._key(job_id, "done"))
        pipe.hvals(self._key(job_id, "progress"))
        raw, done, progress = pipe.execute()
        return self._meta_from(job_id, raw), int(done), sum(int(v) for v in progress)

    def note_published(self, job_id: str, identity: str) -> None:
        """Record the identity of the job's published output file."""
        self.redis.hset(self._key(job_id, "meta"), "published_as", identity)

    def heartbeat(self, job_id: str, what: str) -> None:
        """A sign of life for the watchdog (the finisher, while it writes)."""
        self.redis.set(self._key(job_id, "alive"), what, ex=self.idle_s)

    def active_jobs(self) -> list[str]:
        """Ids of the jobs the watchdog looks after (not known to have ended), oldest first."""
        return [value.decode() for value in self.redis.zrange(ACTIVE_JOBS, 0, -1)]

    def stalled(self, job_id: str, queues: Sequence[str] = (), unacked: str | None = None
                ) -> list[int] | None:
        """None while the job shows signs of life (or once it ended); else the shards not
        done (empty: it waits for its finisher), and the job counts as alive again for the
        idle limit, so only one caller acts on it. A message naming the job in one of the
        broker's ``queues`` (lists) or its ``unacked`` hash is a sign of life: the job is
        queued behind other work."""
        keys = [self._key(job_id, name) for name in ("meta", "alive", "done")]
        broker = [*queues, *([unacked] if unacked else [])]
        reply = self.redis.eval(_STALLED, 5 + len(broker), *keys, ACTIVE_JOBS,
                                self._key(job_id, "submitter"), *broker,
                                self.idle_s, job_id, len(queues))
        if int(reply[0]) == -3:
            raise SubmitterGone(job_id, reply[1].decode())
        if int(reply[0]) < 0:
            return None
        return [int(n) for n in reply[1:]]

    def lock_finish(self, job_id: str, owner: str, ttl_s: int) -> bool:
        """Take the job's finisher lock for ``ttl_s``; False while another owner holds it.
        The owner that holds it already gets it again (its message was redelivered)."""
        key = self._key(job_id, "finish")
        return bool(self.redis.eval(_LOCK_FINISH, 1, key, owner, ttl_s))

    def note_finisher(self, job_id: str, process: str) -> str | None:
        """Record ``process`` ("host:pid") as the one writing the job's output; returns the
        one recorded before it — a finisher that died before the job succeeded — if any."""
        key = self._key(job_id, "meta")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(key, "finisher")
        pipe.hset(key, "finisher", process)
        previous = pipe.execute()[0]
        return previous.decode() if previous is not None else None

    def claim_end(self, job_id: str, owner: str, ttl_s: int) -> bool:
        """Take the right to announce the job's end; False once it was announced, or while
        another task holds the claim (for ``ttl_s``)."""
        key = self._key(job_id, "ended")
        return bool(self.redis.eval(_CLAIM_END, 1, key, owner, ttl_s))

    def mark_ended(self, job_id: str) -> None:
        """Record that the job's end was announced: no task announces it again."""
        self.redis.set(self._key(job_id, "ended"), ENDED, ex=self.ttl_s)

    def end_announced(self, job_id: str) -> bool:
        return bool(self.redis.get(self._key(job_id, "ended")) == ENDED)

    def unlock_finish(self, job_id: str, owner: str) -> bool:
        """Release the finisher lock if ``owner`` still holds it (atomically); True if so."""
        return bool(self.redis.eval(_RELEASE_LOCK, 1, self._key(job_id, "finish"), owner))

    def delete(self, job_id: str) -> int:
        """Remove every key of a job now (instead of waiting for the TTL)."""
        keys = list(self.redis.scan_iter(match=f"{PREFIX}{job_id}:*", count=1000))
        self.redis.zrem(ACTIVE_JOBS, job_id)
        return int(self.redis.delete(*keys)) if keys else 0

    def _schedule_key(self, name: str, part: str) -> str:
        return f"{SCHEDULE_PREFIX}{name}:{part}"

    def lock_schedule(self, name: str, owner: str, ttl_s: int) -> bool:
        """Take a schedule's start lock; False if another run holds it."""
        key = self._schedule_key(name, "lock")
        return bool(self.redis.set(key, owner, nx=True, ex=ttl_s))

    def unlock_schedule(self, name: str, owner: str) -> bool:
        """Release a schedule's start lock if ``owner`` still holds it (atomically)."""
        return bool(self.redis.eval(_RELEASE_LOCK, 1, self._schedule_key(name, "lock"), owner))

    def schedule_last_job(self, name: str) -> str | None:
        """The job the schedule's latest run started, if any is recorded."""
        value = self.redis.get(self._schedule_key(name, "last_job"))
        return value.decode() if value is not None else None

    def record_schedule_run(self, name: str, job_id: str) -> None:
        """Remember the job a run of the schedule started (kept as long as jobs are)."""
        last, runs = self._schedule_key(name, "last_job"), self._schedule_key(name, "runs")
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(last, job_id, ex=self.ttl_s)
        pipe.lpush(runs, job_id)
        pipe.ltrim(runs, 0, SCHEDULE_RUNS_KEPT - 1)
        pipe.expire(runs, self.ttl_s)
        pipe.execute()

    def schedule_runs(self, name: str) -> list[str]:
        """Ids of the jobs the schedule started, newest first."""
        return [v.decode() for v in self.redis.lrange(self._schedule_key(name, "runs"), 0, -1)]
