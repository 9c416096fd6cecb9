"""A job's end, announced once: counted in ``featurepull_jobs_total`` and, when its request
has ``notify: {"task", "queue"}``, that task sent by name with the job's summary.

Whoever next touches an ended job announces it: the finisher of a succeeded job, the shard
that failed it, and for a cancelled job the next shard or finisher that finds it cancelled.
Several may try; the job's ``ended`` key in Redis (:meth:`JobStore.claim_end`) lets one
through. The claim holds the claiming task's id, so when its process dies mid-way (SIGKILL,
``acks_late``) the redelivered message — same id — takes it again at once and sends.

The one edge left is at-least-once: a process killed after the broker took the message and
before ``ended`` says "sent" (one Redis round trip) sends it again when its task is
redelivered. A receiving task that may run twice for a job should be idempotent by
``job_id``.

The notification is a plain Celery message: the task name and queue come from the request
(validated as dotted names; featurepull's and Celery's own tasks refused), the one argument
is JSON. Nothing in it is imported or run by a featurepull worker.
"""

from __future__ import annotations

from typing import Any

import structlog

from featurepull.tasks import metrics
from featurepull.tasks.finish import end_summary
from featurepull.tasks.store import TERMINAL, JobState, JobStore

# How long a claim keeps other tasks from announcing while its holder sends.
CLAIM_TTL_S = 60

log = structlog.get_logger(__name__)


def announce_end(app: Any, store: JobStore, job_id: str, owner: str) -> bool:
    """If the job has ended and its end was not announced yet, count it and send its notify
    task (once); ``owner`` is the calling task's id. True when this call announced it."""
    if store.state(job_id) not in TERMINAL or store.end_announced(job_id):
        return False
    if not store.claim_end(job_id, owner, CLAIM_TTL_S):
        return False
    meta = store.meta(job_id)
    notify = meta.notify
    if notify:
        summary = end_summary(store, meta)
        app.send_task(notify["task"], args=[summary], queue=notify["queue"],
                      argsrepr=f"job_id={job_id} state={meta.state}", kwargsrepr="{}")
        log.info("job_notified", notify_task=notify["task"], notify_queue=notify["queue"],
                 state=meta.state)
    if meta.state != JobState.SUCCEEDED:  # a succeeded job has logged job_done already
        log.warning("job_ended", state=meta.state, error=meta.error)
    metrics.record_job_end(meta.tables, meta.state)
    store.mark_ended(job_id)
    return True
