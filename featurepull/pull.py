"""The in-process job behind ``featurepull pull``: entities from a file, rows through the
read engine (and a registered scorer), ordered rows to a file. No broker; the same engine
and the same scoring step the workers run."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from featurepull.config import ConfigError, RequestFields, Settings
from featurepull.config.settings import reference_problem, uses_registry
from featurepull.dynamo import BatchReader, ReadStats
from featurepull.dynamo.found import found_mask
from featurepull.dynamo.keys_ahead import KeysAhead
from featurepull.dynamo.layouts import FeastLayout, unique_keys
from featurepull.dynamo.plan import (
    LayoutName,
    checking_table,
    layout_spec,
    nothing_found_warning,
    plan_read,
)
from featurepull.dynamo.planned import read_planned
from featurepull.dynamo.planner import ReadPlan
from featurepull.dynamo.reader import Progress, cyclic_gc_paused
from featurepull.io import (
    EntityTable,
    check_destination,
    is_dataset,
    open_sink,
    read_entities,
    rows_to_table,
    write_dataset,
    write_rows,
)
from featurepull.tasks.scoring import (
    LoadedScorer,
    apply_scorer,
    check_with_features,
    registered_scorer,
)

if TYPE_CHECKING:
    # Reading Feast references through a registry: imported only by a pull that does (the
    # registry's protobuf descriptors and YAML cost every other pull ~20 ms of startup).
    from featurepull.dynamo.views import ViewsReader


@dataclass
class PullRequest:
    """What to read: the table, the features, and how entity rows map to keys; optionally
    a registered scorer to apply (``with_features`` keeps the features beside its scores)."""

    table: str = ""
    features: list[str] = field(default_factory=list)
    layout: LayoutName = "feast"
    join_keys: list[str] = field(default_factory=list)
    join_key_types: dict[str, str] = field(default_factory=dict)
    event_ts_attribute: str | None = "event_ts"
    scorer: str | None = None
    with_features: bool = False
    allow_missing_features: bool = False  # else a feature no found item holds is refused
    # Feast references (features as view:feature, or a feature service): read through the
    # registry of feature_store_yaml (featurepull.tasks.feast_views).
    feature_store_yaml: str | None = None
    feature_service: str | None = None
    full_feature_names: bool = False
    respect_ttl: bool = False


@dataclass
class PullOutcome:
    """A finished pull: the rows written, the read's statistics, warnings for the user
    (e.g. that no entity was found), and how each table was read (batch-get or scan, and
    why: :mod:`featurepull.dynamo.planner`)."""

    output: str
    rows_written: int
    stats: ReadStats
    warnings: list[str] = field(default_factory=list)
    read_plans: list[ReadPlan] = field(default_factory=list)


def pull(request: PullRequest, entities_path: str, output_path: str, settings: Settings,
         *, overwrite: bool = False, progress: Progress | None = None,
         on_keys: Progress | None = None) -> PullOutcome:
    """Read the features of every entity in a file and write one row per entity, in order.

    ``on_keys`` is called once with the number of unique keys before reading starts (for a
    progress bar's total). Nothing is written unless every key was read or confirmed absent
    (and, with a scorer, it scored every row).
    """
    return _pull_keeping(request, entities_path, output_path, settings, overwrite=overwrite,
                         progress=progress, on_keys=on_keys, keep=None)


def _pull_keeping(request: PullRequest, entities_path: str, output_path: str,
                  settings: Settings, *, overwrite: bool, progress: Progress | None,
                  on_keys: Progress | None, keep: list[object] | None) -> PullOutcome:
    """:func:`pull`, and ``keep`` gets the pull's largest objects (the entity columns, the
    keys, the rows) instead of letting them be freed when it returns: for a process that
    ends without freeing anything (the console pull, ``cli.run``), which so skips freeing
    them one by one (~50 ms of CPU at 100,000 rows)."""
    check_with_features(request.scorer, request.with_features)
    problem = reference_problem(request.table, request.features, request.feature_service,
                                request.join_keys or request.join_key_types, request.layout,
                                request.full_feature_names or request.respect_ttl)
    if problem:
        raise ConfigError(problem)
    scorer = registered_scorer(request.scorer, settings) if request.scorer else None
    check_destination(output_path, overwrite, settings.s3)
    entities = read_entities(entities_path, s3=settings.s3)
    reader, spec, table_name = _planned_reader(request, entities, settings)
    views = bool(spec.get("views"))
    with cyclic_gc_paused():  # keys, rows and their Arrow columns: no cycles among them
        # Distinct keys and each row's index among them, where the layout can tell before
        # hashing (ViewsReader's layout cannot: its reader de-duplicates per view).
        # The keys of the read's first requests are hashed here, the rest on a thread while
        # they are in flight (featurepull.dynamo.keys_ahead: a pull has a core to spare; the
        # read, or a scan, waits for those it needs, and the thread is joined after it).
        ahead = (reader.settings.max_read_workers * reader.settings.batch_size
                 if isinstance(reader, BatchReader) else 0)
        with checking_table(reader):
            keys, positions = unique_keys(reader.layout, _key_source(entities, reader),
                                          entities.source, ahead)
        if on_keys is not None:
            on_keys(len(keys) if positions is not None else len(set(keys)))
        if views:
            from featurepull.dynamo.views import ViewsReader

            assert isinstance(reader, ViewsReader)
            result = reader.read(keys, request.features, progress=progress,
                                 allow_missing_features=request.allow_missing_features)
            plans = list(reader.plans)
        else:
            assert isinstance(reader, BatchReader)
            with keys if isinstance(keys, KeysAhead) else nullcontext():  # joined, scan or not
                result, plan = read_planned(
                    reader, keys, request.features, progress,
                    allow_missing_features=request.allow_missing_features, positions=positions)
            plans = [plan]
    names = spec["key_columns"]
    if scorer is None and not is_dataset(output_path) and not views:
        with cyclic_gc_paused():
            written = write_rows(output_path, _output_keys(entities, names), result.rows,
                                 request.features, overwrite=overwrite, s3=settings.s3)
    else:
        key_columns = {n: entities.columns[n] for n in names}
        table = (_views_table(reader, key_columns, result.rows, output_path) if views else
                 rows_to_table(key_columns, result.rows, request.features, source=output_path))
        written = _write_table(output_path, table, result.rows, names, request, scorer,
                               overwrite=overwrite, settings=settings)
    if keep is not None:
        keep += [entities, keys, positions, result]
    warning = nothing_found_warning(spec, table_name, result.stats.keys, result.stats.found)
    return PullOutcome(output_path, written, result.stats, [warning] if warning else [],
                       plans)


def _planned_reader(request: PullRequest, entities: EntityTable, settings: Settings
                    ) -> tuple[BatchReader | ViewsReader, dict[str, Any], str]:
    """The reader of the request's table (not checked yet: :func:`checking_table`), or of
    every view its Feast references name (their tables checked), the layout's description
    (:func:`layout_spec`) and the table name(s)."""
    if not uses_registry(request.features, request.feature_service):
        plan = plan_read(request, list(entities.columns), entities.types, entities.source,
                         settings, entities.notes, check=False)
        return plan.reader, layout_spec(plan.layout), plan.table
    from featurepull.dynamo.views import ViewsReader
    from featurepull.tasks.feast_views import plan_for

    fields = RequestFields(features=request.features, entities=entities.source,
                           feature_store_yaml=request.feature_store_yaml,
                           feature_service=request.feature_service,
                           full_feature_names=request.full_feature_names,
                           respect_ttl=request.respect_ttl)
    views = plan_for(fields, list(entities.columns), entities.source, settings)
    reader = ViewsReader.build(views, settings, planned=True)
    reader.check_table()
    spec = {"layout": "feast", "views": True, "key_columns": views.key_columns}
    return reader, spec, ", ".join(view.table for view in views.views)


def _key_source(entities: EntityTable, reader: BatchReader | ViewsReader
                ) -> Mapping[str, Any]:
    """The entity columns the keys are built from: a Feast layout's as Arrow arrays where
    the reader made them (checked and de-duplicated in Arrow, not value by value), else
    the Python lists (a plain layout looks at each value anyway)."""
    if isinstance(reader.layout, FeastLayout):
        arrays = entities.arrays  # (the lists of `columns` are made only when asked for)
        return {name: arrays[name] if name in arrays else entities.columns[name]
                for name in entities.columns}
    return entities.columns


def _output_keys(entities: EntityTable, names: Sequence[str]) -> dict[str, Any]:
    """The output's key columns: the Arrow arrays the entity file's reader made (int64,
    string: the types the output gives their values; an entity file has rows, so none is
    empty, which the values would type as null), in one chunk as the output makes them
    of the values, else the Python values: the same file, without typing a million."""
    arrays = entities.arrays
    return {name: arrays[name].combine_chunks() if len(arrays.get(name, ())) else
            entities.columns[name] for name in names}


def _views_table(reader: BatchReader | ViewsReader, key_columns: dict[str, Any],
                 rows: Sequence[tuple[Any, ...] | None], output_path: str) -> pa.Table:
    from featurepull.dynamo.views import ViewsReader
    from featurepull.tasks.feast_views import views_table

    assert isinstance(reader, ViewsReader)
    return views_table(reader.plan, key_columns, rows, output_path)


def _write_table(output_path: str, table: pa.Table, rows: Sequence[tuple[Any, ...] | None],
                 key_names: list[str], request: PullRequest, scorer: LoadedScorer | None, *,
                 overwrite: bool, settings: Settings) -> int:
    # The workers' shard step, on all rows at once: a table, scored if asked, written.
    if scorer is not None:
        table = apply_scorer(table, found_mask(rows), scorer, key_names,
                             with_features=request.with_features)
    if is_dataset(output_path):
        # Parts of jobs.shard_size rows, as a job of the same entities would write them.
        return write_dataset(output_path, table, settings.jobs.shard_size, uuid.uuid4().hex,
                             overwrite=overwrite, s3=settings.s3, keys=key_names)
    with open_sink(output_path, table.schema, overwrite=overwrite, s3=settings.s3,
                   keys=key_names) as sink:
        sink.write(table)
        return int(sink.rows_written)
