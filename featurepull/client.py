"""The producer API: ``submit(...)`` validates a request, stores its shards in Redis, enqueues
them for the worker fleet, and returns a :class:`Job` handle to watch and collect it."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import redis
from pydantic import ValidationError

from featurepull.config import Notify, Settings, load_settings
from featurepull.config.errors import request_error_text
from featurepull.config.loading import with_yaml_key_encoding
from featurepull.errors import InputError, RunFailed
from featurepull.io import (
    EntityTable,
    StagedOutput,
    check_destination,
    is_dataset,
)
from featurepull.redact import redact_url
from featurepull.tasks import JobMeta, JobRequest, JobStore, JobStoreError, create_job
from featurepull.tasks.confine import REDIS_KEY_SCHEME
from featurepull.tasks.requests import InvalidJobRequest
from featurepull.tasks.store import (
    REDIS_OUTAGE_WAIT_S,
    ErrorKind,
    JobState,
    RedisUnavailable,
    UnknownJob,
    connect,
)

if TYPE_CHECKING:
    from tqdm import tqdm

# What Job.wait's bar counts (JobStatus.progress): a scan job's items scanned, then keys.
SCAN_PHASE, READ_PHASE = "scan", "read"
# How often Job.wait asks for the job's status (one pipelined round trip, under 1 ms of CPU):
# its bar's, its no-worker check's and its timeout's cadence. Between two asks it blocks on
# the job's end (JobStore.wait_end), which wakes it at once: a job ended by a worker that
# does not announce its end is seen this long after it, at most (plus Redis's tick: see
# JobStore.wait_end).
POLL_S = 0.1
# Once every shard is done only the finisher is left (~0.2-0.3 s at 1M rows): its end is
# seen sooner then, also without the announcement, by asking more often.
FINISHING_POLL_S = 0.02
# How long a job may stay queued before Job.wait asks which workers consume its queue.
NO_WORKER_AFTER_S = 5.0
# How long that question waits for workers' replies (Celery remote control, through Redis).
WORKER_REPLY_S = 1.0


class JobFailed(RunFailed, RuntimeError):
    """The job failed or was cancelled; the message carries its reason."""


class JobRefused(InputError, JobFailed):
    """The job failed on its input, found only once reading (a requested feature that no
    item holds, a table that changed): bad input, exit code 2 on the command line."""


class RowsNotInRedis(InputError, JobStoreError):
    """The job wrote its rows to its output: read them there, not from Redis (exit 2)."""


@dataclass(frozen=True)
class JobStatus:
    """Where a job is: queued, running (shards done of total), failed, or succeeded."""

    job_id: str
    state: JobState
    shards: int
    shards_done: int
    rows: int
    rows_done: int
    error: str | None
    summary: dict[str, Any] | None
    error_kind: ErrorKind | None = None  # "input" (JobRefused) or "failed"
    # How the job reads and why (featurepull.tasks.scans); None for a job stored before
    # it was recorded. A scan job also counts its scan tasks.
    read_mode: str | None = None
    read_reason: str | None = None
    scan_tasks: int = 0
    scan_tasks_done: int = 0
    # A scan job's items scanned so far, of the table's ~items when it was planned (0: not
    # known): its progress while the scan tasks run, before any shard can start.
    items_scanned: int = 0
    table_items: int = 0
    # The DynamoDB tables it reads: one, or one per Feast view of a Feast-reference job.
    tables: tuple[str, ...] = ()

    def line(self) -> str:
        """One human line for ``featurepull status``."""
        text = f"job {self.job_id}: {self.state}, "
        if self.scan_tasks:
            of = f" of ~{self.table_items:,}" if self.table_items else ""
            text += (f"{self.scan_tasks_done}/{self.scan_tasks} scan tasks "
                     f"({self.items_scanned:,}{of} items scanned), ")
        text += (f"{self.shards_done}/{self.shards} shards, "
                 f"{self.rows_done:,}/{self.rows:,} rows read")
        return text + (f" — {self.error}" if self.error else "")

    def progress(self) -> tuple[str, int, int | None]:
        """The phase the job is in, what is done of it and of how much (None: unknown): a
        scan job's ``scan`` (items scanned) while its scan tasks run, then ``read`` (entity
        rows read by its shards)."""
        if self.scan_tasks_done < self.scan_tasks and not self.state.terminal:
            return SCAN_PHASE, self.items_scanned, self.table_items or None
        return READ_PHASE, self.rows_done, self.rows


def poll_interval(status: JobStatus, poll_s: float) -> float:
    """How long Job.wait waits for the job's end before it asks again: ``poll_s``, or less
    once every shard of the job is done (FINISHING_POLL_S)."""
    finishing = status.shards > 0 and status.shards_done >= status.shards
    return min(poll_s, FINISHING_POLL_S) if finishing else poll_s


def _show_progress(bar: tqdm[Any], status: JobStatus, shown: str) -> str:
    """Move Job.wait's bar to ``status``; a new phase starts it again, with its own unit
    (the scan phase would otherwise show 0 rows read until every scan task is done)."""
    phase, done, total = status.progress()
    if phase != shown:
        bar.unit = "items" if phase == SCAN_PHASE else "rows"
        bar.set_description(f"job {status.job_id[:8]}"
                            + (" scanning" if phase == SCAN_PHASE else ""), refresh=False)
        bar.reset(total=total)  # draws the new phase at 0
    bar.update(done - bar.n)
    return phase


class Job:
    """A handle on a submitted job; cheap to create from an id."""

    def __init__(self, job_id: str, settings: Settings | None = None,
                 store: JobStore | None = None) -> None:
        self.settings = settings or load_settings()
        jobs = self.settings.jobs
        self.store = store or JobStore(connect(self.settings.redis_url), jobs.ttl_s,
                                       jobs.visibility_timeout_s)
        self.id = job_id
        self._meta: JobMeta = self.store.meta(job_id)  # raises UnknownJob early

    def status(self) -> JobStatus:
        """The job's state now."""
        from featurepull.tasks.scans import scan_status

        meta, done, answered = self.store.snapshot(self.id)  # one round trip, any job size
        return JobStatus(self.id, meta.state, meta.shards, done, meta.rows,
                         min(answered, meta.rows), meta.error, meta.summary, meta.error_kind,
                         **scan_status(meta, self.store),
                         tables=tuple(meta.tables))

    def shard_plan(self) -> dict[str, int] | None:
        """How a job cut for its fleet (``featurepull.tasks.fleet``) was cut: its
        ``shard_size``, ``shard_unit`` (jobs.shard_size) and ``fleet_processes`` (the pool
        processes the workers on its queue had recorded; 0: none, so shards of
        jobs.shard_size). None for any other job: every shard was jobs.shard_size."""
        spec = self.store.meta(self.id).request
        processes = (spec.model_extra or {}).get("fleet_processes")
        if processes is None:
            return None
        return {"shard_size": spec.shard_size, "shard_unit": spec.shard_unit,
                "fleet_processes": int(processes)}

    def capacity(self) -> dict[str, Any]:
        """What the shards (and a scan job's scan tasks) done so far spent of the table's
        capacity: consumed RCU/s since the job started, its budget, seconds held back for it,
        requests in flight; a scan's pages and items scanned and matched."""
        from featurepull.tasks.shards import capacity_fields, shard_totals

        meta = self.store.meta(self.id)
        total = shard_totals(self.store.all_stats(self.id), latencies=False)
        total.merge(shard_totals(self.store.all_scan_stats(self.id), latencies=False))
        since = meta.started or meta.created
        elapsed = (meta.finished or time.time()) - since
        scanned = ({"pages": total.pages, "items_scanned": total.items_scanned,
                    "items_matched": total.items_matched} if total.pages else {})
        return {"consumed_rcu": round(total.consumed_rcu, 3),
                **capacity_fields(total, elapsed), **scanned}

    def wait(self, timeout: float | None = None, progress: bool = True,
             poll_s: float = POLL_S, on_no_worker: Callable[[str], None] | None = None,
             no_worker_after_s: float = NO_WORKER_AFTER_S) -> JobStatus:
        """Block until the job ends; raise JobFailed if it did not succeed (JobRefused when
        it failed on its input), TimeoutError (the job left as it is) after ``timeout``
        seconds.

        A job still queued after ``no_worker_after_s`` with no worker consuming its queue is
        reported once to ``on_no_worker`` (default: a RuntimeWarning), naming the queue and
        how to start a worker; the wait goes on. A Redis that stops answering is waited for
        (``REDIS_OUTAGE_WAIT_S`` at most, then RedisUnavailable); a job whose keys vanish
        meanwhile (Redis restarted without persistence) raises JobFailed saying so.
        """
        from tqdm import tqdm  # the wait's, not the submit's: after its first shard is queued

        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        asked, idle, sleep = False, False, False
        status = self._poll(None)
        with tqdm(total=status.rows, unit="rows", disable=not progress or None,
                  desc=f"job {self.id[:8]}", dynamic_ncols=True) as bar:
            phase = _show_progress(bar, status, READ_PHASE)
            while not status.state.terminal:
                if deadline is not None and time.monotonic() > deadline:
                    why = (f"; no worker consumes queue {self.settings.jobs.queue!r}"
                           if idle and status.state == JobState.QUEUED else "")
                    raise TimeoutError(f"job {self.id} still {status.state} after {timeout:g}s "
                                       f"({status.shards_done}/{status.shards} shards done{why})")
                if (not asked and status.state == JobState.QUEUED
                        and time.monotonic() - started >= no_worker_after_s):
                    asked = True
                    idle = self.workers_on_queue() == []
                    if idle:
                        (on_no_worker or _warn)(self._no_worker_message(no_worker_after_s))
                interval = poll_interval(status, poll_s)
                if deadline is not None:
                    interval = min(interval, deadline - time.monotonic())
                sleep = self._await_end(interval, sleep)
                status = self._poll(status)
                phase = _show_progress(bar, status, phase)
            bar.update(status.rows - bar.n if status.state == JobState.SUCCEEDED else 0)
        if status.state != JobState.SUCCEEDED:
            # Woken by the end itself, maybe before the worker that ended it removed the
            # staged parts: removed here too, so that nothing half-written outlives the wait.
            self._discard_staged()
            failure = JobRefused if status.error_kind == "input" else JobFailed
            raise failure(f"job {self.id} {status.state}: {status.error}")
        return status

    def _await_end(self, interval: float, sleep: bool) -> bool:
        """Wait ``interval`` seconds at most: block on the job's end (JobStore.wait_end),
        or ``sleep``. Returns whether later waits sleep: once the end was seen (the status
        that follows is the final one; no loop without a pause should it not be) or Redis
        refused the blocking read. A Redis that stops answering is left to the poll."""
        if interval <= 0:
            return sleep
        if sleep:
            time.sleep(interval)
            return sleep
        try:
            return self.store.wait_end(self.id, interval)
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        except redis.ResponseError:  # e.g. an ACL without XREAD
            time.sleep(interval)
            return True

    def workers_on_queue(self, reply_s: float = WORKER_REPLY_S) -> list[str] | None:
        """The workers consuming this job's queue now (see :func:`workers_on_queue`)."""
        return workers_on_queue(self.settings, reply_s)

    def _no_worker_message(self, after_s: float) -> str:
        queue = self.settings.jobs.queue
        return (f"job {self.id} is still queued after {after_s:g}s and no worker consumes "
                f"queue {queue!r} on {redact_url(self.settings.redis_url)}: start one with "
                "`featurepull worker`, with the same FEATUREPULL_REDIS_URL and jobs.queue "
                f"(FEATUREPULL_JOBS__QUEUE={queue}); still waiting")

    def _poll(self, last: JobStatus | None) -> JobStatus:
        """The status now, waiting out a Redis outage; JobFailed if the job vanished."""
        unreachable_since: float | None = None
        while True:
            try:
                return self.status()
            except UnknownJob:
                self._discard_staged()
                where = (f" while it was {last.state} ({last.shards_done}/{last.shards} "
                         "shards done)" if last else "")
                raise JobFailed(
                    f"job {self.id} is gone from Redis{where}: Redis lost its "
                    "data (restarted without persistence, flushed, or evicted under "
                    "maxmemory) or the job was deleted; submit it again") from None
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > REDIS_OUTAGE_WAIT_S:
                    url = redact_url(self.settings.redis_url)
                    raise RedisUnavailable(
                        f"lost Redis at {url} while waiting for job {self.id}; it has not "
                        f"answered for {REDIS_OUTAGE_WAIT_S:g}s ({exc})") from None
                time.sleep(0.5)

    def _discard_staged(self) -> None:
        """Remove what the shards of a job that failed, was cancelled or vanished from Redis
        staged for its output (best effort; a vanished job's, no worker knows any more)."""
        from featurepull.tasks.output import staged_output

        if self._meta.request.request.get("output"):
            with contextlib.suppress(Exception):
                staged_output(self.id, self._meta, self.settings).discard()

    def _require_success(self) -> JobMeta:
        meta = self.store.meta(self.id)
        if meta.state != JobState.SUCCEEDED:
            raise JobFailed(f"job {self.id} is {meta.state}"
                            + (f": {meta.error}" if meta.error else "; wait() for it first"))
        return meta

    def tables(self) -> Iterator[pa.Table]:
        """The job's rows as Arrow tables, one per shard, in input order."""
        meta = self._require_success()
        output = (meta.summary or {}).get("output")
        if output:
            raise RowsNotInRedis(f"job {self.id} wrote its rows to {output}; read them there "
                                "(Redis keeps rows only for jobs submitted without an output)")
        for shard in range(meta.shards):
            yield self.store.shard_rows(self.id, shard)

    def rows(self) -> Iterator[dict[str, Any]]:
        """The job's rows as dicts, in input order (streamed shard by shard)."""
        for table in self.tables():
            yield from table.to_pylist()

    def save(self, path: str, overwrite: bool = False) -> int:
        """Write the rows to a .parquet/.csv/.jsonl file, or to a Parquet dataset when
        ``path`` ends in ``/`` (local or s3://, one part per shard); rows written."""
        from featurepull.io.sink import open_sink
        from featurepull.io.tables import unify_schemas

        meta = self._require_success()
        schemas = self.store.shard_schemas(self.id, meta.shards)
        if is_dataset(path):  # the layout `--output DIR/` writes (docs/large-jobs.md)
            check_destination(path, overwrite, self.settings.s3)
            staged = StagedOutput(path, self.id, meta.shards, self.settings.s3,
                                  keys=meta.request.key_columns)
            try:
                rows: list[int] = []
                for shard, table in enumerate(self.tables()):
                    staged.write_part(shard, table)
                    rows.append(table.num_rows)
                return staged.publish(unify_schemas(schemas), schemas, rows,
                                      overwrite=overwrite)
            finally:
                staged.discard()
        with open_sink(path, unify_schemas(schemas), overwrite=overwrite,
                       s3=self.settings.s3, keys=meta.request.key_columns) as sink:
            for table in self.tables():
                sink.write(table)
            return int(sink.rows_written)

    def cancel(self) -> bool:
        """Stop the job: shards not yet started are skipped, running ones stop early."""
        return self.store.cancel(self.id)

    def delete(self) -> int:
        """Remove the job's keys from Redis now; returns how many were deleted."""
        return self.store.delete(self.id)


def workers_on_queue(settings: Settings, reply_s: float = WORKER_REPLY_S) -> list[str] | None:
    """The workers consuming ``settings.jobs.queue`` now (those that answer Celery's
    remote-control ``active_queues`` within ``reply_s``), or None when Redis could not be
    asked."""
    from kombu.exceptions import OperationalError

    from featurepull.worker.producer import producer_app

    app = producer_app(settings)
    try:
        replies = app.control.inspect(timeout=reply_s).active_queues() or {}
    except (OperationalError, redis.RedisError, OSError):
        return None
    finally:
        app.close()
    queue = settings.jobs.queue
    return sorted(name for name, queues in replies.items()
                  if any(q.get("name") == queue for q in queues or []))


def submit(table: str, features: Sequence[str], entities: str, output: str | None = None, *,
           settings: Settings | None = None, layout: str = "feast",
           join_keys: Sequence[str] = (), join_key_types: Mapping[str, str] | None = None,
           event_ts_attribute: str | None = "event_ts", project: str | None = None,
           overwrite: bool = False, dynamodb: Mapping[str, Any] | None = None,
           entity_table: EntityTable | None = None, scorer: str | None = None,
           with_features: bool = False, notify: Mapping[str, str] | None = None,
           allow_missing_features: bool = False, feature_store_yaml: str | None = None,
           feature_service: str | None = None, full_feature_names: bool = False,
           respect_ttl: bool = False) -> Job:
    """Validate a job, store its entities in Redis by shard, enqueue it, return its handle.

    Everything the read engine would refuse is refused here, before anything is enqueued.
    A relative local ``entities`` or ``output`` path is made absolute here, against this
    process's directory: the workers must see that path (same machine or a shared
    filesystem; else use ``s3://``).
    ``scorer`` names a scorer registered in ``settings.scorers`` (the workers' registry);
    the job's rows are then the entity keys and its scores (plus the features when
    ``with_features``). ``notify`` (``{"task", "queue"}``) names a task of another Celery
    app that the workers send, once, with the job's summary when it ends. A requested
    feature that none of a shard's found items holds fails the job (:class:`JobRefused`)
    unless ``allow_missing_features``. Features given as Feast references
    (``view:feature``) or a ``feature_service`` are read from every view they name, through
    the registry of ``feature_store_yaml`` (``table`` is then ""; docs/feast-registry.md).
    """
    from featurepull.tasks.task_messages import RedisTaskSender

    # No settings: this process's environment, under the yaml's key encoding (as the CLI).
    settings = settings or with_yaml_key_encoding(load_settings(), feature_store_yaml)
    store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s,
                     settings.jobs.visibility_timeout_s)
    try:
        request = JobRequest(
            table=table, features=list(features), entities=_from_here(entities),
            output=None if output is None else _from_here(output),
            overwrite=overwrite, layout=layout,  # type: ignore[arg-type]
            join_keys=list(join_keys), join_key_types=dict(join_key_types or {}),
            event_ts_attribute=event_ts_attribute, project=project,
            dynamodb=dict(dynamodb or {}), scorer=scorer, with_features=with_features,
            notify=Notify(**notify) if notify else None,
            allow_missing_features=allow_missing_features,
            feature_store_yaml=(None if feature_store_yaml is None
                                else _from_here(feature_store_yaml)),
            feature_service=feature_service, full_feature_names=full_feature_names,
            respect_ttl=respect_ttl,
        )
    except ValidationError as exc:
        raise InvalidJobRequest(request_error_text(exc, "job request")) from None
    # The broker is the job store's Redis: its messages go there as Celery writes them.
    meta = create_job(request, settings, store, entity_table,
                      enqueue=RedisTaskSender(store.redis, settings.jobs.queue))
    return Job(meta.job_id, settings, store)


def _from_here(reference: str) -> str:
    """A relative local path made absolute against this process's working directory, since
    the workers that read or write it run in theirs; s3:// and redis-key: pass as they are."""
    if not reference or reference.startswith(("s3://", REDIS_KEY_SCHEME)):
        return reference
    absolute = os.path.abspath(reference)
    return absolute + os.sep if reference.endswith(os.sep) and absolute != os.sep else absolute


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
