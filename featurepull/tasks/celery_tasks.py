"""The Celery tasks of a job. Their names are public API (``featurepull.<name>``); their
arguments are small JSON values — entity lists and rows stay in Redis.

- ``featurepull.submit_job(request)``: request is a :class:`JobRequest` as a JSON object
  (entities by reference). Validates, stores the shards, enqueues them; returns
  ``{"job_id", "shards", "rows"}``. For scoring tasks in other Celery apps (``send_task``).
  ``request["scorer"]`` may name a scorer registered in the workers' ``[[scorers]]``.
  A request with missing or invalid fields raises ``InvalidJobRequest`` (a ValueError) whose
  message lists each field: pydantic's ValidationError reaches a ``send_task`` caller empty.
  Entities, output or endpoint outside ``jobs.allowed_*`` (``featurepull.tasks.confine``)
  raise ``RequestOutOfBounds`` (a ValueError naming the setting) before anything is read.
- ``featurepull.read_shard(job_id, shard)``: reads one shard; the last one to finish
  enqueues ``finish_job``. Reports ``PROGRESS`` with ``done``/``total`` keys, in the result
  backend and as a ``task-progress`` event (Flower shows state ``PROGRESS``).
- ``featurepull.scan_segments(job_id, scan_task)``: a scan job's scan task (a range of its
  Scan's segments); the last one to finish enqueues ``read_shard`` for every shard, which
  builds its rows from what the scan tasks matched (``featurepull.tasks.scans``).
- ``featurepull.finish_job(job_id)``: writes the ordered output and the job summary, once.
- ``featurepull.run_schedule(name)``: sent by beat; starts a job from the worker's own
  schedule ``name``, or returns ``{"skipped": True, "running_job"}`` while its last job runs.

When a job ends, the task its request names in ``notify`` is sent once, by name, with the
job's summary (``featurepull.tasks.notify``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import redis
import structlog
from celery import Celery, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.result import AsyncResult
from celery.utils.log import get_task_logger
from kombu.exceptions import OperationalError

from featurepull.config import Settings
from featurepull.config.loading import with_yaml_key_encoding
from featurepull.errors import FeaturepullError, RunFailed
from featurepull.redact import redact_text
from featurepull.tasks import monitor, scans
from featurepull.tasks.confine import Bounds, RequestOutOfBounds
from featurepull.tasks.create import create_job
from featurepull.tasks.feast_views import logged_tables
from featurepull.tasks.finish import finish_job
from featurepull.tasks.fleet import time_limit_advice
from featurepull.tasks.notify import announce_end
from featurepull.tasks.output import discard_staged_output
from featurepull.tasks.requests import check_request_size, parse_job_request
from featurepull.tasks.schedules import start_scheduled_job
from featurepull.tasks.sending import shard_sender
from featurepull.tasks.shards import JobStopped, reset_process_state, run_shard
from featurepull.tasks.store import (
    REDIS_OUTAGE_WAIT_S,
    TERMINAL,
    ErrorKind,
    JobMeta,
    JobState,
    JobStore,
    JobStoreError,
    UnknownJob,
    connect,
)

logger = get_task_logger(__name__)
log = structlog.get_logger(__name__)
# Redis outages (a restart, a failover) are waited out: the shard is retried, not failed.
REDIS_RETRY_COUNTDOWN_S = 2
REDIS_MAX_RETRIES = 60
# The retry is a message on the same Redis: while it is down the retry cannot be sent, and
# Celery would drop the shard (reject, no requeue), leaving the job running forever with a
# shard missing. So a shard first waits (REDIS_OUTAGE_WAIT_S at most) for Redis to answer.
# What a Redis outage looks like inside a task: redis-py's errors from the job store and the
# result backend, and kombu's OperationalError from whatever the task publishes to the broker
# (a progress event, the finish_job message). Each means "wait for Redis, then retry": taken
# for a failure, the job could not be marked failed (Redis is down) while Celery acks the
# failed message, and the job would wait forever for a shard or a finisher that is gone.
REDIS_OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)


def wait_for_redis(store: JobStore, timeout_s: float = REDIS_OUTAGE_WAIT_S) -> bool:
    """Block until Redis answers a PING (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            store.redis.ping()
            return True
        except redis.RedisError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def retry_after_outage(task: Any, store: JobStore, exc: Exception, what: str) -> NoReturn:
    """Retry ``task`` once Redis answers again (the retry is a message on that Redis)."""
    if not wait_for_redis(store):
        logger.warning("Redis still unreachable after %ss; %s may be lost",
                       REDIS_OUTAGE_WAIT_S, what)
    raise task.retry(exc=exc, countdown=REDIS_RETRY_COUNTDOWN_S,
                     argsrepr=task.request.get("argsrepr")) from None


class ShardFailed(RunFailed):
    """How a failed task ends for Celery: with the job's redacted error. The original
    exception is not re-raised: Celery would store its message and traceback, unmasked, in
    the result backend (Redis), and Flower would show them."""


def fail_job(task: Any, store: JobStore, job_id: str, error: str,
             kind: ErrorKind = "failed") -> NoReturn:
    """Mark the job failed with ``error`` (redacted), announce its end, and end the task
    with that error."""
    error = redact_text(error)
    _fail_redacted(task.app, store, job_id, error, configured_settings(),
                   str(task.request.id), kind)
    raise ShardFailed(error) from None


def fail_and_announce(app: Any, store: JobStore, job_id: str, error: str, settings: Settings,
                      owner: str, kind: ErrorKind = "failed") -> bool:
    """The one way a job is failed, by a task or by the watchdog: record ``error``
    (redacted; the first error wins), remove what the job staged for its output (nothing
    half-written; ``settings`` are the worker's, the job's own are made from them), and
    announce its end as ``owner``. False if the job had already ended: a job that succeeded
    keeps its output; a failed or cancelled one's staged parts are nobody's (a part staged
    after the first fail's discard would otherwise be left), and go again."""
    return _fail_redacted(app, store, job_id, redact_text(error), settings, owner, kind)


def _fail_redacted(app: Any, store: JobStore, job_id: str, error: str, settings: Settings,
                   owner: str, kind: ErrorKind) -> bool:
    """fail_and_announce with ``error`` redacted already (fail_job ends its task with it)."""
    failed = store.fail(job_id, error, kind)
    if failed or store.state(job_id) != JobState.SUCCEEDED:
        discard_staged_output(job_id, settings, store)
    _announce_failure(app, store, job_id, owner)
    return failed


def end_task(task: Any, store: JobStore, job_id: str, exc: Exception, where: str,
             retry_on: tuple[type[Exception], ...] = REDIS_OUTAGE_ERRORS) -> NoReturn:
    """How a task of ``job_id`` that raised ``exc`` ends. A Redis outage (``retry_on``) is
    waited out and the task retried. Anything else fails the job: an InputError as an input
    error (``featurepull submit --wait`` exits 2, as ``pull`` does for the same input), an
    error featurepull does not know by its type and message."""
    if isinstance(exc, retry_on):
        retry_after_outage(task, store, exc, f"{where} (job {job_id})")
    if isinstance(exc, RequestOutOfBounds):  # logged with the request's summary and setting
        job_refused(exc, store.meta(job_id).request.request)
    if isinstance(exc, FeaturepullError | ValueError):
        is_input = isinstance(exc, FeaturepullError) and exc.is_input
        fail_job(task, store, job_id, f"{where}: {exc}", "input" if is_input else "failed")
    fail_job(task, store, job_id, f"{where}: unexpected {type(exc).__name__}: {exc}")


@dataclass
class _Context:
    settings: Settings
    store: JobStore | None = None
    pid: int = 0


_context: _Context | None = None


def configure(settings: Settings) -> None:
    """Give the tasks their settings (the worker app does this once, at import)."""
    global _context
    _context = _Context(settings)


def context() -> tuple[Settings, JobStore]:
    """This process's settings and job store (the Redis client is built after fork)."""
    if _context is None:
        raise RuntimeError("featurepull tasks are not configured: import featurepull.worker")
    if _context.store is None or _context.pid != os.getpid():
        reset_process_state()
        client = connect(_context.settings.redis_url)
        jobs = _context.settings.jobs
        _context.store = JobStore(client, jobs.ttl_s, jobs.visibility_timeout_s)
        _context.pid = os.getpid()
    return _context.settings, _context.store


def configured_settings() -> Settings:
    """This process's settings, without connecting to Redis (for logging setup)."""
    if _context is None:
        raise RuntimeError("featurepull tasks are not configured: import featurepull.worker")
    return _context.settings


def announce_after_failure(task: Any, store: JobStore, job_id: str) -> None:
    """Announce a job this task just failed, without hiding the failure: if Redis or the
    broker is down now, the next task that finds the job ended announces it."""
    _announce_failure(task.app, store, job_id, str(task.request.id))


def _announce_failure(app: Any, store: JobStore, job_id: str, owner: str) -> None:
    try:
        announce_end(app, store, job_id, owner)
    except Exception as exc:
        logger.warning("the end of job %s is not announced yet: %s", job_id, exc)


def job_refused(exc: RequestOutOfBounds, request: dict[str, Any]) -> None:
    """Log a job refused for naming something outside the allowed lists: the request's
    secret-free summary, the setting that refused it and the (redacted) error."""
    log.warning("job_refused", request=monitor.submit_args(request), setting=exc.setting,
                error=redact_text(str(exc)))


def job_created(meta: JobMeta) -> None:
    """Put a job a task just created into the task's log context, and log it."""
    structlog.contextvars.bind_contextvars(job_id=meta.job_id)
    log.info("job_created", shards=meta.shards, rows=meta.rows,
             **logged_tables(meta.request.model_dump()),
             read_plan=scans.plan_line(meta.request.read_plan) or None)


def enqueue_shards(app: Celery, meta: JobMeta, queue: str,
                   shards: Iterable[int] | None = None, store: JobStore | None = None) -> None:
    """One read_shard message per shard (or per one of ``shards``: the watchdog's re-sends);
    each carries only the job id and shard number. A scan job whose scan tasks are not all
    done (``store`` says which) gets a scan_segments message per scan task not done instead:
    the last of them sends the shards (``featurepull.tasks.scans``)."""
    pending = scans.scan_pending(meta, store) if store is not None else (
        list(range(scans.scan_tasks(meta))))
    with shard_sender(app, queue) as send:
        if pending:
            for part in pending:
                send.scan(meta, part)
            return
        for shard in range(meta.shards) if shards is None else shards:
            send(meta, shard)


def send_submit_job(app: Celery, request: dict[str, Any], queue: str) -> AsyncResult:
    """Send ``featurepull.submit_job`` with a short, secret-free summary for Flower and logs."""
    return app.send_task("featurepull.submit_job", args=[request], queue=queue,
                         argsrepr=monitor.submit_args(request), kwargsrepr="{}")


# A refused request is the sender's mistake, logged once as job_refused: Celery logs it at
# INFO without a traceback ("raised expected").
@shared_task(name="featurepull.submit_job", bind=True, throws=(RequestOutOfBounds,))
def submit_job(self: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Start a job from a JSON request whose entities are a path, s3:// URI or Redis key."""
    settings, store = context()
    # Before validating it: a request is a few hundred bytes; a huge one is neither
    # validated nor stored.
    check_request_size(request, settings.jobs.max_request_bytes)
    job = parse_job_request(request)
    try:
        bounds = Bounds.for_messages(settings)
        bounds.check_message(job.entities, job.output, job.dynamodb)
        bounds.check_feast_repo(job.feature_store_yaml)
    except RequestOutOfBounds as exc:
        job_refused(exc, request)
        # Redacted: the message is stored in the result backend and shown by Flower.
        raise RequestOutOfBounds(redact_text(str(exc)), exc.setting) from None
    # The keys as the yaml says its tables hold them (the worker's settings are for the rest).
    settings = with_yaml_key_encoding(settings, job.feature_store_yaml)
    with shard_sender(self.app, settings.jobs.queue) as send:
        meta = create_job(job, settings, store, enqueue=send)
    job_created(meta)
    return {"job_id": meta.job_id, "shards": meta.shards, "rows": meta.rows}


@shared_task(name="featurepull.run_schedule", bind=True)
def run_schedule(self: Any, name: str) -> dict[str, Any]:
    """Start a run of the configured schedule ``name`` (beat sends only the name)."""
    settings, store = context()

    def enqueue(meta: JobMeta) -> None:
        job_created(meta)
        enqueue_shards(self.app, meta, settings.jobs.queue)

    return start_scheduled_job(name, settings, store, str(self.request.id), enqueue)


@shared_task(name="featurepull.read_shard", bind=True, max_retries=REDIS_MAX_RETRIES)
def read_shard(self: Any, job_id: str, shard: int) -> dict[str, Any]:
    """Read one shard of a job and store its rows; finish the job after the last shard."""
    settings, store = context()
    report = monitor.ShardProgress(self, store, job_id, shard)

    def then() -> None:
        # Sent here, inside the outage handling: a finish_job message that cannot be
        # sent means a retry, which finds the shard done and sends it again.
        finish.apply_async(args=[job_id], queue=settings.jobs.queue,
                           argsrepr=monitor.finish_args(store.meta(job_id)))

    return _job_part(self, job_id, {"shard": shard}, f"shard {shard}", then,
                     lambda worker: run_shard(job_id, shard, settings, store, report,
                                              worker=worker),
                     too_long=lambda: time_limit_advice(store, job_id))


@shared_task(name="featurepull.scan_segments", bind=True, max_retries=REDIS_MAX_RETRIES)
def scan_segments(self: Any, job_id: str, scan_task: int) -> dict[str, Any]:
    """Scan one scan task's segments of a scan job and store what matched its keys; after
    the last scan task, send every shard (``featurepull.tasks.scans``)."""
    settings, store = context()
    structlog.contextvars.bind_contextvars(scan_task=scan_task)
    return _job_part(self, job_id, {"scan_task": scan_task}, f"scan task {scan_task}",
                     lambda: enqueue_shards(self.app, store.meta(job_id), settings.jobs.queue,
                                            store=store),
                     lambda worker: scans.run_scan_part(job_id, scan_task, settings, store,
                                                        worker=worker),
                     lambda: scans.SCAN_TASK_TOO_LONG)


def _job_part(task: Any, job_id: str, part: dict[str, int], where: str,
              then: Callable[[], None], run: Callable[[str], bool],
              too_long: Callable[[], str]) -> dict[str, Any]:
    """Run one part of a job (a shard, a scan task): ``run`` returns True when it completed
    the job's last part, and ``then`` sends what comes next. How it ends when it fails, is
    stopped or runs past its time limit is the same for every part; ``too_long`` says what
    to change when it runs past its soft time limit."""
    settings, store = context()
    try:
        last = run(f"{task.request.hostname or ''}:{os.getpid()}")
        if last:
            then()
        else:  # skipped, or run for a job that failed or was cancelled meanwhile
            state = store.state(job_id)
            if state in (JobState.FAILED, JobState.CANCELLED):
                discard_staged_output(job_id, settings, store)
            if state in TERMINAL:  # else there is no end to announce
                announce_end(task.app, store, job_id, str(task.request.id))
    except JobStopped:
        discard_staged_output(job_id, settings, store)
        announce_after_failure(task, store, job_id)
        return {"job_id": job_id, **part, "stopped": True}
    except UnknownJob as exc:
        logger.warning("%s of unknown job %s skipped: %s", where, job_id, exc)
        return {"job_id": job_id, **part, "unknown_job": True}
    except SoftTimeLimitExceeded:
        limit = settings.jobs.shard_soft_time_limit_s
        store.fail(job_id, f"{where} ran past its soft time limit ({limit:g}s); {too_long()}")
        discard_staged_output(job_id, settings, store)
        announce_after_failure(task, store, job_id)
        raise
    except Exception as exc:
        end_task(task, store, job_id, exc, where,
                 retry_on=(*REDIS_OUTAGE_ERRORS, JobStoreError))
    return {"job_id": job_id, **part, "last": last}


@shared_task(name="featurepull.finish_job", bind=True, max_retries=None)
def finish(self: Any, job_id: str) -> dict[str, Any] | None:
    """Write the job's ordered output and summary; at most one finisher runs at a time."""
    settings, store = context()
    owner = str(self.request.id)
    lock_ttl = int(settings.jobs.shard_time_limit_s)
    try:
        locked = store.lock_finish(job_id, owner, lock_ttl)
    except REDIS_OUTAGE_ERRORS as exc:
        retry_after_outage(self, store, exc, f"the finish_job message of job {job_id}")
    if not locked:
        # Another finish_job message holds the lock; if its process died, the lock expires
        # and we go on. (This message's own earlier delivery does not block it.)
        raise self.retry(countdown=5, argsrepr=self.request.get("argsrepr"))
    try:
        summary = finish_job(job_id, settings, store)
        # Also when this message was redelivered after its process died between storing
        # the summary and announcing it: finish_job returns None then, the job has ended.
        announce_end(self.app, store, job_id, owner)
        return summary
    except Exception as exc:
        # Redis gone mid-finish: the job cannot be marked failed now; finish it again.
        end_task(self, store, job_id, exc, "writing the output failed")
    finally:
        store.unlock_finish(job_id, owner)
