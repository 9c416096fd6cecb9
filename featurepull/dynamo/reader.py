"""BatchReader: the threaded BatchGetItem fan-out. Keys in, one row per key out, in order.

One read path for any size: keys are deduplicated, cut into requests of at most
``batch_size`` keys, and sent by ``max_read_workers`` threads sharing the process's client,
with at most that many requests in flight, through the transport ``settings.transport``
names (featurepull's own HTTP requests, or botocore's). Items are matched to keys by key
value (DynamoDB answers in any order). Keys left in UnprocessedKeys, and whole requests that
were throttled, failed with 5xx or lost their connection, are re-requested after a capped,
fully jittered backoff — folded into full batches with keys not yet sent — until a per-key
deadline. A key is reported missing only when DynamoDB answered a request for it without
returning it.

Each request runs in a copy of the caller's ``contextvars`` context, so whatever the caller
bound for its log lines (a worker binds job, shard and task) is on the reader threads' lines
too. Retries are logged once per burst of each kind, not once per request.
"""

from __future__ import annotations

import contextvars
import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions
import botocore.parsers
import urllib3.exceptions

from featurepull.config import DynamoSettings
from featurepull.dynamo.client import process_client
from featurepull.dynamo.errors import (
    PermanentReadError,
    ReadError,
    RetryDeadlineExceeded,
    TableError,
)
from featurepull.dynamo.layouts import Layout, Row
from featurepull.dynamo.retry import THROTTLE_CODES, TRANSIENT_CODES, Backoff
from featurepull.dynamo.stats import ReadStats
from featurepull.dynamo.transport import BrokenResponse, Transport, transport_for

# Exceptions botocore/urllib3 raise when a connection breaks or a response arrives cut or
# garbled; the request is sent again.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.HTTPClientError,  # ConnectionClosed, ReadTimeout, EndpointConnection
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ChecksumError,  # x-amz-crc32 mismatch on a damaged body
    botocore.parsers.ResponseParserError,
    urllib3.exceptions.HTTPError,
    ConnectionError,  # and the fast transport's BrokenResponse (length, crc32, not JSON)
)

Progress = Callable[[int], None]

logger = logging.getLogger(__name__)
# Retries of one kind less than this far apart are one burst, and get one log line. INFO,
# not WARNING: retrying is the reader doing its job; a read that cannot finish raises.
BURST_GAP_S = 5.0
_RETRY_LINES = {
    "throttle": "BatchGetItem on %s throttled (%s): backing off and holding back new requests",
    "unprocessed": "BatchGetItem on %s left keys unprocessed (%s): asking for them again",
    "server": "BatchGetItem on %s failed on the server (%s): retrying",
    "connection": "BatchGetItem on %s lost its connection or response (%s): retrying",
}


@dataclass
class ReadResult:
    """Rows in input order (``None`` where DynamoDB has no item) and what the read did."""

    rows: list[Row | None]
    stats: ReadStats


@dataclass
class _Outcome:
    """What one request came back with; folded into the read's state by the main thread."""

    batch: list[int]
    unprocessed: list[int] = field(default_factory=list)
    failure: str | None = None  # "throttle" | "server" | "connection"
    found: int = 0
    latency_ms: float = 0.0
    rcu: float = 0.0
    sdk_retries: int = 0


class BatchReader:
    """Reads the latest row of many keys from one table, in the order they were given."""

    def __init__(self, table: str, layout: Layout, settings: DynamoSettings,
                 client: Any | None = None, seed: int | None = None) -> None:
        self.table = table
        self.layout = layout
        self.settings = settings
        self._client = client
        self._rng = random.Random(seed)
        self._checked = False
        self.backoff = Backoff(settings.retry_base_delay_s, settings.retry_max_delay_s,
                               settings.retry_deadline_s)

    @property
    def client(self) -> Any:
        """The client in use: the one given, else this process's shared client."""
        return self._client if self._client is not None else process_client(self.settings)

    def where(self) -> str:
        """Table, region and endpoint, for error messages."""
        region = self.settings.region or self.client.meta.region_name
        endpoint = self.settings.endpoint_url or self.client.meta.endpoint_url
        return f"table {self.table} (region {region}, endpoint {endpoint})"

    def describe(self) -> dict[str, Any]:
        """DescribeTable's ``Table`` block, with failures turned into TableError."""
        try:
            return dict(self.client.describe_table(TableName=self.table)["Table"])
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise TableError(f"{self.where()} does not exist; check --table, "
                                 "--project, the table name template and the region") from None
            raise TableError(f"cannot describe {self.where()}: {code}: {exc}") from None
        except CONNECTION_ERRORS as exc:
            raise TableError(f"cannot reach DynamoDB for {self.where()}: {exc}") from None
        except botocore.exceptions.NoCredentialsError:
            raise TableError(f"no AWS credentials found to read {self.where()}: configure the "
                             "credential chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...)") from None

    def check_table(self) -> None:
        """Check once that the table exists and has the layout's key schema."""
        if not self._checked:
            self.layout.check_table(self.table, self.describe())
            self._checked = True

    def read(self, keys: Sequence[Hashable], features: Sequence[str],
             progress: Progress | None = None) -> ReadResult:
        """One row per key, in order: ``(event_timestamp, *features)`` or ``None``."""
        _check_features(features)
        self.check_table()
        started = time.perf_counter()
        state = _ReadState(keys, self.settings.batch_size)
        stats = state.stats
        template = {
            **self.layout.projection(features),
            "ConsistentRead": self.settings.consistent_reads,
        }
        decode = self.layout.row_decoder(features)
        transport = transport_for(self.client, self.settings)
        workers = self.settings.max_read_workers
        with ThreadPoolExecutor(workers, thread_name_prefix="featurepull-read") as pool:
            inflight: set[Future[_Outcome]] = set()
            try:
                while state.pending() or inflight:
                    now = time.monotonic()
                    while len(inflight) < workers and (batch := state.next_batch(now)):
                        # One copy per request: a context cannot be entered by two threads.
                        run = contextvars.copy_context().run
                        inflight.add(pool.submit(run, self._request, transport, batch, state,
                                                 template, decode))
                    timeout = state.wait_hint(now) if len(inflight) < workers else None
                    done, inflight = _wait_some(inflight, timeout)
                    for future in done:
                        answered = self._settle(future.result(), state)
                        if progress is not None and answered:
                            progress(answered)
            except BaseException:
                for future in inflight:
                    future.cancel()
                raise
        rows = state.fan_out()
        stats.found = sum(row is not None for row in rows)
        stats.missing = len(rows) - stats.found
        stats.seconds = time.perf_counter() - started
        return ReadResult(rows, stats)

    def _request(self, transport: Transport, batch: list[int], state: _ReadState,
                 template: dict[str, Any], decode: Callable[[dict[str, Any]], Row]) -> _Outcome:
        """Send one BatchGetItem (in a worker thread) and store the rows it returned."""
        layout, table = self.layout, self.table
        request = {table: {**template, "Keys": [layout.wire_key(state.keys[i]) for i in batch]}}
        outcome = _Outcome(batch)
        sent = time.perf_counter()
        try:
            response = transport.batch_get_item(request)
        except botocore.exceptions.ClientError as exc:
            outcome.failure = self._classify(exc)
            state.retry_log.note(outcome.failure, table, _error_code(exc))
            return outcome
        except CONNECTION_ERRORS as exc:
            outcome.failure = "connection"
            detail = str(exc) if isinstance(exc, BrokenResponse) else type(exc).__name__
            state.retry_log.note("connection", table, detail)
            return outcome
        finally:
            outcome.latency_ms = (time.perf_counter() - sent) * 1000.0
        index, results = state.index, state.results
        for item in response["Responses"].get(table, ()):
            position = index.get(layout.key_of(item))
            if position is None:
                raise ReadError(f"{self.where()} returned an item for a key that was not "
                                f"requested: {layout.key_of(item)!r}")
            try:
                results[position] = decode(item)
            except (ValueError, TypeError, KeyError, OverflowError) as exc:
                raise ReadError(f"{self.where()}: the item of key {layout.key_of(item)!r} cannot "
                                f"be decoded ({type(exc).__name__}: {exc}); is it in the "
                                f"{layout.name} layout?") from exc
            outcome.found += 1
        left = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", ())
        outcome.unprocessed = [index[layout.key_of(key)] for key in left]
        if outcome.unprocessed:
            state.retry_log.note("unprocessed", table,
                                 f"{len(outcome.unprocessed)} of {len(batch)} keys")
        for capacity in response.get("ConsumedCapacity", ()):
            outcome.rcu += float(capacity.get("CapacityUnits", 0.0))
        outcome.sdk_retries = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        return outcome

    def _classify(self, exc: botocore.exceptions.ClientError) -> str:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in THROTTLE_CODES:
            return "throttle"
        if code in TRANSIENT_CODES or status >= 500:
            return "server"
        message = error.get("Message", str(exc))
        if code == "ValidationException" and "key" in message.lower():
            message += f" (does the table's key schema match --layout {self.layout.name}?)"
        raise PermanentReadError(f"{self.where()} refused BatchGetItem: {code}: {message}")

    def _settle(self, outcome: _Outcome, state: _ReadState) -> int:
        """Fold one outcome into the read (main thread); return keys newly answered."""
        stats, now = state.stats, time.monotonic()
        stats.requests += 1
        stats.latencies_ms.append(outcome.latency_ms)
        stats.consumed_rcu += outcome.rcu
        stats.retries += outcome.sdk_retries
        if outcome.failure is not None:
            stats.retries += 1
            if outcome.failure == "throttle":
                stats.throttles += 1
            elif outcome.failure == "server":
                stats.server_errors += 1
            else:
                stats.connection_errors += 1
            self._retry_later(outcome.batch, state, now, pause=outcome.failure == "throttle")
            return 0
        if outcome.unprocessed:
            stats.unprocessed_retries += len(outcome.unprocessed)
            self._retry_later(outcome.unprocessed, state, now, pause=False)
        answered = len(outcome.batch) - len(outcome.unprocessed)
        state.answered += answered
        return answered

    def _retry_later(self, positions: list[int], state: _ReadState, now: float,
                     pause: bool) -> None:
        attempt = 0
        for position in positions:
            first = state.first_failure.setdefault(position, now)
            if self.backoff.expired(first, now):
                self._give_up(state, now)
            state.attempts[position] = state.attempts.get(position, 0) + 1
            attempt = max(attempt, state.attempts[position])
        delay = self.backoff.delay(attempt, self._rng)
        state.schedule(positions, now + delay)
        if pause:
            # Throttling is about the table, not these keys: hold back new requests too.
            state.pause_until = max(state.pause_until, now + delay)

    def _give_up(self, state: _ReadState, now: float) -> None:
        left = state.unique - state.answered
        waited = max(now - t for t in state.first_failure.values())
        raise RetryDeadlineExceeded(
            f"{left} of {state.unique} keys of {self.where()} were still unanswered after "
            f"retrying for {waited:.1f}s (retry_deadline_s={self.backoff.deadline_s:g}): "
            f"DynamoDB kept throttling or leaving them unprocessed "
            f"({state.stats.throttles} throttles, {state.stats.unprocessed_retries} unprocessed "
            "keys so far). Raise the table's read capacity, lower --max-read-workers, or raise "
            "--retry-deadline (retry_deadline_s). No rows were written.",
            keys_left=left,
        )


class _RetryLog:
    """Logs the first retry of each burst of each kind, from whichever thread meets it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def note(self, kind: str, table: str, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            self._last[kind] = now
        if last is None or now - last > BURST_GAP_S:
            logger.info(_RETRY_LINES[kind], table, detail,
                        extra={"table": table, "retry": kind, "detail": detail})


class _ReadState:
    """The bookkeeping of one read: unique keys, results, and what is waiting to be sent."""

    def __init__(self, keys: Sequence[Hashable], batch_size: int) -> None:
        self.index: dict[Hashable, int] = {}
        setdefault = self.index.setdefault
        self.positions = [setdefault(key, len(self.index)) for key in keys]
        self.keys: list[Hashable] = list(self.index)
        self.unique = len(self.keys)
        self.results: list[Row | None] = [None] * self.unique
        self.batch_size = batch_size
        self.cursor = 0  # next never-sent key
        self.retry_heap: list[tuple[float, int, list[int]]] = []
        self.seq = 0
        self.answered = 0
        self.attempts: dict[int, int] = {}
        self.first_failure: dict[int, float] = {}
        self.pause_until = 0.0
        self.stats = ReadStats(keys=len(keys), unique_keys=self.unique)
        self.retry_log = _RetryLog()

    def pending(self) -> bool:
        return self.cursor < self.unique or bool(self.retry_heap)

    def schedule(self, positions: list[int], ready_at: float) -> None:
        self.seq += 1
        heapq.heappush(self.retry_heap, (ready_at, self.seq, list(positions)))

    def next_batch(self, now: float) -> list[int]:
        """Retried keys that are due first, then fresh keys, up to batch_size."""
        if now < self.pause_until:
            return []
        batch: list[int] = []
        room = self.batch_size
        while self.retry_heap and self.retry_heap[0][0] <= now and room:
            ready_at, seq, group = heapq.heappop(self.retry_heap)
            batch.extend(group[:room])
            if len(group) > room:
                heapq.heappush(self.retry_heap, (ready_at, seq, group[room:]))
            room = self.batch_size - len(batch)
        if room and self.cursor < self.unique:
            end = min(self.unique, self.cursor + room)
            batch.extend(range(self.cursor, end))
            self.cursor = end
        return batch

    def wait_hint(self, now: float) -> float | None:
        """How long the dispatcher may sleep before something becomes sendable."""
        if self.cursor < self.unique:
            return max(0.0, self.pause_until - now) if self.pause_until > now else 0.0
        if self.retry_heap:
            return max(0.0, max(self.retry_heap[0][0], self.pause_until) - now)
        return None

    def fan_out(self) -> list[Row | None]:
        results = self.results
        return [results[p] for p in self.positions]


def _wait_some(inflight: set[Future[_Outcome]],
               timeout: float | None) -> tuple[set[Future[_Outcome]], set[Future[_Outcome]]]:
    if not inflight:
        if timeout:
            time.sleep(timeout)
        return set(), set()
    done, not_done = wait(inflight, timeout=timeout, return_when=FIRST_COMPLETED)
    return set(done), set(not_done)


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or (f"HTTP {status}" if status else type(exc).__name__))


def _check_features(features: Sequence[str]) -> None:
    if not features:
        raise ValueError("no features requested: pass --features a,b,c")
    seen: set[str] = set()
    for name in features:
        if not isinstance(name, str) or not name:
            raise ValueError(f"feature names must be non-empty strings, got {name!r}")
        if name in seen:
            raise ValueError(f"feature {name!r} is requested twice")
        seen.add(name)
