"""The in-process job behind ``featurepull pull``: entities from a file, rows through the
read engine, ordered rows to a file. No broker; the same engine the workers run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from featurepull.config import Settings
from featurepull.dynamo import (
    BatchReader,
    EntityKeyError,
    FeastLayout,
    Layout,
    PlainLayout,
    ReadResult,
    ReadStats,
)
from featurepull.dynamo.reader import Progress
from featurepull.io import EntityTable, OutputError, read_entities, write_rows

LayoutName = Literal["feast", "plain"]
FEAST_KEY_TYPES_FROM_COLUMNS = {"int64": "int64", "int32": "int32", "string": "string",
                                "bytes": "bytes"}


@dataclass
class PullRequest:
    """What to read: the table, the features, and how entity rows map to keys."""

    table: str
    features: list[str]
    layout: LayoutName = "feast"
    join_keys: list[str] = field(default_factory=list)
    join_key_types: dict[str, str] = field(default_factory=dict)
    event_ts_attribute: str | None = "event_ts"


def physical_table(request: PullRequest, settings: Settings) -> str:
    """The DynamoDB table name: Feast's template for the feast layout, else as given."""
    if request.layout == "feast":
        return settings.dynamodb.table_name(settings.project, request.table)
    return request.table


def feast_key_types(join_keys: Sequence[str], declared: Mapping[str, str],
                    column_types: Mapping[str, str], source: str) -> dict[str, str]:
    """Join-key types: a declared type wins; otherwise the entity column's type."""
    unknown = sorted(set(declared) - set(join_keys))
    if unknown:
        raise EntityKeyError(f"--join-key-types names {', '.join(unknown)}, which "
                             f"{'is' if len(unknown) == 1 else 'are'} not in --join-keys")
    types: dict[str, str] = {}
    for name in join_keys:
        if name in declared:
            types[name] = declared[name]
            continue
        column_type = column_types.get(name, "missing")
        if column_type not in FEAST_KEY_TYPES_FROM_COLUMNS:
            raise EntityKeyError(
                f"{source}: join key column {name!r} has type {column_type}; Feast join keys "
                f"are int64, int32, string or bytes — declare it with "
                f"--join-key-types {name}=int64 (or string, int32, bytes)"
            )
        types[name] = FEAST_KEY_TYPES_FROM_COLUMNS[column_type]
    return types


def build_layout(request: PullRequest, entities: EntityTable, settings: Settings,
                 reader_table_description: Mapping[str, object] | None = None) -> Layout:
    """The layout for a request; the plain layout needs the table's description."""
    if request.layout == "feast":
        join_keys = request.join_keys or list(entities.columns)
        missing = [k for k in join_keys if k not in entities.columns]
        if missing:
            raise EntityKeyError(
                f"{entities.source} has no column {', '.join(map(repr, missing))} for "
                f"--join-keys; its columns are {', '.join(map(repr, entities.columns))}"
            )
        types = feast_key_types(join_keys, request.join_key_types, entities.types,
                                entities.source)
        return FeastLayout(types, settings.entity_key_serialization_version)
    assert reader_table_description is not None
    return PlainLayout.from_description(reader_table_description, request.event_ts_attribute)


def key_columns(layout: Layout, request: PullRequest, entities: EntityTable) -> list[str]:
    """The entity key columns of the output, in the order the user gave them."""
    if isinstance(layout, FeastLayout):
        return request.join_keys or list(entities.columns)
    assert isinstance(layout, PlainLayout)
    return [name for name, _ in layout.key_schema]


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
    if not overwrite and os.path.exists(output_path):
        raise OutputError(f"{output_path} exists; pass --overwrite to replace it")
    entities = read_entities(entities_path)
    table = physical_table(request, settings)
    description = None
    if request.layout == "plain":
        description = BatchReader(table, PlainLayout([]), settings.dynamodb).describe()
    layout = build_layout(request, entities, settings, description)
    reader = BatchReader(table, layout, settings.dynamodb)
    reader.check_table()
    keys = layout.keys_for(entities.columns, entities.source)
    if on_keys is not None:
        on_keys(len(set(keys)))
    result: ReadResult = reader.read(keys, request.features, progress=progress)
    names = key_columns(layout, request, entities)
    written = write_rows(output_path, {n: entities.columns[n] for n in names}, result.rows,
                         request.features, overwrite=overwrite)
    return PullOutcome(output_path, written, result.stats)
