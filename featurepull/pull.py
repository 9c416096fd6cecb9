"""The in-process job behind ``featurepull pull``: entities from a file, rows through the
read engine, ordered rows to a file. No broker; the same engine the workers run."""

from __future__ import annotations

from dataclasses import dataclass, field

from featurepull.config import Settings
from featurepull.dynamo import ReadStats
from featurepull.dynamo.plan import LayoutName, layout_spec, plan_read
from featurepull.dynamo.reader import Progress
from featurepull.io import check_destination, read_entities, write_rows


@dataclass
class PullRequest:
    """What to read: the table, the features, and how entity rows map to keys."""

    table: str
    features: list[str]
    layout: LayoutName = "feast"
    join_keys: list[str] = field(default_factory=list)
    join_key_types: dict[str, str] = field(default_factory=dict)
    event_ts_attribute: str | None = "event_ts"


@dataclass
class PullOutcome:
    """A finished pull: the rows written and the read's statistics."""

    output: str
    rows_written: int
    stats: ReadStats


def pull(request: PullRequest, entities_path: str, output_path: str, settings: Settings,
         *, overwrite: bool = False, progress: Progress | None = None,
         on_keys: Progress | None = None) -> PullOutcome:
    """Read the features of every entity in a file and write one row per entity, in order.

    ``on_keys`` is called once with the number of unique keys before reading starts (for a
    progress bar's total). Nothing is written unless every key was read or confirmed absent.
    """
    check_destination(output_path, overwrite, settings.s3)
    entities = read_entities(entities_path, s3=settings.s3)
    plan = plan_read(request, list(entities.columns), entities.types, entities.source,
                     settings)
    layout, reader = plan.layout, plan.reader
    keys = layout.keys_for(entities.columns, entities.source)
    if on_keys is not None:
        on_keys(len(set(keys)))
    result = reader.read(keys, request.features, progress=progress)
    names = layout_spec(layout)["key_columns"]
    written = write_rows(output_path, {n: entities.columns[n] for n in names}, result.rows,
                         request.features, overwrite=overwrite, s3=settings.s3)
    return PullOutcome(output_path, written, result.stats)
