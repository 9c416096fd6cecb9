"""Feast feature references (``view:feature``) over several feature views, read as one job.

:func:`plan_views` turns references and the registry into a :class:`ViewsPlan`: for each
view its table, join keys and types, the features read from it and its TTL; the output
names, as Feast names them. :class:`ViewsReader` reads the views of one set of entity rows
concurrently, one :class:`BatchReader` per view (each view's keys built from its own join-key
columns, each unique key read once), and joins them back into one row per entity row.

A joined row is ``(first view's event time, other views' event times..., features...)``, or
None when no view has the entity: the shape the output code takes for ``event_timestamp``
and features, with the first column renamed by :meth:`ViewsPlan.output_names`.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from featurepull.config import Settings
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.feast_registry import (
    FeastRegistry,
    RegistryError,
    load_registry,
    registry_location,
)
from featurepull.dynamo.layouts import FeastLayout, Row
from featurepull.dynamo.planned import read_planned
from featurepull.dynamo.planner import ReadPlan
from featurepull.dynamo.reader import BatchReader, Progress, ReadResult
from featurepull.dynamo.stats import ReadStats
from featurepull.errors import RunFailed

EVENT_TIMESTAMP = "event_timestamp"  # the output code's name for a row's first value
PROGRESS_EVERY_S = 0.1  # how often the views' answered reads reach the caller's callback


@dataclass(frozen=True)
class ViewRead:
    """What is read from one view: JSON-safe, stored with a job."""

    view: str
    table: str
    key_types: dict[str, str]
    features: list[str]
    ttl_s: float


@dataclass(frozen=True)
class KeyEncoding:
    """How the views' entity keys are serialized: the settings of whoever planned the read
    (a job's submitter), carried with a job so that its shards build the keys the submitter
    checked, whatever the worker's own settings say."""

    serialization_version: int
    name_length: str | None  # join_key_name_length

    @classmethod
    def of(cls, settings: Settings) -> KeyEncoding:
        """The encoding ``settings`` choose."""
        return cls(settings.entity_key_serialization_version, settings.join_key_name_length)


@dataclass(frozen=True)
class ViewsPlan:
    """The views a set of references reads, and where each output feature comes from."""

    views: list[ViewRead]
    names: list[str]  # output feature names, in the requested order
    picks: list[tuple[int, int]]  # per output feature: (view, feature) indexes
    key_columns: list[str]  # the entity columns some view joins on, in file order
    respect_ttl: bool = False
    # None: a plan stored before plans carried it; its reader uses its own settings'.
    key_encoding: KeyEncoding | None = None

    @property
    def timestamp_names(self) -> list[str]:
        """``event_timestamp`` for one view, ``view__event_timestamp`` for each of several."""
        if len(self.views) == 1:
            return [EVENT_TIMESTAMP]
        return [f"{view.view}__{EVENT_TIMESTAMP}" for view in self.views]

    @property
    def row_features(self) -> list[str]:
        """The names of a joined row's values after its first (the output code's features)."""
        return [*self.timestamp_names[1:], *self.names]

    def output_names(self, columns: Sequence[str]) -> list[str]:
        """Output column names with the first view's event time named for its view."""
        first = self.timestamp_names[0]
        return [first if name == EVENT_TIMESTAMP else name for name in columns]

    def to_spec(self) -> dict[str, Any]:
        """JSON-safe, for a job's stored spec (:meth:`from_spec` reverses it)."""
        spec = {"views": [asdict(view) for view in self.views], "names": self.names,
                "picks": [list(pick) for pick in self.picks],
                "key_columns": self.key_columns, "respect_ttl": self.respect_ttl}
        if self.key_encoding is not None:
            spec["key_encoding"] = asdict(self.key_encoding)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ViewsPlan:
        """The plan :meth:`to_spec` stored."""
        encoding = spec.get("key_encoding")
        return cls([ViewRead(**view) for view in spec["views"]], list(spec["names"]),
                   [(v, f) for v, f in spec["picks"]], list(spec["key_columns"]),
                   bool(spec["respect_ttl"]),
                   None if encoding is None else KeyEncoding(**encoding))


class _Progress:
    """Answered reads of the views' threads, handed to the caller's progress callback on
    the calling thread (a Celery task's state lives there), as a share of ``total``. Once
    the callback raises (the job was cancelled), the views' reads stop at their next
    answer."""

    def __init__(self, progress: Progress | None, total: int, reads: int) -> None:
        self.progress = progress
        self.total = total
        self.reads = max(reads, 1)
        self.answered = self.reported = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def add(self, n: int) -> None:
        """Called by a view's read (on its thread)."""
        if self.stopped.is_set():
            raise ReadStopped("the read was stopped by its caller")
        with self.lock:
            self.answered += n

    def flush(self) -> None:
        """Report what was answered since the last call (on the calling thread)."""
        with self.lock:
            due = self.answered * self.total // self.reads
        if self.progress is not None and due > self.reported:
            try:
                self.progress(due - self.reported)
            except BaseException:
                self.stopped.set()
                raise
            self.reported = due


class ReadStopped(RunFailed):
    """A view's read stopped because the caller's progress callback raised."""


def split_reference(reference: str) -> tuple[str, str]:
    """``view:feature`` as its two parts, or a RegistryError saying the form."""
    view, sep, feature = reference.partition(":")
    if not sep or not view or not feature or ":" in feature:
        raise RegistryError(f"feature reference {reference!r} is not view:feature (e.g. "
                            "driver_hourly_stats:conv_rate)")
    return view, feature


def plan_views(registry: FeastRegistry, references: Sequence[str], columns: Sequence[str],
               source: str, settings: Settings, *, full_feature_names: bool = False,
               respect_ttl: bool = False) -> ViewsPlan:
    """Resolve references against the registry and the entity file's columns."""
    order: list[str] = []
    wanted: dict[str, list[str]] = {}
    picks: list[tuple[int, int]] = []
    names: list[str] = []
    for reference in references:
        view_name, feature = split_reference(reference)
        view = registry.view(view_name)
        if feature not in view.features:
            raise RegistryError(f"feature view {view_name!r} has no feature {feature!r}; its "
                                f"features are {', '.join(view.features)}")
        if view_name not in wanted:
            order.append(view_name)
            wanted[view_name] = []
        wanted[view_name].append(feature)
        picks.append((order.index(view_name), len(wanted[view_name]) - 1))
        names.append(f"{view_name}__{feature}" if full_feature_names else feature)
    _check_names(names, full_feature_names)
    needed: dict[str, str] = {}
    views = []
    for view_name in order:
        view = registry.view(view_name)
        for join_key in view.join_keys:
            if join_key not in columns:
                raise EntityKeyError(
                    f"{source} has no column {join_key!r}, the join key of feature view "
                    f"{view_name!r}; its columns are {', '.join(map(repr, columns))}")
            needed[join_key] = view_name
        table = settings.dynamodb.table_name(registry.project, view_name)
        views.append(ViewRead(view_name, table, dict(view.join_keys), wanted[view_name],
                              view.ttl_s))
    key_columns = [name for name in columns if name in needed]
    plan = ViewsPlan(views, names, picks, key_columns, respect_ttl, KeyEncoding.of(settings))
    clash = sorted(set(key_columns) & {*plan.timestamp_names, *names})
    if clash:
        raise RegistryError(f"output column {clash[0]!r} would be both a join key and a "
                            "feature; use --full-feature-names")
    return plan


def _check_names(names: Sequence[str], full_feature_names: bool) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if not repeated:
        return
    if full_feature_names:
        raise RegistryError(f"feature {repeated[0]!r} is requested twice")
    # As Feast's FeatureNameCollisionError: the bare names of two views collide.
    raise RegistryError(f"features named {', '.join(map(repr, repeated))} come from more "
                        "than one feature view; pass --full-feature-names (names become "
                        "view__feature), or request only one of them")


class ViewsLayout:
    """Entity rows to keys for several views: one tuple per row, each view's key built
    from its own join-key columns (the layout side of :class:`ViewsReader`)."""

    name = "feast"

    def __init__(self, layouts: Sequence[FeastLayout]) -> None:
        self.layouts = list(layouts)

    def keys_for(self, columns: Mapping[str, Sequence[Any]],
                 source: str = "") -> list[Hashable]:
        """Per row, the tuple of its keys in each view (equal rows give equal tuples)."""
        return list(zip(*(layout.keys_for(columns, source) for layout in self.layouts),
                        strict=True))

    def check_keys(self, columns: Mapping[str, Sequence[Any]], source: str = "") -> None:
        """Raise what :meth:`keys_for` would raise, without the keys."""
        for layout in self.layouts:
            layout.check_keys(columns, source)


class ViewsReader:
    """Reads the views of a plan for the same entity rows, concurrently, one row per input
    row; used as a BatchReader is (``layout.keys_for``, then ``read``). ``readers`` holds
    one BatchReader per view of the plan, in its order. ``planned``: each view's table is
    read in the mode its own plan picks (:mod:`featurepull.dynamo.planned`; a reader of all
    the keys, not of a shard), and ``plans`` holds those plans after a read."""

    def __init__(self, plan: ViewsPlan, readers: Sequence[BatchReader],
                 planned: bool = False) -> None:
        self.plan = plan
        self.readers = list(readers)
        self.layout = ViewsLayout([cast(FeastLayout, r.layout) for r in self.readers])
        self.planned = planned
        self.plans: list[ReadPlan] = []
        # During a read, each view's stats once its read is done: the last progress report
        # comes after every view's read, and still has what they spent.
        self._read: list[ReadStats | None] = []

    @classmethod
    def build(cls, plan: ViewsPlan, settings: Settings, planned: bool = False,
              carried: Mapping[str, Mapping[str, Any]] | None = None,
              **options: Any) -> ViewsReader:
        """One BatchReader per view (``options`` go to each: pacers, a client; ``carried``:
        the key schemas a job carries, by table, its own to each). The keys are encoded as
        the plan says; ``settings`` say it only for a plan that does not (one stored before
        plans carried their encoding)."""
        encoding = plan.key_encoding or KeyEncoding.of(settings)
        return cls(plan, [BatchReader(view.table,
                                      FeastLayout(view.key_types,
                                                  encoding.serialization_version,
                                                  name_length=encoding.name_length),
                                      settings.dynamodb,
                                      carried=(carried or {}).get(view.table), **options)
                          for view in plan.views], planned)

    @property
    def reading(self) -> ReadStats | None:
        """The views' reads of the read under way, summed (for progress reports)."""
        done = self._read or [None] * len(self.readers)
        under_way = [stats for reader, read in zip(self.readers, done, strict=True)
                     if (stats := reader.reading or read) is not None]
        if not under_way:
            return None
        total = ReadStats()
        for stats in under_way:
            total.merge(stats)
        return total

    def check_table(self) -> None:
        """Check that every view's table exists with Feast's key schema."""
        for reader in self.readers:
            reader.check_table()

    def read(self, keys: Sequence[Hashable], features: Sequence[str] = (),
             progress: Progress | None = None, row_offset: int = 0, *,
             allow_missing_features: bool = True) -> ReadResult:
        """Joined rows in input order, for ``keys`` from :meth:`ViewsLayout.keys_for`
        (``features`` and ``allow_missing_features`` are the plan's: every feature is the
        registry's, so one that no item holds reads as null, as in Feast).

        The stats sum the views' reads (``unique_keys`` is the reads made, one per view per
        unique key); ``keys``, ``found`` and ``missing`` count entity rows (found: in some
        view); ``by_table`` holds each view's table's own read; ``stale`` counts rows x
        views older than their view's TTL. ``progress`` gets the answered keys scaled to
        ``len(set(keys))``, the total a caller counts."""
        started = time.perf_counter()
        per_view = [[key[index] for key in keys]  # type: ignore[index]
                    for index in range(len(self.readers))]
        report = _Progress(progress, len(set(keys)), sum(len(set(k)) for k in per_view))

        plans: list[ReadPlan | None] = [None] * len(self.readers)
        done: list[ReadStats | None] = [None] * len(self.readers)
        self._read = done

        def read_view(index: int) -> ReadResult:
            reader, features = self.readers[index], self.plan.views[index].features
            if self.planned:
                result, plans[index] = read_planned(reader, per_view[index], features,
                                                    report.add, allow_missing_features=True)
            else:
                result = reader.read(per_view[index], features, progress=report.add,
                                     row_offset=row_offset, allow_missing_features=True)
            done[index] = result.stats
            return result

        with ThreadPoolExecutor(len(self.readers), thread_name_prefix="featurepull-view") as pool:
            futures = [pool.submit(contextvars.copy_context().run, read_view, index)
                       for index in range(len(self.readers))]
            try:
                running = set(futures)
                while running:
                    _, running = wait(running, timeout=PROGRESS_EVERY_S,
                                      return_when=FIRST_EXCEPTION)
                    report.flush()
                    if any(f.done() and f.exception() is not None for f in futures):
                        break
            finally:
                report.stopped.set()  # the other views stop at their next answer
                self._read = []
            failures = [f.exception() for f in futures]  # waits for every view
            first = next((e for e in failures if e is not None
                          and not isinstance(e, ReadStopped)), None)
            if first is not None:
                raise first
            results = [future.result() for future in futures]
        self.plans = [plan for plan in plans if plan is not None]
        rows, stale = self._join([result.rows for result in results])
        stats = ReadStats()
        by_table: dict[str, ReadStats] = {}
        for reader, result in zip(self.readers, results, strict=True):
            stats.merge(result.stats)
            by_table.setdefault(reader.table, ReadStats()).merge(result.stats)
        stats.keys = len(rows)
        stats.found = sum(row is not None for row in rows)
        stats.missing = len(rows) - stats.found
        stats.stale = stale
        stats.seconds = time.perf_counter() - started
        return ReadResult(rows, stats, by_table)

    def _join(self, per_view: list[Sequence[Row | None]]
              ) -> tuple[Sequence[Row | None], int]:
        plan = self.plan
        if len(per_view) == 1 and plan.views[0].ttl_s <= 0 \
                and plan.picks == [(0, f) for f in range(len(plan.picks))]:
            return per_view[0], 0  # one view read as asked: its rows are the output's
        now = datetime.now(UTC)
        cutoffs = [now - timedelta(seconds=view.ttl_s) if view.ttl_s > 0 else None
                   for view in self.plan.views]
        picks = self.plan.picks
        respect = self.plan.respect_ttl
        stale = 0
        joined: list[Row | None] = []

        def pick(views: list[Row | None]) -> list[Any]:
            return [None if (row := views[v]) is None else row[1 + f] for v, f in picks]

        for found in zip(*per_view, strict=True):
            if all(row is None for row in found):
                joined.append(None)
                continue
            views = list(found)
            for index, cutoff in enumerate(cutoffs):
                row = views[index]
                if cutoff is not None and row is not None and row[0] is not None \
                        and row[0] < cutoff:
                    stale += 1
                    if respect:
                        views[index] = None
            stamps = [None if row is None else row[0] for row in found]
            joined.append((*stamps, *pick(views)))
        return joined, stale


def registry_plan(features: Sequence[str], feature_service: str | None,
                  feature_store_yaml: str | None, columns: Sequence[str], source: str,
                  settings: Settings, *, full_feature_names: bool = False,
                  respect_ttl: bool = False) -> ViewsPlan:
    """The plan of a request's references (or feature service), from the registry that
    ``feature_store_yaml`` names, in the project of ``settings``."""
    if not feature_store_yaml:
        raise RegistryError("feature references (view:feature) and feature services are "
                            "resolved in a Feast registry: pass --feature-store-yaml "
                            "(feature_store_yaml in a job request or a schedule)")
    registry = load_registry(registry_location(feature_store_yaml), settings.project,
                             settings.s3)
    references = registry.service(feature_service) if feature_service else list(features)
    return plan_views(registry, references, columns, source, settings,
                      full_feature_names=full_feature_names, respect_ttl=respect_ttl)
