"""From a request to a layout: which table, which join-key types, which key columns.

Shared by the in-process pull and job submission, so both accept and refuse the same input.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

from featurepull.config import Settings
from featurepull.dynamo.errors import EntityKeyError, RequestError
from featurepull.dynamo.layouts import FeastLayout, Layout, PlainLayout
from featurepull.dynamo.reader import BatchReader

LayoutName = Literal["feast", "plain"]
T = TypeVar("T")
# Entity column types (featurepull.io's logical types) that map onto a Feast join-key type.
FEAST_KEY_TYPES_FROM_COLUMNS = {"int64": "int64", "int32": "int32", "string": "string",
                                "bytes": "bytes"}


def physical_table(layout: LayoutName, table: str, settings: Settings) -> str:
    """The DynamoDB table name: Feast's template for the feast layout, else as given."""
    if layout == "feast":
        return settings.dynamodb.table_name(settings.project, table)
    return table


def feast_key_types(join_keys: Sequence[str], declared: Mapping[str, str],
                    column_types: Mapping[str, str], source: str, *,
                    notes: Mapping[str, str] | None = None,
                    defaulted: bool = False) -> dict[str, str]:
    """Join-key types: a declared type wins; otherwise the entity column's type.

    ``defaulted`` says the keys are every column of the file (no --join-keys): a column of
    a type no join key has is then more likely a stray column than a key of the wrong type.
    """
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
            raise EntityKeyError(_untyped_key_message(name, column_type, join_keys,
                                                      column_types, source, notes or {},
                                                      defaulted))
        types[name] = FEAST_KEY_TYPES_FROM_COLUMNS[column_type]
    return types


_TYPE_WORDS = {"float": "holds floats", "bool": "holds booleans",
               "null": "is empty on every row"}


def _untyped_key_message(name: str, column_type: str, join_keys: Sequence[str],
                         column_types: Mapping[str, str], source: str,
                         notes: Mapping[str, str], defaulted: bool) -> str:
    others = [k for k in join_keys
              if k != name and column_types.get(k) in FEAST_KEY_TYPES_FROM_COLUMNS]
    stray = defaulted and len(join_keys) > 1
    name_keys = (f"without --join-keys every column of the file is a join key: if {name!r} is "
                 f"not one, name the keys, e.g. --join-keys {','.join(others) or 'KEY'}")
    if column_type == "mixed":
        # A CSV column of integers and other text: hashed as int64 or as string, the same
        # id gives different entity_ids, and only the user knows which Feast declared.
        message = (f"{source}: column {name!r} {notes.get(name, 'mixes integers and text')}, "
                   "so its Feast join-key type is unclear: pass --join-key-types "
                   f"{name}=int64 to read every value as an integer, or {name}=string to "
                   "hash every value as text")
        return message + (f"; or, {name_keys}" if stray else "")
    what = _TYPE_WORDS.get(column_type, f"has type {column_type}")
    if stray:
        # A float or bool column beside integer or string ones is a payload column (a
        # score, a label), not an id of the wrong type: --join-key-types would mislead.
        return (f"{source}: column {name!r} {what}, which no Feast join key can hold; "
                f"{name_keys}")
    return (f"{source}: join key column {name!r} has type {column_type}; Feast join keys "
            f"are int64, int32, string or bytes — declare it with "
            f"--join-key-types {name}=int64 (or string, int32, bytes)")


def feast_join_keys(join_keys: Sequence[str], columns: Sequence[str], source: str,
                    notes: Mapping[str, str] | None = None) -> list[str]:
    """The join keys to use: as given, or every entity column; each must exist."""
    chosen = list(join_keys) or list(columns)
    missing = [k for k in chosen if k not in columns]
    unusable = [k for k in missing if notes and k in notes]
    if unusable:
        name = unusable[0]
        raise EntityKeyError(f"{source}: column {name!r} {(notes or {})[name]}, so it cannot "
                             "be a join key; write its values as integers or strings")
    if missing:
        raise EntityKeyError(
            f"{source} has no column {', '.join(map(repr, missing))} for --join-keys; its "
            f"columns are {', '.join(map(repr, columns))}"
        )
    return chosen


def nothing_found_warning(spec: Mapping[str, Any], table: str, keys: int,
                          found: int) -> str | None:
    """A warning for a read where DynamoDB holds none of the keys (``spec`` from
    :func:`layout_spec`): usually keys built from the wrong columns or types, which
    reads as "every entity is missing" and would otherwise pass without a word."""
    if keys == 0 or found:
        return None
    if "views" in spec:  # Feast references: the registry gave the keys and their types
        return (f"0 of {keys:,} entities were found in the feature views' tables {table}; "
                "check that the entity file holds join-key values those views were "
                "materialized for")
    if spec["layout"] == "feast":
        built = ", ".join(f"{name} ({kind})" for name, kind in spec["key_types"].items())
        return (f"0 of {keys:,} entities were found in table {table}; their keys were "
                f"built from the join keys {built}. If the feature view's entities have "
                "other join keys or types, name them with --join-keys and --join-key-types "
                "(without --join-keys every column of the entity file is a join key; a CSV "
                "column is int64 only when every value is a plain integer)")
    built = ", ".join(f"{name} ({kind})" for name, kind in spec["key_schema"])
    return (f"0 of {keys:,} entities were found in table {table}; their keys were "
            f"built from {built}: check that the entity file holds that table's key values")


def layout_from_spec(spec: Mapping[str, Any], settings: Settings) -> Layout:
    """Rebuild a layout from :func:`layout_spec` output (JSON-safe, stored with a job)."""
    if spec["layout"] == "feast":
        # The submitter's key encoding travels with the job, so a worker configured
        # otherwise still builds the keys the submitter checked; a spec stored before it
        # did (no serialization_version, or no name_length either) takes the worker's.
        return FeastLayout(spec["key_types"], spec.get("serialization_version",
                                                       settings.entity_key_serialization_version),
                           name_length=spec.get("name_length", settings.join_key_name_length))
    return PlainLayout([(n, t) for n, t in spec["key_schema"]], spec["event_ts_attribute"])


def layout_spec(layout: Layout) -> dict[str, Any]:
    """A JSON-safe description of a layout, enough to rebuild it in another process."""
    if isinstance(layout, FeastLayout):
        return {"layout": "feast", "key_types": layout.key_types,
                "key_columns": list(layout.key_types), "name_length": layout.name_length,
                "serialization_version": layout.serialization_version}
    assert isinstance(layout, PlainLayout)
    return {"layout": "plain", "key_schema": layout.key_schema,
            "event_ts_attribute": layout.event_ts_attribute,
            "key_columns": [name for name, _ in layout.key_schema]}


# The job spec's field of the key schemas its submitter checked, by physical table:
# DescribeTable's KeySchema and the key attributes' AttributeDefinitions, no more. A shard's
# reader takes them as checked (no DescribeTable in a pool process); a spec without them
# (an older submitter's, another app's message) has its tables described as before.
CHECKED_KEYS = "checked_keys"
_KEY_TYPES = ("HASH", "RANGE")
_ATTRIBUTE_TYPES = ("S", "N", "B")
_NAME_MAX = 255  # DynamoDB's longest key attribute name


def checked_keys(description: Mapping[str, Any]) -> dict[str, Any]:
    """What a job carries of a table's DescribeTable block (already checked against its
    layout): its KeySchema and its key attributes' definitions."""
    schema = [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]}
              for k in description["KeySchema"]]
    names = {k["AttributeName"] for k in schema}
    return {"KeySchema": schema,
            "AttributeDefinitions": [
                {"AttributeName": a["AttributeName"], "AttributeType": a["AttributeType"]}
                for a in description["AttributeDefinitions"] if a["AttributeName"] in names]}


def carried_keys(spec: Mapping[str, Any], table: str) -> dict[str, Any] | None:
    """The key schema a job spec carries for ``table`` (:func:`checked_keys`), its shape
    checked: a job record is untrusted input. None when it carries none for that table (its
    table is then described); RequestError when what it carries is malformed. It is only
    ever the schema its own job's reader of that table checks its layout against."""
    carried = spec.get(CHECKED_KEYS)
    if carried is None:
        return None
    if not isinstance(carried, Mapping) or not all(isinstance(k, str) for k in carried):
        raise _malformed(table, f"{CHECKED_KEYS} is not an object of table names")
    entry = carried.get(table)
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or set(entry) != {"KeySchema", "AttributeDefinitions"}:
        raise _malformed(table, "it is not an object of KeySchema and AttributeDefinitions")
    schema = _attributes(entry, "KeySchema", "KeyType", _KEY_TYPES, table)
    if [kind for _, kind in schema] not in (["HASH"], ["HASH", "RANGE"]):
        raise _malformed(table, "its KeySchema is not a HASH key, then maybe a RANGE key")
    types = _attributes(entry, "AttributeDefinitions", "AttributeType", _ATTRIBUTE_TYPES,
                        table)
    names = [name for name, _ in schema]
    if len(set(names)) != len(names) or sorted(n for n, _ in types) != sorted(names):
        raise _malformed(table, "its AttributeDefinitions are not its key attributes, once each")
    return {"KeySchema": [{"AttributeName": n, "KeyType": k} for n, k in schema],
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t}
                                     for n, t in types]}


def _attributes(entry: Mapping[str, Any], key: str, field: str, allowed: tuple[str, ...],
                table: str) -> list[tuple[str, str]]:
    """``entry[key]``, ``[{"AttributeName": name, field: one of allowed}, ...]`` (1 or 2 of
    them), as pairs."""
    value = entry[key]
    if not isinstance(value, list) or not 1 <= len(value) <= 2:
        raise _malformed(table, f"its {key} is not a list of 1 or 2 attributes")
    pairs = []
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"AttributeName", field}:
            raise _malformed(table, f"an attribute is not an object of AttributeName and {field}")
        name, kind = item["AttributeName"], item[field]
        if not isinstance(name, str) or not 0 < len(name) <= _NAME_MAX or kind not in allowed:
            raise _malformed(table, f"an attribute's name or {field} is not one DynamoDB has")
        pairs.append((name, kind))
    return pairs


def _malformed(table: str, why: str) -> RequestError:
    return RequestError(f"the job's record carries a malformed key schema for table {table} "
                        f"({CHECKED_KEYS}: {why}); it was not stored by featurepull's "
                        "submit: submit the job again, or leave the field out to have the "
                        "table described")


def plan_layout(layout: LayoutName, *, join_keys: Sequence[str],
                join_key_types: Mapping[str, str], event_ts_attribute: str | None,
                columns: Sequence[str], column_types: Mapping[str, str], source: str,
                settings: Settings, description: Mapping[str, Any] | None = None,
                notes: Mapping[str, str] | None = None) -> Layout:
    """The layout for a request; the plain layout needs the table's DescribeTable block.
    ``notes`` says why a column cannot be a join key as read (``EntityTable.notes``)."""
    if layout == "feast":
        chosen = feast_join_keys(join_keys, columns, source, notes)
        types = feast_key_types(chosen, join_key_types, column_types, source, notes=notes,
                                defaulted=not join_keys)
        return FeastLayout(types, settings.entity_key_serialization_version,
                           name_length=settings.join_key_name_length)
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
    """A plan: the physical table, its layout, and a reader whose table exists (checked,
    unless planned with ``check=False``)."""

    table: str
    layout: Layout
    reader: BatchReader


def plan_read(request: ReadRequest, columns: Sequence[str], column_types: Mapping[str, str],
              source: str, settings: Settings,
              notes: Mapping[str, str] | None = None, *, check: bool = True,
              described: DescribedAhead | None = None) -> ReadPlan:
    """Resolve the table and layout of a request and check the table (DescribeTable once;
    not with ``check=False``: the caller runs ``reader.check_table()``, which for the plain
    layout checks the description its layout was built from, with no second request).
    ``described``: the table's DescribeTable, asked for earlier on a thread, taken (and its
    error raised) where this would describe the table."""
    table = physical_table(request.layout, request.table, settings)
    description = None
    if request.layout == "plain":
        description = (described.result() if described is not None else
                       BatchReader(table, PlainLayout([]), settings.dynamodb).describe())
    layout = plan_layout(request.layout, join_keys=request.join_keys,
                         join_key_types=request.join_key_types,
                         event_ts_attribute=request.event_ts_attribute, columns=columns,
                         column_types=column_types, source=source, settings=settings,
                         description=description, notes=notes)
    if description is None and check and described is not None:
        description = described.result()  # after the layout's checks, as check_table's
    reader = BatchReader(table, layout, settings.dynamodb, described=description)
    if check:
        reader.check_table()
    return ReadPlan(table, layout, reader)


class _OnThread(Generic[T]):
    """``call`` run on a daemon thread from now on, its outcome taken in the caller's thread:
    `result` waits for it and returns its value or raises its exception there. A daemon
    thread: an interrupt ends the process at once, as it ends a DescribeTable waiting on a
    hung endpoint in the main thread."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._outcome: list[tuple[T | None, BaseException | None]] = []
        self._thread = threading.Thread(target=self._run, args=(call,),
                                        name="featurepull-describe", daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self._outcome.append((call(), None))
        except BaseException as exc:  # for the caller's thread (error, result)
            self._outcome.append((None, exc))

    def error(self) -> BaseException | None:
        """The call's exception, None when it returned (waiting for it)."""
        self._thread.join()
        return self._outcome[0][1]

    def result(self) -> T:
        """The call's value (waiting for it), or its exception raised."""
        error = self.error()
        if error is not None:
            raise error
        return cast(T, self._outcome[0][0])


class DescribedAhead:
    """A request's table described (DescribeTable, one round trip) on a thread of its own
    from now on, while its caller does something else (a submit types its entity file), for
    :func:`plan_read`: its result, or its error, is taken where the table would have been
    described, so what the caller finds wrong before then still wins (`_OnThread`)."""

    def __init__(self, request: ReadRequest, settings: Settings) -> None:
        def describe() -> dict[str, Any]:
            table = physical_table(request.layout, request.table, settings)
            return BatchReader(table, PlainLayout([]), settings.dynamodb).describe()

        self._described = _OnThread(describe)

    def result(self) -> dict[str, Any]:
        """The table's DescribeTable block (waiting for it), or its error raised."""
        return dict(self._described.result())


class TableCheck(Protocol):
    """A reader whose table is checked once before it reads (BatchReader, ViewsReader)."""

    def check_table(self) -> None: ...


@contextmanager
def checking_table(reader: TableCheck, *, raising: bool = True) -> Iterator[None]:
    """Check the reader's table (a DescribeTable: one round trip, the first time) on a thread
    while the block runs (`_OnThread`): a pull builds its keys meanwhile, a shard hashes its
    keys. Its error wins over the block's, as when the check ran first; not ``raising``, it
    is dropped: the reader's read checks the table again and raises it where it always did
    (a shard's)."""
    check = _OnThread(reader.check_table)
    try:
        yield
    except Exception:
        failed = check.error()
        if failed is not None and raising:
            raise failed from None
        raise
    failed = check.error()
    if failed is not None and raising:
        raise failed
