"""A job from request to ordered output: validate and shard at submit, read one shard, finish.

These functions do the work; ``featurepull.tasks.celery_tasks`` wraps them as Celery tasks and
``featurepull.client`` calls :func:`create_job` in the submitting process. One code path for
each step, whoever runs it.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import structlog
from pydantic import Field, ValidationError, model_validator

from featurepull.config import ConfigError, RequestFields, Settings
from featurepull.config.errors import request_error_text
from featurepull.config.loading import merge
from featurepull.config.settings import SCORER_NAME_PATTERN
from featurepull.dynamo import BatchReader, ReadStats
from featurepull.dynamo.plan import (
    layout_from_spec,
    layout_spec,
    nothing_found_warning,
    plan_read,
)
from featurepull.dynamo.views import ViewsReader
from featurepull.errors import InputError, RunFailed
from featurepull.io import (
    EntityFileError,
    EntityTable,
    StagedOutput,
    check_destination,
    is_dataset,
    read_entities,
    temporaries_of,
    unify_schemas,
)
from featurepull.io.entities import check_entity_file_size, too_many_entities
from featurepull.tasks import metrics
from featurepull.tasks.capacity import redis_pacers
from featurepull.tasks.confine import REDIS_KEY_SCHEME, Bounds
from featurepull.tasks.feast_views import (
    VIEWS,
    shard_table,
    views_reader,
    views_spec,
    with_yaml_choices,
)
from featurepull.tasks.scoring import (
    apply_scorer,
    check_registered,
    check_with_features,
    registered_scorer,
)
from featurepull.tasks.store import JobMeta, JobState, JobStore, UnknownJob

_ARROW_KEY_TYPES = {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(),
                    "bytes": pa.binary(), "float": pa.float64(), "bool": pa.bool_(),
                    "null": pa.null()}

log = structlog.get_logger(__name__)


class JobRequest(RequestFields):
    """What a job reads: JSON-safe, the public argument of ``featurepull.submit_job``.

    ``entities`` is a reference, never the entities themselves: a local path, an ``s3://``
    URI, or ``redis-key:NAME`` for a Redis key holding a Parquet file's bytes. ``scorer``
    names a scorer registered in the workers' settings — a name, never code or an import
    path (see ``featurepull.tasks.scoring``); ``with_features`` keeps the features beside
    its scores. ``notify`` names a task of another Celery app that gets the job's summary
    when it ends (``featurepull.tasks.notify``).
    """

    output: str | None = None
    scorer: str | None = Field(default=None, min_length=1, max_length=100,
                               pattern=SCORER_NAME_PATTERN)
    with_features: bool = False

    @model_validator(mode="after")
    def _features_need_a_scorer(self) -> JobRequest:
        check_with_features(self.scorer, self.with_features, ("with_features", '"scorer"'))
        return self


def check_notify(request: RequestFields, settings: Settings) -> None:
    """Refuse a notification that would land on featurepull's own queue, where no worker
    runs it (the task name itself is checked by the request model)."""
    if request.notify is not None and request.notify.queue == settings.jobs.queue:
        raise ConfigError(f"notify.queue {request.notify.queue!r} is featurepull's own job "
                          "queue; name the queue your app's worker consumes (Celery's default "
                          "is 'celery')")


def job_settings(settings: Settings, request: JobRequest) -> Settings:
    """The worker's settings with the job's own project and DynamoDB choices on top."""
    values = merge(settings.model_dump(), {"project": request.project,
                                           "dynamodb": request.dynamodb})
    return Settings(**values)


def load_entities(reference: str, settings: Settings, store: JobStore) -> EntityTable:
    """Entities named by reference: a path, an s3:// URI, or redis-key:NAME (Parquet), each
    refused before it is read when it is over the job limits."""
    limits = settings.jobs
    if not reference.startswith(REDIS_KEY_SCHEME):
        return read_entities(reference, s3=settings.s3, limits=limits)
    import tempfile

    name = reference[len(REDIS_KEY_SCHEME):]
    check_entity_file_size(reference, int(store.redis.strlen(name)),
                           limits.max_entity_file_bytes)
    data = store.redis.get(name)
    if data is None:
        raise EntityFileError(f"{reference}: no such Redis key; store the entities there as "
                              "a Parquet file's bytes first")
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            table = read_entities(tmp.name, limits=limits)
        except EntityFileError as exc:  # name what the user gave, not our temporary file
            raise EntityFileError(str(exc).replace(tmp.name, reference)) from None
    return EntityTable(reference, table.columns, table.types, table.notes)


class InvalidJobRequest(InputError, ValueError):
    """A job request that is not a JSON object or misses or mistypes a field; the message
    lists each one (a plain message, so it survives Celery's JSON result backend)."""


def parse_job_request(request: Any) -> JobRequest:
    """A ``featurepull.submit_job`` argument as a JobRequest, or InvalidJobRequest."""
    if not isinstance(request, Mapping):
        raise InvalidJobRequest(
            f"the featurepull.submit_job request is a {type(request).__name__}, not a JSON "
            'object; send {"table": ..., "features": [...], "entities": ...}')
    try:
        return JobRequest(**request)
    except ValidationError as exc:
        raise InvalidJobRequest(request_error_text(
            exc, "featurepull.submit_job request (see the task API in docs/fleet.md)")) from None


class OutputRequired(InputError, ValueError):
    """A job without an output (rows kept in Redis) over jobs.max_entities_without_output."""


def check_rows_kept(request: JobRequest, rows: int, settings: Settings) -> None:
    """Refuse a job whose rows would be kept in Redis (no output) when it is over the limit:
    Redis holds ~45 bytes per row until the job's TTL; an output holds them instead."""
    limit = settings.jobs.max_entities_without_output
    if request.output or rows <= limit:
        return
    raise OutputRequired(
        f"this job has {rows:,} entities and no output, so its rows would be kept in Redis; "
        f"jobs without an output are limited to {limit:,} entities "
        "(jobs.max_entities_without_output). Give an output: --output FILE (.parquet, .csv, "
        ".jsonl) or --output DIR/ (a Parquet dataset; a path or s3:// prefix ending in /)")


class RequestTooLarge(InputError, ValueError):
    """A job request over jobs.max_request_bytes (refused before it is validated)."""


def check_request_size(request: Mapping[str, Any], limit: int) -> None:
    """Refuse a job request whose JSON is over ``limit`` bytes (jobs.max_request_bytes).

    Entities travel by reference, so a request is a few hundred bytes; a bigger one is a
    mistake (entities inlined) or abuse, and would be stored in Redis and read by every shard.
    """
    size = len(json.dumps(request, default=str).encode())
    if size <= limit:
        return
    largest = ""
    if isinstance(request, Mapping) and request:
        name = max(request, key=lambda field: len(json.dumps(request[field], default=str)))
        largest = f" (largest field: {name!r})"
    raise RequestTooLarge(
        f"the job request is {size:,} bytes of JSON{largest}; this deployment accepts at "
        f"most {limit:,} (jobs.max_request_bytes). Entities go by reference (a path, s3:// "
        "or redis-key:), never inline; split a long feature list over several jobs, or "
        "raise the limit")


def _shard_tables(entities: EntityTable, key_columns: list[str],
                  shard_size: int) -> Iterator[pa.Table]:
    arrays = {name: pa.array(entities.columns[name],
                             type=_ARROW_KEY_TYPES.get(entities.types.get(name, "")))
              for name in key_columns}
    table = pa.table(arrays)
    for start in range(0, max(table.num_rows, 1), shard_size):
        yield table.slice(start, shard_size)


def create_job(request: JobRequest, settings: Settings, store: JobStore,
               entities: EntityTable | None = None) -> JobMeta:
    """Validate everything the read engine would reject, then store the job's shards.

    Nothing is stored unless the request is valid: the table exists with the right key
    schema, every entity key can be built, the output path can be written (within
    jobs.allowed_outputs), the endpoint is allowed, and a scorer it names is registered.
    """
    check_request_size(request.model_dump(), settings.jobs.max_request_bytes)
    request = with_yaml_choices(request)
    Bounds.for_jobs(settings).check_job(request.output, request.dynamodb)
    if request.scorer is not None:
        check_registered(request.scorer, settings)
    check_notify(request, settings)
    effective = job_settings(settings, request)
    if request.output:
        check_destination(request.output, request.overwrite, effective.s3)
    entities = entities or load_entities(request.entities, effective, store)
    if entities.num_rows > effective.jobs.max_entities:
        raise too_many_entities(entities.source, entities.num_rows, effective.jobs.max_entities)
    check_rows_kept(request, entities.num_rows, effective)
    shard_size = effective.jobs.shard_size
    if request.uses_registry:
        spec = {"request": request.model_dump(), "shard_size": shard_size,
                **views_spec(request, entities, effective)}
    else:
        plan = plan_read(request, list(entities.columns), entities.types, entities.source,
                         effective, entities.notes)
        table, layout = plan.table, plan.layout
        layout.check_keys(entities.columns, entities.source)  # refuse bad keys now
        spec = {"request": request.model_dump(), "table": table, "shard_size": shard_size,
                **layout_spec(layout)}
    job_id = store.new_job_id()
    shards = _shard_tables(entities, spec["key_columns"], shard_size)
    store.create(job_id, spec, shards)
    return store.meta(job_id)


class JobStopped(RunFailed):
    """The job failed or was cancelled elsewhere; this shard stops early."""


_readers: dict[tuple[str, str], BatchReader | ViewsReader] = {}


def _reader(table: str, spec: dict[str, Any], settings: Settings, store: JobStore
            ) -> BatchReader | ViewsReader:
    # One reader per table and settings in each process: it keeps the table's checked
    # key schema, so a worker describes each table once, not once per shard. Its read
    # budget, if any, is the fleet's bucket for the table in Redis.
    key = (table, settings.model_dump_json() + repr(sorted(spec.items())))
    reader = _readers.get(key)
    if reader is None and VIEWS in spec:  # Feast references: every view's table
        reader = views_reader(spec, settings, redis_pacers(store.redis))
    elif reader is None:
        reader = BatchReader(table, layout_from_spec(spec, settings), settings.dynamodb,
                             pacers=redis_pacers(store.redis))
        _readers[key] = reader
    return reader


def reset_process_state() -> None:
    """Forget per-process readers (after fork: a child builds its own)."""
    _readers.clear()


def run_shard(job_id: str, shard: int, settings: Settings, store: JobStore,
              report: Callable[[int, int, dict[str, Any]], None] | None = None,
              worker: str = "") -> bool:
    """Read one shard and store its rows; True when this completed the last shard."""
    meta = store.meta(job_id)
    if meta.terminal:
        log.info("shard_skipped", reason=f"the job is {meta.state}")
        return False
    if store.is_done(job_id, shard):  # a redelivered shard that already finished
        log.info("shard_skipped", reason="already done (a redelivered message)")
        return store.done_count(job_id) == meta.shards
    spec = meta.request
    request = JobRequest(**spec["request"])
    # Before any request: a job stored without submit_job (or forged in Redis) is bounded too.
    Bounds.for_jobs(settings).check_endpoint(request.dynamodb.get("endpoint_url"))
    store.mark_running(job_id)
    store.count_attempt(job_id, shard, worker)
    effective = job_settings(settings, request)
    keys_table = store.shard_keys(job_id, shard)
    columns = {name: keys_table.column(name).to_pylist() for name in spec["key_columns"]}
    reader = _reader(spec["table"], spec, effective, store)
    # Imported before reading: a worker without the scorer fails the job without reading.
    scorer = registered_scorer(request.scorer, settings) if request.scorer else None
    keys = reader.layout.keys_for(columns, f"job {job_id} shard {shard}")
    unique = len(set(keys))
    log.info("shard_start", table=spec["table"], rows=len(keys), unique_keys=unique,
             shards=meta.shards, threads=effective.dynamodb.max_read_workers)
    answered = 0
    last = 0.0

    def progress(n: int) -> None:
        nonlocal answered, last
        answered += n
        now = time.monotonic()
        if now - last >= 0.5 or answered == unique:
            last = now
            state = store.state(job_id)
            if state is None:  # gone from Redis (restarted without persistence): stop here
                raise UnknownJob(job_id)
            if state in (JobState.FAILED, JobState.CANCELLED):
                raise JobStopped(job_id)
            store.set_progress(job_id, shard, answered)
            if report is not None:
                report(answered, unique, capacity_fields(reader.reading, now - started))

    started = time.monotonic()
    with metrics.shard_running(spec["table"]):
        result = reader.read(keys, request.features, progress=progress,
                             row_offset=shard * spec["shard_size"],
                             allow_missing_features=request.allow_missing_features)
    table = shard_table(spec, columns, result.rows, request.features)
    stats = result.stats.to_dict()
    stats["latencies_ms"] = [round(v, 2) for v in result.stats.latencies_ms]
    if scorer is not None:
        scoring = time.monotonic()
        table = apply_scorer(table, [row is not None for row in result.rows], scorer,
                             spec["key_columns"], with_features=request.with_features)
        stats["score_seconds"] = round(time.monotonic() - scoring, 3)
    if request.output:
        # Into a part file beside the output: Redis holds no rows of a job with an output.
        staged_output(job_id, meta, effective).write_part(shard, table)
    done = store.put_shard_rows(job_id, shard, table, stats, keep_rows=not request.output)
    store.set_progress(job_id, shard, unique)
    if request.output and store.state(job_id) in ("failed", "cancelled"):
        discard_staged_output(job_id, settings, store)  # it ended while this part was written
    scored = {"scorer": scorer.name, "score_seconds": stats["score_seconds"]} if scorer else {}
    metrics.record_shard(spec["table"], result.stats, time.monotonic() - started)
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


def job_totals(store: JobStore, meta: JobMeta) -> dict[str, Any]:
    """ReadStats summed over shards, and the slowest shards."""
    per_shard = store.all_stats(meta.job_id)
    total = shard_totals(per_shard)
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


def remove_dead_finishers_file(output: str, finisher: str | None) -> None:
    """Delete the temporary file that an earlier finisher of this job left beside a local
    output when it was killed mid-write (SIGKILL skips atomic_file's cleanup). Only the
    files of that process, only on the machine it ran on, and only if it is gone."""
    if finisher is None or output.startswith("s3://"):
        return  # an S3 output is staged in an anonymous file: nothing is left behind
    host, _, pid = finisher.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or process_exists(int(pid)):
        return  # another machine's file, or a process still running: not ours to touch
    for stale in temporaries_of(output, int(pid)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
            log.warning("stale_output_removed", path=stale, finisher=finisher)


def staged_output(job_id: str, meta: JobMeta, settings: Settings) -> StagedOutput:
    """Where the job's shards stage their parts and how its finisher publishes them."""
    return StagedOutput(str(meta.request["request"]["output"]), job_id, meta.shards,
                        settings.s3, recorded=meta.published_as)


def discard_staged_output(job_id: str, settings: Settings, store: JobStore) -> None:
    """Remove what a job that ended staged for its output (logged, never raised: the job
    has ended already, and its failure is the error to report)."""
    try:
        meta = store.meta(job_id)
        request = JobRequest(**meta.request["request"])
        if request.output:
            staged_output(job_id, meta, job_settings(settings, request)).discard()
    except Exception as exc:
        log.warning("staged_output_left", job_id=job_id, error=str(exc))


def process_exists(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def publish_output(job_id: str, meta: JobMeta, settings: Settings, store: JobStore,
                   previous: str | None) -> int:
    """Publish the parts the shards staged as the job's output; rows written. An output
    already published by an earlier finisher of this job that died before the job was
    marked succeeded is recognised as the job's own, and kept."""
    request = JobRequest(**meta.request["request"])
    staged = staged_output(job_id, meta, settings)
    per_shard = store.all_stats(job_id)
    part_rows = [int(per_shard[n]["keys"]) for n in range(meta.shards)]
    if staged.published():
        log.warning("output_already_published", output=request.output,
                    reason="an earlier finisher of this job died after publishing it")
    else:
        if not is_dataset(staged.output):
            remove_dead_finishers_file(staged.output, previous)
        schemas = store.shard_schemas(job_id, meta.shards)
        staged.publish(unify_schemas(schemas), schemas, part_rows,
                       overwrite=request.overwrite)
    identity = staged.identity()
    if identity is not None:  # the proof that no longer needs the staging area
        store.note_published(job_id, identity)
    return sum(part_rows)


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
    Bounds.for_jobs(settings).check_output(meta.request["request"].get("output"))
    if not store.begin_finish(job_id):
        return None
    request = JobRequest(**meta.request["request"])
    effective = job_settings(settings, request)
    written = 0
    previous = store.note_finisher(job_id, f"{socket.gethostname()}:{os.getpid()}")
    # One sign of life covers the whole write: the finisher's time limit
    # (jobs.shard_time_limit_s) is below the watchdog's idle limit (visibility_timeout_s).
    store.heartbeat(job_id, "finishing")
    publishing = time.monotonic()
    if request.output:
        written = publish_output(job_id, meta, effective, store, previous)
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
        **job_totals(store, meta),
    }
    read = summary["read"]
    read["rcu_per_s"] = round(read["consumed_rcu"] / seconds, 1) if seconds > 0 else 0.0
    warning = nothing_found_warning(meta.request, meta.request["table"], read["keys"],
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
