"""What Flower, or any Celery event monitor, shows of a job: a short argument summary for each
task message, and a reading shard's progress as state ``PROGRESS``.

Monitors and worker logs show a message's ``argsrepr``, not its arguments, when the sender set
one. Ours name the job, shard, table and entity count — never entity values, and never a URL's
password or query string. Monitors build task states from events, not from the result backend,
so progress goes out twice: ``update_state`` for ``AsyncResult`` readers, and a
``task-progress`` event, which Celery's event state turns into state ``PROGRESS`` (an unknown
``task-<name>`` event becomes state ``<NAME>``, its fields merged into the task).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from featurepull.redact import redact_url
from featurepull.tasks.store import JobMeta, JobStore

PROGRESS_STATE = "PROGRESS"
PROGRESS_EVENT = "task-progress"
# Longer names and summaries are cut in the middle, so a URL keeps its scheme and file name.
MAX_NAME_CHARS = 60
MAX_SUMMARY_CHARS = 190


def _short(text: str, limit: int = MAX_NAME_CHARS) -> str:
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head):]}"


def reference(value: object) -> str:
    """A path or URL fit to show: no user, password or query string, at most 60 characters.

    Anything but a string (entities sent inline, which submit refuses) shows as its type.
    """
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    return _short(redact_url(value, bare=True) if "://" in value else value)


def _shard_rows(meta: JobMeta, shard: int) -> int | None:
    size = meta.shard_size
    if size is None:
        return None  # a job stored before shard_size was recorded
    return max(0, min(size, meta.rows - shard * size))


def shard_args(meta: JobMeta, shard: int) -> str:
    """``argsrepr`` of ``featurepull.read_shard``: shard of shards, job, table, entities.

    The shard comes first: it is what tells a job's shards apart in a narrow column.
    """
    rows = _shard_rows(meta, shard)
    text = (f"shard={shard}/{meta.shards} job={meta.job_id} "
            f"table={_short(meta.table)}")
    return text + (f" entities={rows}" if rows is not None else "")


def scan_args(meta: JobMeta, part: int) -> str:
    """``argsrepr`` of ``featurepull.scan_segments``: scan task of tasks, job, table."""
    tasks = (meta.request.read_plan or {}).get("scan_tasks", "?")
    return f"scan_task={part}/{tasks} job={meta.job_id} table={_short(meta.table)}"


def finish_args(meta: JobMeta) -> str:
    """``argsrepr`` of ``featurepull.finish_job``: job, table, shards, entities, output."""
    output = meta.output
    return _short(f"job={meta.job_id} table={_short(meta.table)} "
                  f"shards={meta.shards} entities={meta.rows} "
                  f"output={reference(output) if output else 'redis'}", MAX_SUMMARY_CHARS)


def submit_args(request: Mapping[str, Any]) -> str:
    """``argsrepr`` of ``featurepull.submit_job``: table (a Feast-reference request, which
    names none: its feature service or views), feature count, entities reference.

    Safe for any request, valid or not: it only reads what is there.
    """
    features = request.get("features")
    count = len(features) if isinstance(features, list | tuple) else "?"
    text = f"{_read_from(request)} features={count}"
    if request.get("project"):
        text += f" project={_short(str(request['project']))}"
    text += f" entities={reference(request.get('entities'))}"
    if request.get("output"):
        text += f" output={reference(request['output'])}"
    if request.get("scorer"):
        text += f" scorer={_short(str(request['scorer']))}"
    return _short(text, MAX_SUMMARY_CHARS)


def _read_from(request: Mapping[str, Any]) -> str:
    """What a request reads: its table, else its Feast references (the tables are known only
    once the registry is read, when the job is created)."""
    if not request.get("table"):
        if request.get("feature_service"):
            return f"feature_service={_short(str(request['feature_service']))}"
        features = request.get("features")
        views = [name.split(":")[0] for name in features if isinstance(name, str) and ":" in name
                 ] if isinstance(features, list | tuple) else []
        if views:
            return f"views={_short(','.join(dict.fromkeys(views)))}"
    return f"table={_short(str(request.get('table')))}"


class ShardProgress:
    """A shard's progress callback: state ``PROGRESS`` with ``done``/``total`` (this shard's
    unique keys answered) and ``shards_done``/``shards`` (the whole job, as ``featurepull
    status`` counts it)."""

    def __init__(self, task: Any, store: JobStore, job_id: str, shard: int) -> None:
        self.task = task
        # Taken here, on the task's thread: Celery's ``task.request`` is the thread's own,
        # and the reports are sent from a thread beside the read (featurepull.tasks.reports).
        self.request = task.request
        self.store = store
        self.job_id = job_id
        self.shard = shard
        self._shards: int | None = None

    def __call__(self, done: int, total: int,
                 capacity: Mapping[str, Any] | None = None) -> None:
        if self._shards is None:
            self._shards = self.store.meta(self.job_id).shards
        info = {"job_id": self.job_id, "shard": self.shard, "done": done, "total": total,
                "shards_done": self.store.done_count(self.job_id), "shards": self._shards,
                **(capacity or {})}
        # What task.update_state and task.send_event do, with the task's request given.
        request, app = self.request, self.task.app
        self.task.backend.store_result(request.id, info, PROGRESS_STATE, request=request)
        # Flower shows a task's result column but not custom event fields: while the shard
        # reads, that column holds its progress; task-succeeded replaces it with the result.
        text = f"{done:,}/{total:,} keys; job {info['shards_done']}/{self._shards} shards done"
        if capacity:
            budget = capacity["budget_rcu_per_s"]
            text += (f"; {capacity['rcu_per_s']:,.0f} RCU/s"
                     + (f" of {budget:,.0f} budget, {capacity['budget_wait_s']:.1f}s waited"
                        if budget else ", no budget")
                     + f"; {capacity['in_flight']} in flight")
        with app.events.default_dispatcher(hostname=request.hostname) as dispatcher:
            dispatcher.send(PROGRESS_EVENT, uuid=request.id, retry=True,
                            retry_policy=app.conf.task_publish_retry_policy, result=text,
                            **info)
