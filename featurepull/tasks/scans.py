"""Scan jobs: a job whose keys cover most of its table reads the table with a parallel Scan
instead of BatchGetItem, and builds its shards' rows from what the Scan matched.

How a scan job runs (docs/fleet.md, "Scan jobs"):

    create_job       stores the entity shards as for any job, and the job's read plan: the
                     mode, why, T segments in S scan tasks, each worth scanning after
                     loading every key of the job, at most one per entity shard
                     (:func:`plan_job_read`)
    scan_segments p  S tasks; task p scans segments [p*T/S, (p+1)*T/S) of T, keeps the items
                     whose key is one of the job's and stores them by entity shard, as
                     (position in the shard, row) (:func:`run_scan_part`); the last one to
                     finish enqueues read_shard for every entity shard
    read_shard n     builds shard n's rows from those partitions with ``join``
                     (:func:`scanned_result`), then stores or writes them as every shard does

So the output, its part files, the finisher, the watchdog and cancelling are those of any
job. A scan task holds every key of the job (key -> where it sits in the entity shards):
about :data:`MAP_BYTES_PER_KEY` bytes of memory per unique key, so a job over
``jobs.max_scan_keys`` unique keys is never read with a Scan.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from featurepull.config import Settings
from featurepull.dynamo import ReadStats
from featurepull.dynamo.layouts import Layout, Row
from featurepull.dynamo.plan import layout_from_spec
from featurepull.dynamo.planner import MAX_SEGMENTS
from featurepull.dynamo.planner import plan_read as plan_read_mode
from featurepull.dynamo.reader import ReadResult
from featurepull.errors import InputError
from featurepull.tasks._lazy_log import LazyLogger
from featurepull.tasks.confine import Bounds
from featurepull.tasks.feast_views import logged_tables, spec_tables
from featurepull.tasks.requests import JobRequest, job_settings
from featurepull.tasks.store import JobMeta, JobStore

if TYPE_CHECKING:
    from featurepull.dynamo.scan import SegmentScanner

# A submit imports this module to plan its read: the scan task's own modules (the scanner
# and its loop, rows_to_table, the metrics) are imported where a worker runs one.
log = LazyLogger(__name__)  # structlog at the first line
logger = logging.getLogger(__name__)

SCAN = "scan"
BATCH_GET = "batch-get"
# Measured for Feast keys (32-character hex ids) in a dict of key -> int: the key object,
# its dict slot and the int. A scan task holds this for every unique key of its job.
MAP_BYTES_PER_KEY = 150
# Table bytes a scan task scans per key of its job: building the key map took ~3 us a key,
# scanning ~15 us per 100 bytes of items (one busy core, Feast keys): the map is about a
# fifth of the task.
SCAN_BYTES_PER_KEY = 100
# What a scan task that ran past jobs.shard_soft_time_limit_s says to change: what sized it
# (plan_job_read), not the entity shards, which only bound how many tasks there are.
SCAN_TASK_TOO_LONG = ("lower jobs.scan_task_bytes (a scan task scans at least that much of "
                      f"the table, and {SCAN_BYTES_PER_KEY} bytes per unique key of its job), "
                      "read the job with read_mode batch-get, or raise "
                      "jobs.shard_soft_time_limit_s")
# Where a key sits: its entity shard in the high bits, its first position there in the low.
_POSITION_BITS = 32
_POSITION_MASK = (1 << _POSITION_BITS) - 1
# The position column of a stored partition: "" is no feature's name (names are non-empty).
_POSITION = ""

KeyMap = dict[Hashable, "int | tuple[int, ...]"]


class ScanRefused(InputError, ValueError):
    """A job that asked for read_mode scan and cannot be read with one (too many keys for a
    scan task to hold, or Feast references, which read several tables)."""


def plan_job_read(settings: Settings, table: str, description: Mapping[str, Any] | None,
                  unique_keys: int, shards: int, references: bool = False) -> dict[str, Any]:
    """The job's read plan (stored in its record): ``mode``, ``requested``, ``reason`` and,
    for a scan, its ``total_segments`` and ``scan_tasks``; the estimates when made.

    ``auto`` picks the cheaper read (``featurepull.dynamo.planner``), except that a job over
    ``jobs.max_scan_keys`` unique keys, or naming Feast references, reads with BatchGetItem;
    ``scan`` asked for there is refused, naming the limit."""
    asked = settings.dynamodb.read_mode
    if asked == BATCH_GET:
        return {"mode": BATCH_GET, "requested": asked,
                "reason": "read_mode=batch-get (requested)"}
    limit = settings.jobs.max_scan_keys
    why = None
    if references:
        why = "a job naming Feast references reads several views' tables; a Scan reads one"
    elif unique_keys > limit:
        why = (f"the job has {unique_keys:,} or more unique keys, over jobs.max_scan_keys "
               f"({limit:,}): "
               f"each scan task holds every key (~{MAP_BYTES_PER_KEY} bytes each)")
    if why is not None:
        if asked == SCAN:
            raise ScanRefused(f"read_mode scan: {why}; use read_mode batch-get or auto, or "
                              "split the job" + ("" if references else
                                                 ", or raise jobs.max_scan_keys if the "
                                                 "workers have the memory"))
        return {"mode": BATCH_GET, "requested": asked, "reason": f"read_mode=batch-get: {why}",
                "unique_keys": unique_keys}
    assert description is not None  # a one-table job: create_job described the table
    plan = plan_read_mode(description, unique_keys, settings.dynamodb, table=table)
    chosen: dict[str, Any] = {
        "mode": plan.mode, "requested": asked, "reason": plan.reason,
        "unique_keys": unique_keys, "batch_get_rcu": round(plan.batch_get_rcu, 1),
        "scan_rcu": round(plan.scan_rcu, 1),
    }
    if plan.mode == SCAN:
        # Each scan task first builds the job's key map, so it scans enough table to pay for
        # it: SCAN_BYTES_PER_KEY per unique key, and at least jobs.scan_task_bytes; at most
        # one task per entity shard.
        size = float(description.get("TableSizeBytes", 0) or 0)
        share = max(settings.jobs.scan_task_bytes, unique_keys * SCAN_BYTES_PER_KEY)
        tasks = max(1, min(shards, math.ceil(size / share)))
        # A segment has one page in flight: enough of them that each task keeps
        # max_read_workers pages in flight, as a shard's reader keeps its requests.
        total = min(MAX_SEGMENTS, max(plan.total_segments,
                                      tasks * settings.dynamodb.max_read_workers))
        # What the scan tasks' progress is measured against (a count refreshed about every
        # six hours: an estimate).
        chosen.update(total_segments=total, scan_tasks=min(tasks, total),
                      table_items=int(description.get("ItemCount", 0) or 0))
    return chosen


def early_plan(settings: Settings, spec: dict[str, Any], description: Mapping[str, Any] | None,
               rows: int, shards: int, references: bool = False) -> dict[str, Any] | None:
    """The job's read plan when it can be made before its keys are counted, so each shard
    is sent as soon as it is stored; None when only the count of unique keys can decide.

    Batch-get asked for, or Feast references: the mode is known. ``auto``: the job's entity
    rows bound its unique keys from above, and more keys only make BatchGetItem dearer
    against one Scan; so if the planner picks batch-get for ``rows`` keys, or ``rows`` is
    over ``jobs.max_scan_keys``, it is batch-get whatever the count."""
    asked = settings.dynamodb.read_mode
    if asked == BATCH_GET or references:
        return _logged(spec, plan_job_read(settings, spec.get("table", ""), description, 0,
                                           shards, references))
    if asked == SCAN:
        return None
    limit = settings.jobs.max_scan_keys
    if rows > limit:
        return _logged(spec, {
            "mode": BATCH_GET, "requested": asked, "rows": rows,
            "reason": f"read_mode=batch-get: the job has {rows:,} entity rows, over "
                      f"jobs.max_scan_keys ({limit:,}): a scan task holds every key of its job "
                      f"(~{MAP_BYTES_PER_KEY} bytes each)"})
    bound = plan_job_read(settings, spec["table"], description, rows, shards)
    if bound["mode"] != BATCH_GET:
        return None
    bound["rows"] = bound.pop("unique_keys")  # its estimates are for every row as a key
    return _logged(spec, bound)


def late_plan(settings: Settings, spec: dict[str, Any], description: Mapping[str, Any] | None,
              unique_keys: int, shards: int) -> dict[str, Any]:
    """The job's read plan from its count of unique keys (every shard stored)."""
    return _logged(spec, plan_job_read(settings, spec["table"], description, unique_keys,
                                       shards))


def _logged(spec: Mapping[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    # Standard logging: quiet in a submitting command (its stdout may be --json), shown in a
    # worker creating the job (featurepull.submit_job, a schedule), as the planner's line is.
    logger.info("read_plan %s: %s", ", ".join(spec_tables(spec)), plan_line(plan),
                extra={**logged_tables(spec), "read_mode": plan["mode"]})
    return plan


class DistinctKeys:
    """Counts a job's distinct keys shard by shard, holding at most about ``limit`` of them
    (duplicates dropped whenever the rows held pass it): past ``limit`` distinct keys the
    count is only "over", which is all the plan needs."""

    def __init__(self, columns: Sequence[str], limit: int) -> None:
        self.columns = list(columns)
        self.limit = limit
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.over = False

    def add(self, table: pa.Table) -> None:
        if self.over:
            return
        self.tables.append(table.select(self.columns))
        self.rows += table.num_rows
        if self.rows > self.limit:
            distinct = _distinct(self.tables, self.columns)
            self.tables, self.rows = [distinct], distinct.num_rows
            self.over = self.rows > self.limit
            if self.over:  # the count so far stays: "this many or more"
                self.tables = []

    def count(self) -> int:
        """The distinct keys seen (once over the limit, those counted when it was passed)."""
        return self.rows if self.over else count_unique(self.tables, self.columns)


def _distinct(tables: Sequence[pa.Table], columns: Sequence[str]) -> pa.Table:
    table = pa.concat_tables(tables)
    try:
        return table.group_by(list(columns)).aggregate([])
    except pa.ArrowNotImplementedError:  # a key type Arrow cannot group: keep them all
        return table


def count_unique(tables: Sequence[pa.Table], columns: Sequence[str]) -> int:
    """How many distinct key tuples the entity shards hold (Arrow's group-by, no Python
    objects per row)."""
    if not tables:
        return 0
    table = pa.concat_tables(tables).select(list(columns))
    try:
        return int(table.group_by(list(columns)).aggregate([]).num_rows)
    except pa.ArrowNotImplementedError:  # a key type Arrow cannot group (null, say)
        return len(set(zip(*(table.column(name).to_pylist() for name in columns),
                           strict=True)))


def is_scan(meta: JobMeta) -> bool:
    """Whether the job reads with a Scan."""
    plan = meta.request.read_plan
    return plan is not None and plan.get("mode") == SCAN


def scan_tasks(meta: JobMeta) -> int:
    """How many scan tasks the job has (0: not a scan job)."""
    plan = meta.request.read_plan
    return int(plan["scan_tasks"]) if plan and plan.get("mode") == SCAN else 0


def segments_of(plan: Mapping[str, Any], part: int) -> list[int]:
    """The segments scan task ``part`` scans: an even share of ``total_segments``."""
    total, tasks = int(plan["total_segments"]), int(plan["scan_tasks"])
    return list(range(part * total // tasks, (part + 1) * total // tasks))


def scan_pending(meta: JobMeta, store: JobStore) -> list[int]:
    """The scan tasks of a scan job not done yet (empty: its shards can be built)."""
    tasks = scan_tasks(meta)
    if not tasks:
        return []
    done = store.scan_parts_done(meta.job_id)
    return [part for part in range(tasks) if part not in done]


_scanners: dict[str, SegmentScanner] = {}


def _scanner(spec: Mapping[str, Any], settings: Settings, store: JobStore) -> SegmentScanner:
    # One per table and settings in a process, as readers are: the table is described once.
    from featurepull.dynamo.scan import SegmentScanner
    from featurepull.tasks.capacity import redis_pacers

    key = settings.model_dump_json() + repr(sorted(spec.items()))
    scanner = _scanners.get(key)
    if scanner is None:
        scanner = SegmentScanner(spec["table"], layout_from_spec(spec, settings),
                                 settings.dynamodb, pacers=redis_pacers(store.redis))
        _scanners[key] = scanner
    return scanner


def reset_scanners() -> None:
    """Forget per-process scanners (after fork: a child builds its own)."""
    _scanners.clear()


def key_map(store: JobStore, meta: JobMeta, layout: Layout, settings: Settings) -> KeyMap:
    """Every unique key of the job -> where it sits: ``shard << 32 | position`` of its first
    row in each entity shard that holds it (a tuple when several do)."""
    from featurepull.tasks.shard_keys import shard_keys  # it imports tasks.output

    where: KeyMap = {}
    for shard in range(meta.shards):
        keys_table = shard_keys(meta.job_id, shard, meta, settings, store)
        if keys_table is None:  # the shard is done (or the job ended): its rows are built
            continue
        columns = {name: keys_table.column(name).to_pylist()
                   for name in meta.request.key_columns}
        keys = layout.keys_for(columns, f"job {meta.job_id} shard {shard}")
        base = shard << _POSITION_BITS
        for position, key in enumerate(keys):
            held = where.get(key)
            if held is None:
                where[key] = base | position
            elif isinstance(held, int):
                if held >> _POSITION_BITS != shard:
                    where[key] = (held, base | position)
            elif held[-1] >> _POSITION_BITS != shard:
                where[key] = (*held, base | position)
    return where


def partitions(found: Mapping[Hashable, Row], where: KeyMap,
               features: Sequence[str]) -> dict[int, pa.Table]:
    """What a scan task matched, by entity shard: a table of (position, row columns)."""
    from featurepull.io import rows_to_table

    positions: dict[int, list[int]] = {}
    rows: dict[int, list[Row]] = {}
    for key, row in found.items():
        held = where[key]
        for code in (held,) if isinstance(held, int) else held:
            shard = code >> _POSITION_BITS
            positions.setdefault(shard, []).append(code & _POSITION_MASK)
            rows.setdefault(shard, []).append(row)
    return {shard: rows_to_table({_POSITION: positions[shard]}, rows[shard], features,
                                 source=f"shard {shard}")
            for shard in positions}


def run_scan_part(job_id: str, part: int, settings: Settings, store: JobStore,
                  worker: str = "") -> bool:
    """Scan one scan task's segments and store what matched the job's keys; True when this
    completed the job's last scan task (its entity shards can be built now)."""
    from featurepull.tasks.shards import stop_if_ended  # shards imports this module

    meta = store.meta(job_id)
    if meta.terminal:
        log.info("scan_skipped", scan_task=part, reason=f"the job is {meta.state}")
        return False
    plan = meta.request.read_plan or {}
    tasks = scan_tasks(meta)
    if store.is_scan_done(job_id, part):
        log.info("scan_skipped", scan_task=part, reason="already done (a redelivered message)")
        return store.scan_done_count(job_id) == tasks
    spec = meta.request.model_dump()
    request = JobRequest(**spec["request"])
    Bounds.for_jobs(settings).check_endpoint(request.dynamodb.get("endpoint_url"))
    store.mark_running(job_id)
    store.note_scan_owner(job_id, part, worker)
    effective = job_settings(settings, request)
    scanner = _scanner(spec, effective, store)
    where = key_map(store, meta, scanner.layout, effective)
    segments = segments_of(plan, part)
    log.info("scan_start", table=spec["table"], scan_task=part, scan_tasks=tasks,
             segments=f"{segments[0]}-{segments[-1]}" if segments else "none",
             total_segments=plan["total_segments"], unique_keys=len(where))
    last, scanned = 0.0, 0

    def progress(items: int) -> None:
        nonlocal last, scanned
        scanned += items
        now = time.monotonic()
        if now - last >= 0.5:
            last = now
            stop_if_ended(store, job_id)
            store.set_scan_progress(job_id, part, scanned)

    from featurepull.tasks import metrics

    started = time.monotonic()
    with metrics.shard_running([spec["table"]]):
        result = scanner.scan(segments, int(plan["total_segments"]), request.features, where,
                              progress=progress,
                              allow_missing_features=request.allow_missing_features)
    # What the task read; the entity shards count the keys, found and missing.
    result.stats.keys = result.stats.unique_keys = result.stats.found = 0
    result.stats.missing = 0
    result.stats.read_mode = SCAN
    stats = result.stats.to_dict()
    stats["latencies_ms"] = [round(v, 2) for v in result.stats.latencies_ms]
    done = store.put_scan_part(job_id, part, partitions(result.found, where, request.features),
                               stats)
    metrics.record_shard({spec["table"]: result.stats}, time.monotonic() - started)
    log.info("scan_done", scan_task=part, pages=stats["pages"],
             items_scanned=stats["items_scanned"], items_matched=stats["items_matched"],
             rcu=stats["consumed_rcu"], throttles=stats["throttles"],
             retries=stats["retries"], seconds=stats["seconds"], scan_tasks_done=done,
             scan_tasks=tasks)
    return done == tasks


def scanned_result(store: JobStore, meta: JobMeta, shard: int,
                   keys: Sequence[Hashable]) -> ReadResult:
    """Shard ``shard``'s rows, in order, from what the scan tasks matched of its keys —
    joined as the in-process scan joins them (``featurepull.dynamo.scan.join``)."""
    from featurepull.dynamo.scan import join

    started = time.perf_counter()
    found: dict[Hashable, Row] = {}
    for table in store.scan_partitions(meta.job_id, shard, scan_tasks(meta)):
        columns = [column.to_pylist() for column in table.columns]
        for position, row in zip(columns[0], zip(*columns[1:], strict=True), strict=True):
            found[keys[position]] = row
    rows = join(keys, found)
    stats = ReadStats(keys=len(keys), unique_keys=len(set(keys)), read_mode=SCAN)
    stats.found = sum(row is not None for row in rows)
    stats.missing = len(rows) - stats.found
    stats.seconds = time.perf_counter() - started
    return ReadResult(rows, stats)


def scan_status(meta: JobMeta, store: JobStore) -> dict[str, Any]:
    """What ``featurepull status`` shows of a job's read plan (empty for an older job)."""
    plan = meta.request.read_plan
    if not plan:
        return {}
    shown = {"read_mode": plan["mode"], "read_reason": plan_line(plan)}
    if plan["mode"] == SCAN:
        shown.update(scan_tasks=plan["scan_tasks"],
                     scan_tasks_done=store.scan_done_count(meta.job_id),
                     items_scanned=store.scan_progress(meta.job_id),
                     table_items=int(plan.get("table_items", 0)))
    return shown


def plan_line(plan: Mapping[str, Any] | None) -> str:
    """The read plan in a line, for ``featurepull status`` and ``submit --wait``."""
    if not plan:
        return ""
    text = str(plan["reason"])
    if plan["mode"] == SCAN:
        tasks = plan["scan_tasks"]
        text += f"; {plan['total_segments']} segments in {tasks} scan task" + "s" * (tasks != 1)
    return text
