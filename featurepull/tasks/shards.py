"""Reading one shard of a job: the per-process reader cache, :func:`run_shard`, and the
read statistics a shard logs and stores.

``featurepull.tasks.celery_tasks`` wraps :func:`run_shard` as the ``read_shard`` task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import structlog

from featurepull._recently_used import RecentlyUsed
from featurepull.config import Settings
from featurepull.dynamo import BatchReader, ReadStats
from featurepull.dynamo.found import found_mask
from featurepull.dynamo.layouts import unique_keys
from featurepull.dynamo.plan import carried_keys, checking_table, layout_from_spec
from featurepull.dynamo.views import ViewsReader
from featurepull.errors import RunFailed
from featurepull.tasks import metrics, scans
from featurepull.tasks.capacity import redis_pacers
from featurepull.tasks.confine import Bounds
from featurepull.tasks.feast_views import (
    VIEWS,
    logged_tables,
    shard_table,
    spec_tables,
    views_reader,
)
from featurepull.tasks.output import discard_staged_output, staged_output
from featurepull.tasks.reports import Reports
from featurepull.tasks.requests import JobRequest, job_settings
from featurepull.tasks.scoring import apply_scorer, registered_scorer
from featurepull.tasks.shard_keys import shard_keys
from featurepull.tasks.store import JobState, JobStore, UnknownJob

log = structlog.get_logger(__name__)


# A reading shard reports its progress (Redis, and Celery's PROGRESS state and event) at its
# first answer, then at most this often, and at its last; from a thread beside the read
# (featurepull.tasks.reports), which the read's event loop never waits for.
PROGRESS_EVERY_S = 0.5
# keys answered, of the shard's unique keys, and the read's capacity fields (capacity_fields)
Report = Callable[[int, int, dict[str, Any]], None]


class JobStopped(RunFailed):
    """The job failed or was cancelled elsewhere; this shard stops early."""


# The readers a process keeps, the most recently used: a job's request is part of its
# spec, so each job has a reader of its own, and a long-lived worker would keep every one.
READERS_KEPT = 8
_readers: RecentlyUsed[tuple[str, str], BatchReader | ViewsReader] = RecentlyUsed(READERS_KEPT)


def _reader(table: str, spec: dict[str, Any], settings: Settings, store: JobStore
            ) -> BatchReader | ViewsReader:
    # One reader per table and settings in each process: it keeps the table's checked
    # key schema, so a worker describes each table once, not once per shard — not at all
    # when the spec carries the schema its submitter checked (carried_keys). Its read
    # budget, if any, is the fleet's bucket for the table in Redis. Keyed by the whole
    # spec (a views job's plan, the carried schemas too): jobs that differ in anything
    # never share one, so what one job carries never reaches another's reader.
    # A reader dropped holds nothing to close: its client is the process's shared one
    # (featurepull.dynamo.client), its pacer uses the store's connection pool, and each
    # read opens and closes its own transport.
    def build() -> BatchReader | ViewsReader:
        if VIEWS in spec:  # Feast references: every view's table
            return views_reader(spec, settings, redis_pacers(store.redis))
        return BatchReader(table, layout_from_spec(spec, settings), settings.dynamodb,
                           pacers=redis_pacers(store.redis), carried=carried_keys(spec, table))

    return _readers.get((table, settings.model_dump_json() + repr(sorted(spec.items()))),
                        build)


def reset_process_state() -> None:
    """Forget per-process readers and scanners (after fork: a child builds its own)."""
    _readers.clear()
    scans.reset_scanners()


def stop_if_ended(store: JobStore, job_id: str) -> None:
    """Raise JobStopped if the job failed or was cancelled meanwhile, UnknownJob if it is
    gone from Redis (restarted without persistence): a running task stops there."""
    stop_if(store.state(job_id), job_id)


def stop_if(state: JobState | None, job_id: str) -> None:
    """:func:`stop_if_ended` for the job's ``state`` as just read."""
    if state is None:
        raise UnknownJob(job_id)
    if state in (JobState.FAILED, JobState.CANCELLED):
        raise JobStopped(job_id)


def run_shard(job_id: str, shard: int, settings: Settings, store: JobStore,
              report: Report | None = None, worker: str = "") -> bool:
    """Read one shard and store its rows; True when this completed the last shard."""
    meta, already_done = store.meta_and_done(job_id, shard)
    if meta.terminal:
        log.info("shard_skipped", reason=f"the job is {meta.state}")
        return False
    if already_done:  # a redelivered shard that already finished
        log.info("shard_skipped", reason="already done (a redelivered message)")
        return store.done_count(job_id) == meta.shards
    if scans.scan_pending(meta, store):  # sent before the job's scan ended (a re-send)
        log.info("shard_skipped", reason="the job's scan tasks are not all done; the last "
                 "one sends every shard")
        return False
    spec = meta.request.model_dump()  # the layout helpers read its fields by name
    request = JobRequest(**spec["request"])
    # Before any request or file: a job stored without submit_job (or forged in Redis) is
    # bounded too — its endpoint, and its output, beside which its keys and parts are staged.
    Bounds.for_jobs(settings).check_job(request.output, request.dynamodb)
    effective = job_settings(settings, request)
    keys_table = shard_keys(job_id, shard, meta, effective, store)
    if keys_table is None:
        log.info("shard_skipped", reason="done meanwhile (a redelivered message), or the "
                                         "job ended")
        return store.done_count(job_id) == meta.shards
    # The job's first shards mark it running too (it never goes back to queued).
    store.count_attempt(job_id, shard, worker, mark_running=meta.state == JobState.QUEUED)
    # The keys as stored, in Arrow: hashed and put back in the output from the columns, with
    # no Python value per row (a layout or table that must look at each value converts).
    columns: dict[str, Any] = {name: keys_table.column(name) for name in spec["key_columns"]}
    if VIEWS in spec:
        columns = {name: column.to_pylist() for name, column in columns.items()}
    reader = _reader(spec["table"], spec, effective, store)
    # Imported before reading: a worker without the scorer fails the job without reading.
    scorer = registered_scorer(request.scorer, settings) if request.scorer else None
    # A process's first shard of a table checks it while the keys are hashed: against the
    # key schema the job carries (no request), else with a DescribeTable whose round trip
    # is then off the way to its first request. (A scan job's shards read no table; a
    # failed check is the read's to raise, as it was.)
    # The keys of the read's first requests are hashed here, the rest by the read between
    # its loop's turns while they are in flight (keys_ahead; no thread: it would take turns
    # at the GIL and the cores with the loop). A scan shard joins every key at once.
    scan = scans.is_scan(meta)
    ahead = 0 if scan else effective.dynamodb.max_read_workers * effective.dynamodb.batch_size
    with nullcontext() if scan else checking_table(reader, raising=False):
        keys, positions = unique_keys(reader.layout, columns, f"job {job_id} shard {shard}",
                                      ahead)
    unique = len(keys) if positions is not None else len(set(keys))
    log.info("shard_start", **logged_tables(spec), rows=keys_table.num_rows, unique_keys=unique,
             shards=meta.shards, threads=effective.dynamodb.max_read_workers)
    answered = 0
    last = 0.0
    rows = keys_table.num_rows

    def send(item: tuple[int, dict[str, Any]]) -> None:  # on the reports' thread
        count, capacity = item
        # In entity rows, as the job's total (its repeated keys too): the rows of the
        # distinct keys answered, taken in proportion until the shard is done.
        stop_if(store.report_progress(job_id, shard, count * rows // unique), job_id)
        if report is not None:
            report(count, unique, capacity)

    reports: Reports[tuple[int, dict[str, Any]]] = Reports(send, f"featurepull-progress-{shard}")

    def progress(n: int) -> None:  # in the read's event loop: it must not wait
        nonlocal answered, last
        reports.check()  # a report raised (the job ended, Redis is gone): the read stops
        answered += n
        now = time.monotonic()
        if now - last < PROGRESS_EVERY_S and answered < unique:
            return
        last = now
        reports.post((answered, capacity_fields(reader.reading, now - started)))

    started = time.monotonic()
    tables = spec_tables(spec)
    with reports:  # (a scan shard reads nothing: its thread starts and ends idle)
        if scan:  # the rows the job's scan tasks matched, joined here
            by_row = keys if positions is None else [keys[p] for p in positions.to_pylist()]
            result = scans.scanned_result(store, meta, shard, by_row)
        else:
            with metrics.shard_running(tables):
                result = reader.read(keys, request.features, progress=progress,
                                     row_offset=shard * spec["shard_size"],
                                     allow_missing_features=request.allow_missing_features,
                                     **({"positions": positions} if positions is not None
                                        else {}))
            result.stats.read_mode = scans.BATCH_GET  # as a scan shard's stats name theirs
        table = shard_table(spec, columns, result.rows, request.features,
                            first_row=shard * spec["shard_size"] + 1)
        stats = result.stats.to_dict()
        stats["latencies_ms"] = [round(v, 2) for v in result.stats.latencies_ms]
        if scorer is not None:
            scoring = time.monotonic()
            table = apply_scorer(table, found_mask(result.rows), scorer,
                                 spec["key_columns"], with_features=request.with_features)
            stats["score_seconds"] = round(time.monotonic() - scoring, 3)
    # Out of the block, the last report (its look at the job's state) is done: before the
    # part is written and the shard stored. It was sent while the table was built.
    if request.output:
        # Into a part file beside the output: Redis holds no rows of a job with an output.
        check = staged_output(job_id, meta, effective).write_part(shard, table)
        if check is not None:  # how the finisher tells the part it wrote from a torn one
            stats["part_crc32"] = check
    done, state = store.shard_stored(job_id, shard, table, stats,
                                     keep_rows=not request.output, progress=rows)
    if scan:
        store.drop_scan_partitions(job_id, shard, scans.scan_tasks(meta))
    if request.output and state in (JobState.FAILED, JobState.CANCELLED):
        discard_staged_output(job_id, settings, store)  # it ended while this part was written
    scored = {"scorer": scorer.name, "score_seconds": stats["score_seconds"]} if scorer else {}
    metrics.record_shard(result.by_table or {tables[0]: result.stats},
                         time.monotonic() - started)
    log.info("shard_done", **shard_log_fields(result.stats), **scored, shards_done=done,
             shards=meta.shards)
    return done == meta.shards


def shard_log_fields(stats: ReadStats) -> dict[str, Any]:
    """The fields of a shard's ``shard_done`` line: what an operator looks for first."""
    return {
        "rows": stats.keys,
        "unique_keys": stats.unique_keys,
        "found": stats.found,
        "missing": stats.missing,
        "requests": stats.requests,
        "retries": stats.retries,
        "unprocessed_retries": stats.unprocessed_retries,
        "throttles": stats.throttles,
        "server_errors": stats.server_errors,
        "connection_errors": stats.connection_errors,
        "rcu": round(stats.consumed_rcu, 3),
        **capacity_fields(stats, stats.seconds),
        "latency_p50_ms": round(stats.latency_p50_ms, 2),
        "latency_p99_ms": round(stats.latency_p99_ms, 2),
        "seconds": round(stats.seconds, 3),
        "rows_per_s": round(stats.rows_per_s, 1),
    }


def capacity_fields(stats: ReadStats | None, seconds: float) -> dict[str, Any]:
    """What a read spends of the table's capacity: consumed RCU/s, the budget (0: none),
    seconds held back for it, and the range of requests in flight (AIMD)."""
    if stats is None:
        return {}
    return {
        "rcu_per_s": round(stats.consumed_rcu / seconds, 1) if seconds > 0 else 0.0,
        "budget_rcu_per_s": round(stats.budget_rcu_per_s, 1),
        "budget_wait_s": round(stats.budget_wait_s, 3),
        "in_flight": f"{stats.concurrency_min}-{stats.concurrency_max}",
    }


def shard_totals(per_shard: Mapping[int, dict[str, Any]], latencies: bool = True
                 ) -> ReadStats:
    """The stored stats of shards, summed (without their latencies when ``latencies`` is
    False: ``featurepull status`` of a job of thousands of shards needs none of them)."""
    total = ReadStats()
    for stats in per_shard.values():
        latencies_ms = stats.get("latencies_ms", []) if latencies else []
        fields = {k: v for k, v in stats.items() if k in ReadStats.__dataclass_fields__}
        total.merge(ReadStats(**{**fields, "latencies_ms": latencies_ms}))
    return total
