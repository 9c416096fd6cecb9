"""Creating a job: load its entities, validate everything the read engine would reject, and
store the entities' keys as shards (streamed a batch at a time when the file allows it).

``featurepull.client`` calls :func:`create_job` in the submitting process, and the
``featurepull.submit_job`` task in a worker: one code path, whoever runs it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import pyarrow as pa

from featurepull.config import JobSettings, Settings
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.layouts import FeastLayout, Layout
from featurepull.dynamo.plan import (
    CHECKED_KEYS,
    DescribedAhead,
    ReadPlan,
    checked_keys,
    layout_spec,
    plan_read,
)
from featurepull.errors import FeaturepullError
from featurepull.io import (
    EntityFileError,
    EntityStream,
    EntityTable,
    check_destination,
    read_entities,
)
from featurepull.io.entities import (
    EntityFileChanged,
    check_entity_file_size,
    too_many_entities,
)
from featurepull.tasks.confine import REDIS_KEY_SCHEME, Bounds
from featurepull.tasks.feast_views import views_spec, with_yaml_choices
from featurepull.tasks.fleet import job_shard_size
from featurepull.tasks.output import discard_staged_output
from featurepull.tasks.requests import (
    JobRequest,
    check_notify,
    check_request_size,
    check_rows_kept,
    job_settings,
)
from featurepull.tasks.scans import DistinctKeys, early_plan, late_plan, scan_tasks
from featurepull.tasks.scoring import check_registered
from featurepull.tasks.shard_keys import keys_in, put_shard_keys
from featurepull.tasks.store import JobMeta, JobStore
from featurepull.tasks.streaming import open_entity_stream, streamed_shards
from featurepull.tasks.submitter import SubmitterHeartbeat


class Enqueue(Protocol):
    """Sends a job's messages: a shard's as soon as its keys are stored, or (a scan job,
    once planned) each scan task's."""

    def __call__(self, meta: JobMeta, shard: int) -> None: ...

    def scan(self, meta: JobMeta, part: int) -> None: ...


# What a streamed file is declined with, to be read whole (EntityFileChanged aside: read
# whole, it would be yet another file).
_DECLINED = (EntityFileError, EntityKeyError)
_ARROW_KEY_TYPES = {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(),
                    "bytes": pa.binary(), "float": pa.float64(), "bool": pa.bool_(),
                    "null": pa.null()}


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
            raise type(exc)(str(exc).replace(tmp.name, reference)) from None
    return EntityTable(reference, table.columns, table.types, table.notes)


def _shard_tables(entities: EntityTable, key_columns: list[str],
                  shard_size: int) -> Iterator[pa.Table]:
    arrays = {name: pa.array(entities.columns[name],
                             type=_ARROW_KEY_TYPES.get(entities.types.get(name, "")))
              for name in key_columns}
    table = pa.table(arrays)
    for start in range(0, max(table.num_rows, 1), shard_size):
        yield table.slice(start, shard_size)


def create_job(request: JobRequest, settings: Settings, store: JobStore,
               entities: EntityTable | None = None, enqueue: Enqueue | None = None
               ) -> JobMeta:
    """Validate everything the read engine would reject, then store the job's shards,
    calling ``enqueue`` with each as soon as its keys are stored (pipelined: the first
    shard runs while the rest of the file is read).

    Nothing is stored unless the request is valid: the table exists with the right key
    schema, every entity key can be built, the output path can be written (within
    jobs.allowed_outputs), the endpoint is allowed, and a scorer it names is registered.
    A key found bad only after some shards were sent fails the job those shards belong to
    (they are skipped) and raises the error.
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
    if entities is None and not request.uses_registry:
        meta = _create_streamed(request, effective, store, enqueue, settings.jobs)
        if meta is not None:
            return meta
    entities = entities or load_entities(request.entities, effective, store)
    _check_rows(request, entities, effective)
    sizing = shard_sizing(request, entities.num_rows, settings.jobs, effective, store)
    description = None
    if request.uses_registry:
        spec = {"request": request.model_dump(), **sizing,
                **views_spec(request, entities, effective)}
    else:
        plan = _checked_plan(request, entities, effective)
        spec = {"request": request.model_dump(), "table": plan.table, **sizing,
                **layout_spec(plan.layout), **_carried(plan)}
        description = plan.reader.description
    shards = _shard_tables(entities, spec["key_columns"], spec["shard_size"])
    return _store_shards(spec, entities.num_rows, shards, effective, store, enqueue,
                         description, references=request.uses_registry)


def _carried(plan: ReadPlan) -> dict[str, Any]:
    """The spec's key schema of the table, as checked here: its shards' readers take it
    instead of describing the table again in each pool process."""
    assert plan.reader.description is not None  # plan_read checked the table
    return {CHECKED_KEYS: {plan.table: checked_keys(plan.reader.description)}}


def _check_rows(request: JobRequest, entities: EntityTable, settings: Settings) -> None:
    if entities.num_rows > settings.jobs.max_entities:
        raise too_many_entities(entities.source, entities.num_rows, settings.jobs.max_entities)
    check_rows_kept(request, entities.num_rows, settings)


def _checked_plan(request: JobRequest, entities: EntityTable, settings: Settings,
                  described: DescribedAhead | None = None) -> ReadPlan:
    """The read plan of a one-table job's whole entity table, its keys refused now if bad."""
    plan = plan_read(request, list(entities.columns), entities.types, entities.source,
                     settings, entities.notes, described=described)
    plan.layout.check_keys(entities.columns, entities.source)
    return plan


class _WholeFileRefusal:
    """What create_job's whole-file path refuses a streamed file with, asked (the file read
    whole) when the stream declined it after shards were sent: the job they went to fails
    with the message the submit then raises. ``error``: that refusal, once found."""

    def __init__(self, request: JobRequest, settings: Settings, store: JobStore,
                 described: DescribedAhead) -> None:
        self.request, self.settings, self.store = request, settings, store
        self.described = described
        self.error: FeaturepullError | None = None

    def instead_of(self, exc: BaseException) -> BaseException:
        """The whole file's refusal for a stream's decline ``exc`` (else ``exc``: an error
        of anything but the file, or a file the whole-file path takes)."""
        if not isinstance(exc, _DECLINED) or isinstance(exc, EntityFileChanged):
            return exc
        try:
            entities = load_entities(self.request.entities, self.settings, self.store)
            _check_rows(self.request, entities, self.settings)
            _checked_plan(self.request, entities, self.settings, self.described)
        except FeaturepullError as refused:
            self.error = refused
            return refused
        return exc


def _store_shards(spec: dict[str, Any], rows: int, shard_tables: Iterator[pa.Table],
                  settings: Settings, store: JobStore, enqueue: Enqueue | None,
                  description: Mapping[str, Any] | None, references: bool = False,
                  refusal: _WholeFileRefusal | None = None) -> JobMeta:
    """Store the job's record, then each shard's keys (where ``keys_in`` says) and send it.
    On any error the job is removed, or failed if a shard was already sent (its message
    then finds the job ended), and whatever was staged is removed. A stream that declines
    after shards were sent fails their job with ``refusal``'s error, raised instead (the
    stream's own when the whole file is taken: it is then read whole into another job).

    A job whose read plan needs its count of unique keys (``featurepull.tasks.scans``) is
    planned once every shard is stored, and only then sent: its scan tasks or its shards."""
    spec["keys_in"] = keys_in(spec["request"].get("output"))
    shards = max(1, -(-rows // spec["shard_size"]))
    spec["read_plan"] = early_plan(settings, spec, description, rows, shards, references)
    distinct = None if spec["read_plan"] else DistinctKeys(spec["key_columns"],
                                                           settings.jobs.max_scan_keys)
    job_id = store.new_job_id()
    heartbeat = SubmitterHeartbeat(store, job_id, settings.jobs.submitter_timeout_s)
    store.open_job(job_id, spec, shards, rows, heartbeat.owner, heartbeat.timeout_s)
    meta = store.meta(job_id)
    sent = stored = 0
    heartbeat.start()
    try:
        for shard, table in enumerate(shard_tables):
            put_shard_keys(job_id, shard, table, meta, settings, store)
            stored += 1
            if distinct is not None:
                distinct.add(table)
            elif enqueue is not None:
                enqueue(meta, shard)
                sent += 1
        if stored != shards:  # the file changed between its row count and its rows
            raise EntityFileChanged(f"{meta.request.request.get('entities')}: changed while "
                                  f"it was read ({rows} rows counted, {stored} shards read); "
                                  "submit it again once it is complete")
        if distinct is not None:
            spec["read_plan"] = late_plan(settings, spec, description, distinct.count(),
                                          shards)
            store.update_spec(job_id, spec)
            meta = store.meta(job_id)
            if enqueue is not None:
                for part in range(scan_tasks(meta)):
                    enqueue.scan(meta, part)
                    sent += 1
                for shard in range(0 if sent else shards):
                    enqueue(meta, shard)
                    sent += 1
    except BaseException as exc:
        try:  # the file read whole while the heartbeat still says this submit is alive
            error = refusal.instead_of(exc) if sent and refusal is not None else exc
        except BaseException:  # that read interrupted: the job ends as it would have
            _abandon(job_id, shards, sent, exc, heartbeat, settings, store)
            raise
        _abandon(job_id, shards, sent, error, heartbeat, settings, store)
        if error is not exc:
            raise error from None
        raise
    heartbeat.stop()
    store.submitted(job_id)
    return meta


def _abandon(job_id: str, shards: int, sent: int, error: BaseException,
             heartbeat: SubmitterHeartbeat, settings: Settings, store: JobStore) -> None:
    """A job whose submit stopped on ``error``: failed if a shard was already sent (its
    message then finds the job ended), else removed; whatever was staged is removed."""
    heartbeat.stop()
    if sent:
        # Our errors' messages name the problem; anything else is named by its type.
        why = (str(error) if isinstance(error, FeaturepullError)
               else f"{type(error).__name__}: {error}")
        store.fail(job_id, f"submit stopped after {sent} of {shards} shards were sent: {why}")
    discard_staged_output(job_id, settings, store)
    store.drop_rows(job_id, shards)
    if not sent:
        store.delete(job_id)


def shard_sizing(request: JobRequest, rows: int, jobs: JobSettings, effective: Settings,
                 store: JobStore) -> dict[str, Any]:
    """The job record's ``shard_size`` (``featurepull.tasks.fleet``: for its fleet, or
    jobs.shard_size) and, when the fleet was asked, ``fleet_processes`` and ``shard_unit``
    (jobs.shard_size: the output is written in slices of it). ``jobs``: the settings as
    loaded, which know whether jobs.shard_size was set (not a copy made from a dump);
    ``effective``: the job's settings (its read budget)."""
    size, chosen = job_shard_size(jobs, effective.dynamodb, rows, request.output,
                                  request.scorer, store.redis)
    if chosen:  # a job the fleet was not asked for is recorded as before
        chosen["shard_unit"] = jobs.shard_size
    return {"shard_size": size, **chosen}


def _create_streamed(request: JobRequest, settings: Settings, store: JobStore,
                     enqueue: Enqueue | None, jobs: JobSettings) -> JobMeta | None:
    """create_job with the entities read a batch at a time and stored as shards as they are
    read; None, with nothing stored, when the file must be read whole (a CSV file only the
    exact reader can type) or holds a bad key (the whole-file path names its row); found
    after shards were sent, the whole-file path's refusal is raised from here. The table is
    described on a thread while the file's first block is typed."""
    described = DescribedAhead(request, settings)
    with open_entity_stream(request.entities, settings, store, first_block=True) as stream:
        if stream is None:
            return None
        if stream.num_rows > settings.jobs.max_entities:
            raise too_many_entities(stream.source, stream.num_rows, settings.jobs.max_entities)
        check_rows_kept(request, stream.num_rows, settings)
        plan = plan_read(request, list(stream.types), stream.types, stream.source, settings,
                         stream.notes, described=described)
        spec = {"request": request.model_dump(), "table": plan.table,
                **shard_sizing(request, stream.num_rows, jobs, settings, store),
                **layout_spec(plan.layout), **_carried(plan)}
        shards = streamed_shards(stream, plan.layout, spec["key_columns"], spec["shard_size"],
                                 _ARROW_KEY_TYPES)
        refusal = _WholeFileRefusal(request, settings, store, described)
        try:
            if stream.first_block_types and not _first_block_decides(request, plan.layout):
                _read_key_columns(stream, spec["key_columns"])
            return _store_shards(spec, stream.num_rows, shards, settings, store, enqueue,
                                 plan.reader.description, refusal=refusal)
        except EntityFileChanged:
            raise  # read whole again, it would be yet another file
        except _DECLINED as exc:
            if exc is refusal.error:
                raise  # the file was read whole: its refusal, which failed the sent shards' job
            return None


def _first_block_decides(request: JobRequest, layout: Layout) -> bool:
    """Whether a stream typed by its first block (`EntityStream.first_block_types`) may
    send shards before the rest is read: where a later row that would type a key column
    otherwise makes it "mixed", which the whole-file path refuses (a Feast join key without
    --join-key-types). A plain-layout key, or a join key of a given type, takes a mixed
    column: a job sent on the first block's types could not then be the whole file's."""
    return isinstance(layout, FeastLayout) and not set(request.join_key_types) & set(
        layout.key_types)


def _read_key_columns(stream: EntityStream, key_columns: list[str]) -> None:
    """Every row of the key columns read, and so typed, before anything is stored (raising
    StreamDeclined where the first block's types do not hold)."""
    for _ in (stream.arrow_batches or stream.batches)(key_columns):
        pass
