"""SegmentScanner: a parallel Scan of a table, keeping the items of the keys a job asks for.

For a pull that covers most of a table, reading every item once costs far fewer read units
than asking for each key (:mod:`featurepull.dynamo.planner` decides). A scan is split into
``total_segments`` segments (DynamoDB's ``Segment``/``TotalSegments``); a scanner reads the
segments it is given, each page after page (``LastEvaluatedKey`` → ``ExclusiveStartKey``),
with up to ``max_read_workers`` pages in flight, one per segment, on the same transport as
BatchReader. Each page projects the key, the event time and the requested features (the
layout's projection); its items are matched against ``wanted`` as they arrive and only the
matches are decoded and kept, so memory holds matched rows only.

Failures are those of BatchReader and are handled alike: a throttled, 5xx or lost page is
asked for again (same ``ExclusiveStartKey``) after the same capped, jittered backoff, and a
segment whose page stays unanswered past ``retry_deadline_s`` fails the scan with what kept
it. A read budget applies to pages: a page's cost is known only from its answer, so each
reserves an estimate (learned from the pages before it) and settles with the
``ConsumedCapacity`` it was charged. :func:`join` turns the matches into one row per key.
"""

from __future__ import annotations

import heapq
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Container, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from featurepull.arrow_columns import extend_column
from featurepull.config import DynamoSettings
from featurepull.dynamo._aws_errors import client_errors, connection_errors, unreachable_errors
from featurepull.dynamo.concurrency import Aimd
from featurepull.dynamo.errors import (
    RetryDeadlineExceeded,
    UnknownFeatureError,
)
from featurepull.dynamo.features import FeatureCheck, refusal_message
from featurepull.dynamo.layouts import ColumnsDecoder, Layout, Row
from featurepull.dynamo.loops import run as _run
from featurepull.dynamo.pacing import PacerFactory, ReadCost, ReadPace, local_pacer
from featurepull.dynamo.reader import (
    BatchReader,
    InFlight,
    _check_features,
    _error_code,
    _RetryLog,
    adapt,
    close_requests,
    connection_failure,
    cyclic_gc_paused,
)
from featurepull.dynamo.retry import FailureTally
from featurepull.dynamo.stats import ReadStats
from featurepull.dynamo.transport import Transport, transport_for

# DynamoDB's Scan answers at most 1 MB of items per page, and charges 0.5 RCU (eventually
# consistent) or 1 RCU (strongly) per started 4 KB of the items it read on the page.
PAGE_BYTES = 1024 * 1024
RCU_BYTES = 4096

_SCAN_LINES = {
    "throttle": "Scan on %s throttled (%s): backing off and holding back new pages",
    "server": "Scan on %s failed on the server (%s): retrying the page",
    "connection": "Scan on %s lost its connection or response (%s): retrying the page",
}


@dataclass
class ScanResult:
    """The matched items' keys (as ``layout.keys_for`` makes them) in the order they came,
    their values by column as the layout decodes them (``columns[0]`` the event times, then
    the features; ``columns[c][i]`` is key ``keys[i]``'s), and what the scan did. ``found``
    is the same as rows by key (BatchReader's ``(event_ts, *features)``), made when first
    asked for: a pull's output takes the columns as they are (:mod:`featurepull.io`)."""

    keys: list[Hashable]
    columns: list[list[Any]]
    stats: ReadStats

    @cached_property
    def found(self) -> dict[Hashable, Row]:
        """Each matched key's row (a key matched twice: its last row)."""
        return dict(zip(self.keys, zip(*self.columns, strict=True), strict=True))


def join(keys: Sequence[Hashable], found: Mapping[Hashable, Row]) -> list[Row | None]:
    """One row per key, in the keys' order (repeats repeated), None where no item matched:
    what BatchReader.read returns for the same keys."""
    get = found.get
    return [get(key) for key in keys]


def page_estimate(description: Mapping[str, Any] | None, total_segments: int,
                  consistent: bool, page_limit: int | None = None) -> float:
    """RCU a page is expected to cost before any answer says: a segment's share of the
    table (by DescribeTable's size), at most a full page, at least one unit."""
    unit = 1.0 if consistent else 0.5
    size = float((description or {}).get("TableSizeBytes", 0) or 0)
    count = int((description or {}).get("ItemCount", 0) or 0)
    page = float(PAGE_BYTES)
    if size > 0:
        page = min(page, size / max(total_segments, 1))
        if page_limit and count:
            page = min(page, page_limit * size / count)
    return max(unit, -(-page // RCU_BYTES) * unit)


@dataclass
class _Segment:
    """One segment's place in its scan: the next page's start key, and its retries."""

    number: int
    start_key: dict[str, Any] | None = None
    done: bool = False
    attempts: int = 0
    first_failure: float | None = None


@dataclass
class _Page:
    """What one Scan request came back with; folded into the scan by the main loop."""

    segment: _Segment
    items: list[dict[str, Any]] = field(default_factory=list)
    scanned: int = 0
    last_key: dict[str, Any] | None = None
    failure: str | None = None  # "throttle" | "server" | "connection"
    detail: str = ""
    rcu: float = 0.0
    rcu_known: bool = False
    sdk_retries: int = 0
    reserved: float = 0.0
    sent_at: float = 0.0
    latency_ms: float = 0.0
    unprocessed: tuple[()] = ()  # a page is answered whole or refused whole


class _ScanLog(_RetryLog):
    """BatchReader's once-per-burst retry log, with lines that say Scan."""

    lines = _SCAN_LINES


class SegmentScanner:
    """Scans segments of one table and keeps the rows of the items whose keys are wanted."""

    def __init__(self, table: str, layout: Layout, settings: DynamoSettings,
                 client: Any | None = None, pacers: PacerFactory = local_pacer, *,
                 seed: int | None = None, page_limit: int | None = None) -> None:
        self.table = table
        self.layout = layout
        self.settings = settings
        self.page_limit = page_limit  # Scan's Limit (items per page); None: DynamoDB's 1 MB
        # DescribeTable, the layout check, the budget and error wording are BatchReader's.
        self.reader = BatchReader(table, layout, settings, client, seed, pacers)
        self.backoff = self.reader.backoff
        self._rng = random.Random(seed)
        self.reading: ReadStats | None = None  # the scan under way, for progress reports

    @classmethod
    def for_reader(cls, reader: BatchReader, page_limit: int | None = None) -> SegmentScanner:
        """A scanner of a BatchReader's table, sharing its client, budget (pacer) and
        checked description: no second DescribeTable."""
        scanner = cls(reader.table, reader.layout, reader.settings, page_limit=page_limit)
        scanner.reader = reader
        scanner.backoff = reader.backoff
        return scanner

    @property
    def description(self) -> dict[str, Any] | None:
        """DescribeTable's ``Table`` block, once :meth:`check_table` ran."""
        return self.reader.description

    def where(self) -> str:
        """Table, region and endpoint, for error messages."""
        return self.reader.where()

    def check_table(self) -> None:
        """Check once that the table exists with the layout's key schema; resolve its
        read budget."""
        self.reader.check_table()

    def scan(self, segments: Sequence[int], total_segments: int, features: Sequence[str],
             wanted: Container[Hashable] | None, progress: Callable[[int], None] | None = None,
             *, allow_missing_features: bool = False) -> ScanResult:
        """Scan ``segments`` (each in ``0..total_segments-1``) and keep the items whose key
        is in ``wanted`` (all of them when None). ``progress`` is called with the items
        scanned by each page. A requested feature none of the matched items holds raises
        UnknownFeatureError (:mod:`featurepull.dynamo.features`) unless
        ``allow_missing_features``."""
        _check_features(features)
        if total_segments < 1 or any(not 0 <= s < total_segments for s in segments):
            raise ValueError(f"segments {list(segments)} are not all in 0..{total_segments - 1}")
        self.check_table()
        started = time.perf_counter()
        run = _ScanRun(self, [_Segment(s) for s in dict.fromkeys(segments)], total_segments,
                       features, wanted, progress,
                       FeatureCheck(() if allow_missing_features else features, self.layout))
        self.reading = run.stats
        transport = transport_for(self.reader.client, self.settings,
                                  base64_values=self.layout.decodes_base64)
        try:
            with cyclic_gc_paused():
                _run(run.dispatch(transport))
        finally:
            self.reading = None
        stats = run.stats
        stats.found = len(set(run.keys))
        stats.seconds = time.perf_counter() - started
        return ScanResult(run.keys, run.columns, stats)


class _ScanRun:
    """One call of :meth:`SegmentScanner.scan`: its segments, pages in flight, matches."""

    def __init__(self, scanner: SegmentScanner, segments: list[_Segment], total: int,
                 features: Sequence[str], wanted: Container[Hashable] | None,
                 progress: Callable[[int], None] | None, check: FeatureCheck) -> None:
        self.scanner = scanner
        self.settings = scanner.settings
        self.segments = segments
        # Segments with no page in flight, in the order they may send: a queue of those
        # ready now, and a heap of those waiting out a backoff (ready_at, number, segment).
        self.idle: deque[_Segment] = deque(segments)
        self.backing_off: list[tuple[float, int, _Segment]] = []
        self.unfinished = len(segments)
        self.total = total
        self.wanted = wanted
        self.progress = progress
        self.check = check
        self.keys: list[Hashable] = []  # matched, in the order they came
        self.columns: list[list[Any]] = [[] for _ in range(1 + len(features))]
        self.stats = ReadStats(read_mode="scan")
        self.tally = FailureTally(self.stats)
        self.log = _ScanLog()
        self.pause_until = 0.0
        layout = scanner.layout
        self.template: dict[str, Any] = {
            "TableName": scanner.table, "TotalSegments": total,
            **layout.projection(features), "ConsistentRead": self.settings.consistent_reads}
        if scanner.page_limit:
            self.template["Limit"] = scanner.page_limit
        self.features = features
        self.decode: ColumnsDecoder | None = None
        self.base64 = False  # the transport leaves B values as base64 text

    # -- dispatch ------------------------------------------------------------------------

    async def dispatch(self, transport: Transport) -> None:
        """Keep up to ``max_read_workers`` pages in flight (one per segment, AIMD on
        throttling, paced by the budget) until every segment is scanned to its end."""
        scanner, settings = self.scanner, self.settings
        self.base64 = transport.base64_values
        self.decode = scanner.layout.columns_decoder(self.features, base64_values=self.base64)
        window = Aimd(max(1, min(settings.max_read_workers, len(self.segments))),
                      settings.adaptive_concurrency)
        cost = ReadCost(settings.consistent_reads)
        cost.per_key = page_estimate(scanner.description, self.total,
                                     settings.consistent_reads, scanner.page_limit)
        pace = ReadPace(scanner.reader.pacer, cost)  # a "key" here is one page
        self.stats.budget_rcu_per_s = pace.rate
        inflight: InFlight[_Page] = InFlight()

        def refill(now: float) -> None:
            while len(inflight) < window.limit and (segment := self._next(now)):
                reserved, wait = pace.reserve(1, now)
                if wait > 0:  # the budget is spent: this segment goes first when it refills
                    self.idle.appendleft(segment)
                    self.pause_until = max(self.pause_until, now + wait)
                    break
                inflight.send(self._request(transport, segment, reserved))

        try:
            while inflight or self.unfinished:
                now = time.monotonic()
                refill(now)
                timeout = self._wait_hint(now) if len(inflight) < window.limit else None
                if not inflight and timeout is None:  # would wait forever: a bug, say so
                    raise RuntimeError(f"{self.unfinished} Scan segments of "
                                       f"{scanner.where()} left, none of them sendable")
                pages = await inflight.answers(timeout)
                for page in pages:
                    self._settle(page)
                    adapt(page, int(page.failure is None), pace, window, self.stats)
                refill(time.monotonic())
                await inflight.started()
                for page in pages:
                    self._keep(page)
                if self.check.active:
                    await self._refuse_unheld(transport, finished=False)
            await self._refuse_unheld(transport, finished=True)
            pace.finish(time.monotonic())
        finally:
            self.stats.budget_wait_s = pace.waited_s
            await close_requests(inflight, transport)

    def _next(self, now: float) -> _Segment | None:
        """A segment whose next page may be sent now: one past its backoff first."""
        if now < self.pause_until:
            return None
        if self.backing_off and self.backing_off[0][0] <= now:
            return heapq.heappop(self.backing_off)[2]
        return self.idle.popleft() if self.idle else None

    def _wait_hint(self, now: float) -> float | None:
        if self.idle:
            return max(0.0, self.pause_until - now)
        if self.backing_off:
            return max(0.0, max(self.backing_off[0][0], self.pause_until) - now)
        return None

    async def _request(self, transport: Transport, segment: _Segment,
                       reserved: float) -> _Page:
        """Send one Scan page request; what came back, items not yet matched."""
        scanner = self.scanner
        request = {**self.template, "Segment": segment.number}
        if segment.start_key is not None:
            request["ExclusiveStartKey"] = segment.start_key
        page = _Page(segment, reserved=reserved, sent_at=time.monotonic())
        sent = time.perf_counter()
        try:
            answer = await transport.scan(request)
        except client_errors() as exc:
            page.failure = scanner.reader._classify(exc, "Scan")
            page.detail = _error_code(exc)
            self.log.note(page.failure, scanner.table, page.detail)
            return page
        except ssl.SSLCertVerificationError as exc:
            raise scanner.reader.untrusted(exc) from None
        except (*connection_errors(), *unreachable_errors()) as exc:
            page.failure = "connection"
            page.detail = connection_failure(exc, self.log, scanner.table)
            return page
        finally:
            page.latency_ms = (time.perf_counter() - sent) * 1000.0
        page.items = answer.get("Items", [])
        page.scanned = int(answer.get("ScannedCount", len(page.items)))
        page.last_key = answer.get("LastEvaluatedKey") or None
        capacity = answer.get("ConsumedCapacity")
        if isinstance(capacity, dict):
            page.rcu = float(capacity.get("CapacityUnits", 0.0))
            page.rcu_known = True
        page.sdk_retries = int(answer.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        return page

    # -- folding answers in --------------------------------------------------------------

    def _settle(self, page: _Page) -> None:
        """Count one answer; move its segment on, or schedule the page again."""
        stats, segment, now = self.stats, page.segment, time.monotonic()
        stats.requests += 1
        stats.latencies_ms.append(page.latency_ms)
        stats.consumed_rcu += page.rcu
        stats.retries += page.sdk_retries
        if page.failure is None:
            stats.pages += 1
            stats.items_scanned += page.scanned
            segment.start_key = page.last_key
            segment.done = page.last_key is None
            segment.attempts, segment.first_failure = 0, None
            if segment.done:
                self.unfinished -= 1
            else:
                self.idle.append(segment)
            return
        stats.retries += 1
        self.tally.note(page.failure, page.detail)  # counted in stats by kind
        if segment.first_failure is None:
            segment.first_failure = now
        if self.scanner.backoff.expired(segment.first_failure, now):
            self._give_up(now)
        segment.attempts += 1
        delay = self.scanner.backoff.delay(segment.attempts, self.scanner._rng)
        heapq.heappush(self.backing_off, (now + delay, segment.number, segment))
        # As BatchReader: a refused page says something about the table or the endpoint.
        self.pause_until = max(self.pause_until, now + delay)

    def _keep(self, page: _Page) -> None:
        """Match a page's items against the wanted keys; decode and keep the matches."""
        if page.failure is not None:
            return
        item_key = self.scanner.layout.item_key
        wanted = self.wanted
        matched: list[dict[str, Any]] = []
        keys: list[Hashable] = []
        for item in page.items:
            key = item_key(item)
            if wanted is None or key in wanted:
                matched.append(item)
                keys.append(key)
        page.items = []
        if matched:
            if self.check.active:
                self.check.observe(matched)
            columns = self._columns(matched)
            self.keys += keys
            self.columns = [extend_column(kept, values)
                            for kept, values in zip(self.columns, columns, strict=True)]
        self.stats.items_matched += len(matched)
        if self.progress is not None and page.scanned:
            self.progress(page.scanned)

    def _columns(self, items: list[dict[str, Any]]) -> list[list[Any]]:
        assert self.decode is not None
        try:
            return self.decode(items)
        except (ValueError, TypeError, KeyError, OverflowError):
            # Item by item, to name the one at fault.
            layout = self.scanner.layout
            one = layout.row_decoder(self.features, base64_values=self.base64)
            rows = [self.scanner.reader.decode_item(one, item) for item in items]
            return [list(values) for values in zip(*rows, strict=True)]

    async def _refuse_unheld(self, transport: Transport, finished: bool) -> None:
        check = self.check
        missing = check.refused(finished)
        if missing:
            reader = self.scanner.reader
            # Per key, from the same budget: this request is a BatchGetItem, not a page.
            pace = ReadPace(reader.pacer, ReadCost(self.settings.consistent_reads))
            held = await reader._held_features(
                transport, check.sample, {"ConsistentRead": self.settings.consistent_reads},
                pace)
            raise UnknownFeatureError(
                refusal_message(reader.where(), check, missing, held, finished), missing, held)

    def _give_up(self, now: float) -> None:
        left = [s for s in self.segments if not s.done]
        waited = max(now - s.first_failure for s in left if s.first_failure is not None)
        numbers = ", ".join(str(s.number) for s in left[:10]) + (", …" if len(left) > 10 else "")
        raise RetryDeadlineExceeded(
            f"{len(left)} of {len(self.segments)} Scan segments of {self.scanner.where()} "
            f"(segments {numbers} of {self.total}) were still unfinished after retrying for "
            f"{waited:.1f}s (retry_deadline_s={self.scanner.backoff.deadline_s:g}): "
            f"{self.tally.explain()} No rows were written.",
            keys_left=len(left), stats=self.stats,
        )
