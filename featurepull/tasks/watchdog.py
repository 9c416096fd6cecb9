"""The watchdog: no job left hanging because a message was lost.

Celery's Redis transport can lose a message outright: taken off the queue but not yet in
the unacked set when the worker dies (celery/kombu#305), it is restored by nobody, and its
job would stay ``running`` forever. Every worker runs this check every
``jobs.redelivery_check_s`` on the jobs in ``featurepull:jobs:active``: a job whose ``alive``
key has expired — no shard started, progressed or ended, and no finisher wrote, for
``jobs.visibility_timeout_s`` — has the shards it has not done sent again, or, with every
shard done, its finisher. A job with a message still waiting in the queue (or held unacked
by a worker) is queued behind other work, not stalled: that counts as a sign of life.
Shards are idempotent (a done shard is skipped, a part or row set is rewritten whole), so a
re-send of a shard that was only slow costs a skipped message.

The decision is one Lua script per job (:meth:`JobStore.stalled`), which also marks the job
alive again: of many workers' watchdogs, one re-sends, once per idle period.

A job whose submitting process died before it stored and sent every shard (its sign of life,
``featurepull.tasks.submitter``, expired) would wait for shards that never come: it is
failed, with an error that says to submit it again, and what it stored is removed.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import structlog

from featurepull.config import Settings
from featurepull.tasks import monitor
from featurepull.tasks.store import JobStore, SubmitterGone, connect

log = structlog.get_logger(__name__)


def resend_stalled(app: Any, store: JobStore, queue: str,
                   settings: Settings) -> dict[str, list[int]]:
    """Re-send what the stalled jobs wait for; job id -> shards re-sent (empty: the
    finisher was). A job whose submitter died mid-submit is failed instead (``settings``,
    the workers', say where its staged output is, to remove it)."""
    from featurepull.tasks.celery_tasks import enqueue_shards

    resent: dict[str, list[int]] = {}
    lists, unacked = broker_keys(app, queue)
    for job_id in store.active_jobs():
        try:
            shards = store.stalled(job_id, lists, unacked)
        except SubmitterGone as exc:
            fail_abandoned(app, store, job_id, str(exc), settings)
            continue
        if shards is None:
            continue
        meta = store.meta(job_id)
        if shards:
            enqueue_shards(app, meta, queue, shards, store=store)  # or scan tasks
        else:
            app.send_task("featurepull.finish_job", args=[job_id], queue=queue,
                          argsrepr=monitor.finish_args(meta))
        log.warning("job_stalled_resent", job_id=job_id, state=meta.state,
                    shards=shards[:20], shards_resent=len(shards), finisher=not shards,
                    idle_s=store.idle_s)
        resent[job_id] = shards
    return resent


def fail_abandoned(app: Any, store: JobStore, job_id: str, error: str,
                   settings: Settings) -> None:
    """Fail a job its submitter left half-submitted as a task fails one, and (once, of many
    watchdogs) remove the shard keys and rows it stored."""
    from featurepull.tasks.celery_tasks import fail_and_announce

    if fail_and_announce(app, store, job_id, error, settings, f"watchdog:{os.getpid()}"):
        log.warning("job_submitter_gone", job_id=job_id, error=error)
        store.drop_rows(job_id, store.meta(job_id).shards)


def broker_keys(app: Any, queue: str) -> tuple[list[str], str]:
    """The Redis keys where kombu's Redis transport keeps ``queue``'s waiting messages (a
    list per priority step) and every worker's unacknowledged ones (a hash)."""
    from kombu.transport.redis import Channel

    options = app.conf.broker_transport_options or {}
    steps = options.get("priority_steps", Channel.priority_steps)
    sep = options.get("sep", Channel.sep)
    prefix = options.get("global_keyprefix", "")
    lists = [prefix + (f"{queue}{sep}{step}" if step else queue) for step in steps]
    return lists, prefix + options.get("unacked_key", Channel.unacked_key)


class Watchdog(threading.Thread):
    """Runs :func:`resend_stalled` every ``jobs.redelivery_check_s`` until stopped."""

    def __init__(self, app: Any, settings: Settings) -> None:
        super().__init__(name="featurepull-watchdog", daemon=True)
        self.app = app
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        jobs = self.settings.jobs
        store: JobStore | None = None
        while not self.stopped.wait(jobs.redelivery_check_s):
            try:
                store = store or JobStore(connect(self.settings.redis_url), jobs.ttl_s,
                                          jobs.visibility_timeout_s)
                resend_stalled(self.app, store, jobs.queue, self.settings)
            except Exception as exc:  # Redis away: the next round tries again
                log.warning("watchdog_check_failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self.stopped.set()
