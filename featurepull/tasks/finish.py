"""Finishing a job once its last shard is done: publish the output, store the summary, once;
and the summary a job's end notification carries.
"""

from __future__ import annotations

import heapq
import os
import socket
import time
from typing import Any

import structlog

from featurepull.config import Settings
from featurepull.dynamo.plan import nothing_found_warning
from featurepull.tasks.confine import Bounds
from featurepull.tasks.output import discard_staged_output, publish_output, staged_output
from featurepull.tasks.requests import JobRequest, job_settings
from featurepull.tasks.shards import shard_totals
from featurepull.tasks.store import JobMeta, JobStore

log = structlog.get_logger(__name__)


def job_totals(store: JobStore, meta: JobMeta,
               per_shard: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """ReadStats summed over shards (their stored stats, unless given), and the slowest
    shards."""
    if per_shard is None:
        per_shard = store.all_stats(meta.job_id)
    total = shard_totals(per_shard)
    total.merge(shard_totals(store.all_scan_stats(meta.job_id)))  # a scan job's scan tasks
    slowest = heapq.nlargest(3, per_shard.items(), key=lambda item: item[1]["seconds"])
    read = total.to_dict()
    # Shards overlap in time: their summed seconds are work done, not the job's duration.
    read["shard_seconds"] = read.pop("seconds")
    del read["rows_per_s"], read["rcu_per_s"]  # per job second, in finish_job
    return {
        "read": read,
        "slowest_shards": [{"shard": n, "seconds": s["seconds"], "rows": s["keys"],
                            "retries": s["retries"], "throttles": s["throttles"]}
                           for n, s in slowest],
    }


def end_summary(store: JobStore, meta: JobMeta) -> dict[str, Any]:
    """What a job's end notification carries: ``job_id``, ``state``, ``rows``, ``output``,
    ``error``, then the stored summary of a succeeded job, or for a failed or cancelled one
    the read statistics of the shards it finished."""
    head = {"job_id": meta.job_id, "state": meta.state, "rows": meta.rows,
            "output": meta.output, "error": meta.error}
    if meta.summary is not None:
        return {**meta.summary, **head}
    return {**head, "shards": meta.shards, "shards_done": store.done_count(meta.job_id),
            **job_totals(store, meta)}


def finish_job(job_id: str, settings: Settings, store: JobStore) -> dict[str, Any] | None:
    """Publish the ordered output (if any) and store the summary, once."""
    meta = store.meta(job_id)
    if meta.terminal:
        # A finisher redelivered after the job ended (or a job cancelled once every shard
        # was done): whatever the shards staged is no longer needed.
        discard_staged_output(job_id, settings, store)
        return None
    if store.done_count(job_id) < meta.shards:
        return None
    Bounds.for_jobs(settings).check_output(meta.request.request.get("output"))
    if not store.begin_finish(job_id):
        return None
    request = JobRequest(**meta.request.request)
    effective = job_settings(settings, request)
    written = 0
    previous = store.note_finisher(job_id, f"{socket.gethostname()}:{os.getpid()}")
    # One sign of life covers the whole write: the finisher's time limit
    # (jobs.shard_time_limit_s) is below the watchdog's idle limit (visibility_timeout_s).
    store.heartbeat(job_id, "finishing")
    per_shard = store.all_stats(job_id)  # read once (final: every shard is done)
    publishing = time.monotonic()
    if request.output:
        written = publish_output(job_id, meta, effective, store, previous, per_shard)
    publish_seconds = time.monotonic() - publishing
    seconds = time.time() - meta.created
    summary = {
        "job_id": job_id,
        "rows": meta.rows,
        "shards": meta.shards,
        "output": request.output,
        "rows_written": written if request.output else None,
        "seconds": round(seconds, 3),
        "publish_seconds": round(publish_seconds, 3),
        "rows_per_s": round(meta.rows / seconds, 1) if seconds > 0 else 0.0,
        "redelivered_shards": sum(n > 1 for n in store.attempts(job_id).values()),
        **job_totals(store, meta, per_shard),
    }
    plan = meta.request.read_plan
    summary["read_mode"] = plan["mode"] if plan else "batch-get"
    if plan:
        summary["read_plan"] = plan
    read = summary["read"]
    read["rcu_per_s"] = round(read["consumed_rcu"] / seconds, 1) if seconds > 0 else 0.0
    warning = nothing_found_warning(meta.request.model_dump(), meta.request.table, read["keys"],
                                    read["found"])
    if warning:
        summary["warnings"] = [warning]
        log.warning("nothing_found", message=warning)
    if request.output:
        # Before the job is marked succeeded, so that nothing staged is left once it is: a
        # finisher killed here is retried, and knows the output as its own without them.
        store.drop_rows(job_id, meta.shards)
        staged_output(job_id, meta, effective).discard()
    store.succeed(job_id, summary)
    log.info("job_done", rows=meta.rows, shards=meta.shards, output=request.output,
             rows_written=summary["rows_written"], seconds=summary["seconds"],
             found=read["found"], missing=read["missing"], retries=read["retries"],
             throttles=read["throttles"], rcu=read["consumed_rcu"],
             rcu_per_s=read["rcu_per_s"], budget_rcu_per_s=read["budget_rcu_per_s"],
             budget_wait_s=read["budget_wait_s"],
             in_flight=f"{read['concurrency_min']}-{read['concurrency_max']}")
    return summary
