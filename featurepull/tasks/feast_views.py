"""Jobs and pulls that name Feast references (``view:feature``) or a feature service.

At submit, the registry resolves the references into a plan (:mod:`featurepull.dynamo.views`)
that is stored with the job, so its shards read the views the registry held then, without
reading it again. A shard reads every view for its rows concurrently and stores one table:
the join-key columns, the views' event times, the features as Feast names them.

The registry's code (:mod:`featurepull.dynamo.views`: protobuf, yaml) is imported only for a
job that names references: a one-table submit queues its first shard without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from featurepull.config import RequestFields, Settings
from featurepull.config.loading import read_feature_store_yaml
from featurepull.config.settings import JOB_DYNAMO_OVERRIDES
from featurepull.io import EntityTable

if TYPE_CHECKING:
    from featurepull.dynamo.pacing import PacerFactory
    from featurepull.dynamo.views import ViewsPlan, ViewsReader

VIEWS = "views"  # the key of a job spec that holds a ViewsPlan
R = TypeVar("R", bound=RequestFields)


def with_yaml_choices(request: R) -> R:
    """The request with its feature_store_yaml's project and DynamoDB settings beneath its
    own (as ``--feature-store-yaml`` gives them on the command line): a job request that
    names only the yaml reads the project and endpoint the yaml names."""
    if not request.feature_store_yaml:
        return request
    chosen = read_feature_store_yaml(request.feature_store_yaml)
    dynamo = {name: value for name, value in chosen.get("dynamodb", {}).items()
              if name in JOB_DYNAMO_OVERRIDES}
    return request.model_copy(update={"project": request.project or chosen.get("project"),
                                      "dynamodb": {**dynamo, **request.dynamodb}})


def plan_for(request: RequestFields, columns: Sequence[str], source: str,
             settings: Settings) -> ViewsPlan:
    """The views a request's references read (``settings``: the job's own)."""
    from featurepull.dynamo.views import registry_plan

    return registry_plan(request.features, request.feature_service,
                         request.feature_store_yaml, columns, source, settings,
                         full_feature_names=request.full_feature_names,
                         respect_ttl=request.respect_ttl)


def views_spec(request: RequestFields, entities: EntityTable,
               settings: Settings) -> dict[str, Any]:
    """What a job stores to read the views: their plan, checked against the tables and the
    entity rows (every key can be built), in the fields a one-table job stores."""
    from featurepull.dynamo.views import ViewsReader

    plan = plan_for(request, list(entities.columns), entities.source, settings)
    reader = ViewsReader.build(plan, settings)
    reader.check_table()
    reader.layout.check_keys(entities.columns, entities.source)
    key_types: dict[str, str] = {}
    for view in plan.views:
        key_types.update(view.key_types)
    from featurepull.dynamo.plan import CHECKED_KEYS, checked_keys

    carried = {view.table: checked_keys(view.description) for view in reader.readers
               if view.description is not None}
    return {"table": ", ".join(view.table for view in plan.views), "layout": "feast",
            "key_types": key_types, "key_columns": plan.key_columns, VIEWS: plan.to_spec(),
            CHECKED_KEYS: carried}


def spec_tables(spec: Mapping[str, Any]) -> list[str]:
    """The DynamoDB tables a job spec reads: each view's (its ``table`` field joins their
    names), else its one table. Never raises: a job whose record no longer parses is still
    ended and counted (featurepull.tasks.notify)."""
    plan = spec.get(VIEWS)
    views = plan.get("views") if isinstance(plan, Mapping) else None
    tables = [view.get("table") for view in views or () if isinstance(view, Mapping)]
    named = [table for table in tables if isinstance(table, str) and table]
    return list(dict.fromkeys(named)) if named else [str(spec.get("table") or "")]


def logged_tables(spec: Mapping[str, Any]) -> dict[str, str | list[str]]:
    """The field a log line names a job's tables by: ``table``, or ``tables`` (a list) for a
    job reading several (a Feast-reference job's views) — a log search by table name finds
    it, where one string joining the names would not."""
    tables = spec_tables(spec)
    return {"table": tables[0]} if len(tables) == 1 else {"tables": tables}


def views_reader(spec: Mapping[str, Any], settings: Settings,
                 pacers: PacerFactory) -> ViewsReader:
    """The reader of a job spec from :func:`views_spec` (each view's table taken as the
    spec's carried key schema says, where it carries one)."""
    from featurepull.dynamo.plan import carried_keys
    from featurepull.dynamo.views import ViewsPlan, ViewsReader

    plan = ViewsPlan.from_spec(spec[VIEWS])
    carried = {view.table: keys for view in plan.views
               if (keys := carried_keys(spec, view.table)) is not None}
    return ViewsReader.build(plan, settings, pacers=pacers, carried=carried)


def views_table(plan: ViewsPlan, key_columns: dict[str, list[Any]],
                rows: Sequence[tuple[Any, ...] | None], source: str = "rows",
                first_row: int = 1) -> pa.Table:
    """Joined rows as an Arrow table, named as Feast names them."""
    from featurepull.io.tables import rows_to_table

    table = rows_to_table(key_columns, rows, plan.row_features, source=source,
                          first_row=first_row)
    return table.rename_columns(plan.output_names(table.column_names))


def shard_table(spec: Mapping[str, Any], key_columns: dict[str, list[Any]],
                rows: Sequence[tuple[Any, ...] | None], features: Sequence[str],
                first_row: int = 1) -> pa.Table:
    """A shard's rows as a table: of the views of a views job, else of its one table.
    ``first_row``: the shard's first entity row in its job, which messages name the rows
    by ("entity rows 201-400: ... (row 251)")."""
    # (rows_to_table imported here: a submit imports this module, never the row tables.)
    from featurepull.io.tables import rows_to_table

    source = f"entity rows {first_row:,}-{first_row + len(rows) - 1:,}"
    if VIEWS in spec:
        from featurepull.dynamo.views import ViewsPlan

        return views_table(ViewsPlan.from_spec(spec[VIEWS]), key_columns, rows, source,
                           first_row)
    return rows_to_table(key_columns, rows, features, source=source, first_row=first_row)
