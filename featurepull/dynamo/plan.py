"""From a request to a layout: which table, which join-key types, which key columns.

Shared by the in-process pull and job submission, so both accept and refuse the same input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from featurepull.config import Settings
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.layouts import FeastLayout, Layout, PlainLayout
from featurepull.dynamo.reader import BatchReader

LayoutName = Literal["feast", "plain"]
# Entity column types (featurepull.io's logical types) that map onto a Feast join-key type.
FEAST_KEY_TYPES_FROM_COLUMNS = {"int64": "int64", "int32": "int32", "string": "string",
                                "bytes": "bytes"}


def physical_table(layout: LayoutName, table: str, settings: Settings) -> str:
    """The DynamoDB table name: Feast's template for the feast layout, else as given."""
    if layout == "feast":
        return settings.dynamodb.table_name(settings.project, table)
    return table


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


def feast_join_keys(join_keys: Sequence[str], columns: Sequence[str], source: str) -> list[str]:
    """The join keys to use: as given, or every entity column; each must exist."""
    chosen = list(join_keys) or list(columns)
    missing = [k for k in chosen if k not in columns]
    if missing:
        raise EntityKeyError(
            f"{source} has no column {', '.join(map(repr, missing))} for --join-keys; its "
            f"columns are {', '.join(map(repr, columns))}"
        )
    return chosen


def layout_from_spec(spec: Mapping[str, Any], settings: Settings) -> Layout:
    """Rebuild a layout from :func:`layout_spec` output (JSON-safe, stored with a job)."""
    if spec["layout"] == "feast":
        return FeastLayout(spec["key_types"], settings.entity_key_serialization_version)
    return PlainLayout([(n, t) for n, t in spec["key_schema"]], spec["event_ts_attribute"])


def layout_spec(layout: Layout) -> dict[str, Any]:
    """A JSON-safe description of a layout, enough to rebuild it in another process."""
    if isinstance(layout, FeastLayout):
        return {"layout": "feast", "key_types": layout.key_types,
                "key_columns": list(layout.key_types)}
    assert isinstance(layout, PlainLayout)
    return {"layout": "plain", "key_schema": layout.key_schema,
            "event_ts_attribute": layout.event_ts_attribute,
            "key_columns": [name for name, _ in layout.key_schema]}


def plan_layout(layout: LayoutName, *, join_keys: Sequence[str],
                join_key_types: Mapping[str, str], event_ts_attribute: str | None,
                columns: Sequence[str], column_types: Mapping[str, str], source: str,
                settings: Settings, description: Mapping[str, Any] | None = None) -> Layout:
    """The layout for a request; the plain layout needs the table's DescribeTable block."""
    if layout == "feast":
        chosen = feast_join_keys(join_keys, columns, source)
        types = feast_key_types(chosen, join_key_types, column_types, source)
        return FeastLayout(types, settings.entity_key_serialization_version)
    if description is None:
        raise ValueError("the plain layout needs the table's description")
    return PlainLayout.from_description(description, event_ts_attribute)


class ReadRequest(Protocol):
    """The fields of a pull or job request that decide how entities become keys."""

    @property
    def table(self) -> str: ...
    @property
    def layout(self) -> LayoutName: ...
    @property
    def join_keys(self) -> list[str]: ...
    @property
    def join_key_types(self) -> dict[str, str]: ...
    @property
    def event_ts_attribute(self) -> str | None: ...


@dataclass
class ReadPlan:
    """A checked plan: the physical table, its layout, and a reader whose table exists."""

    table: str
    layout: Layout
    reader: BatchReader


def plan_read(request: ReadRequest, columns: Sequence[str], column_types: Mapping[str, str],
              source: str, settings: Settings) -> ReadPlan:
    """Resolve the table and layout of a request and check the table (DescribeTable once)."""
    table = physical_table(request.layout, request.table, settings)
    description = None
    if request.layout == "plain":
        description = BatchReader(table, PlainLayout([]), settings.dynamodb).describe()
    layout = plan_layout(request.layout, join_keys=request.join_keys,
                         join_key_types=request.join_key_types,
                         event_ts_attribute=request.event_ts_attribute, columns=columns,
                         column_types=column_types, source=source, settings=settings,
                         description=description)
    reader = BatchReader(table, layout, settings.dynamodb)
    reader.check_table()
    return ReadPlan(table, layout, reader)
