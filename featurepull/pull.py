"""The in-process job behind ``featurepull pull``: entities from a file, rows through the
read engine (and a registered scorer), ordered rows to a file. No broker; the same engine
and the same scoring step the workers run."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from featurepull.config import S3Settings, Settings
from featurepull.dynamo import ReadStats
from featurepull.dynamo.plan import LayoutName, layout_spec, nothing_found_warning, plan_read
from featurepull.dynamo.reader import Progress, cyclic_gc_paused
from featurepull.io import (
    check_destination,
    is_dataset,
    open_sink,
    read_entities,
    rows_to_table,
    write_dataset,
    write_rows,
)
from featurepull.tasks.scoring import LoadedScorer, apply_scorer, registered_scorer


@dataclass
class PullRequest:
    """What to read: the table, the features, and how entity rows map to keys; optionally
    a registered scorer to apply (``with_features`` keeps the features beside its scores)."""

    table: str
    features: list[str]
    layout: LayoutName = "feast"
    join_keys: list[str] = field(default_factory=list)
    join_key_types: dict[str, str] = field(default_factory=dict)
    event_ts_attribute: str | None = "event_ts"
    scorer: str | None = None
    with_features: bool = False
    allow_missing_features: bool = False  # else a feature no found item holds is refused


@dataclass
class PullOutcome:
    """A finished pull: the rows written, the read's statistics, and warnings for the user
    (e.g. that no entity was found)."""

    output: str
    rows_written: int
    stats: ReadStats
    warnings: list[str] = field(default_factory=list)


def pull(request: PullRequest, entities_path: str, output_path: str, settings: Settings,
         *, overwrite: bool = False, progress: Progress | None = None,
         on_keys: Progress | None = None) -> PullOutcome:
    """Read the features of every entity in a file and write one row per entity, in order.

    ``on_keys`` is called once with the number of unique keys before reading starts (for a
    progress bar's total). Nothing is written unless every key was read or confirmed absent
    (and, with a scorer, it scored every row).
    """
    if request.with_features and request.scorer is None:
        raise ValueError("with_features keeps the features beside a scorer's scores; name a "
                         "scorer too")
    scorer = registered_scorer(request.scorer, settings) if request.scorer else None
    check_destination(output_path, overwrite, settings.s3)
    entities = read_entities(entities_path, s3=settings.s3)
    plan = plan_read(request, list(entities.columns), entities.types, entities.source,
                     settings, entities.notes)
    layout, reader = plan.layout, plan.reader
    with cyclic_gc_paused():  # keys, rows and their Arrow columns: no cycles among them
        keys = layout.keys_for(entities.columns, entities.source)
        if on_keys is not None:
            on_keys(len(set(keys)))
        result = reader.read(keys, request.features, progress=progress,
                             allow_missing_features=request.allow_missing_features)
    spec = layout_spec(layout)
    names = spec["key_columns"]
    key_columns = {n: entities.columns[n] for n in names}
    if is_dataset(output_path):
        table = _table(output_path, key_columns, result.rows, request, scorer)
        # Parts of jobs.shard_size rows, as a job of the same entities would write them.
        written = write_dataset(output_path, table, settings.jobs.shard_size, uuid.uuid4().hex,
                                overwrite=overwrite, s3=settings.s3)
    elif scorer is None:
        with cyclic_gc_paused():
            written = write_rows(output_path, key_columns, result.rows, request.features,
                                 overwrite=overwrite, s3=settings.s3)
    else:
        written = _write_scored(output_path, key_columns, result.rows, request, scorer,
                                overwrite=overwrite, s3=settings.s3)
    warning = nothing_found_warning(spec, plan.table, result.stats.keys, result.stats.found)
    return PullOutcome(output_path, written, result.stats, [warning] if warning else [])


def _table(output_path: str, key_columns: dict[str, list[Any]],
           rows: Sequence[tuple[Any, ...] | None], request: PullRequest,
           scorer: LoadedScorer | None) -> pa.Table:
    # The workers' shard step, on all rows at once: rows to Arrow, scored if asked.
    table = rows_to_table(key_columns, rows, request.features, source=output_path)
    if scorer is None:
        return table
    return apply_scorer(table, [row is not None for row in rows], scorer, list(key_columns),
                        with_features=request.with_features)


def _write_scored(output_path: str, key_columns: dict[str, list[Any]],
                  rows: Sequence[tuple[Any, ...] | None], request: PullRequest,
                  scorer: LoadedScorer, *, overwrite: bool, s3: S3Settings) -> int:
    scored = _table(output_path, key_columns, rows, request, scorer)
    with open_sink(output_path, scored.schema, overwrite=overwrite, s3=s3) as sink:
        sink.write(scored)
        return int(sink.rows_written)
