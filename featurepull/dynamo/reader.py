"""BatchReader: the concurrent BatchGetItem fan-out. Keys in, one row per key out, in order.

One read path for any size: keys are deduplicated, cut into requests of at most
``batch_size`` keys, and sent with at most ``max_read_workers`` requests in flight, through
the transport ``settings.transport`` names: featurepull's own HTTP requests, all on one
event loop in the calling thread (no thread switches, no GIL handed between threads on every
socket call), or botocore's, each on a thread of its own. Items are matched to keys by key
value (DynamoDB answers in any order). Keys left in UnprocessedKeys, and whole requests that
were throttled, failed with 5xx or lost their connection, are re-requested after a capped,
fully jittered backoff — folded into full batches with keys not yet sent — until a per-key
deadline; a whole request that failed also holds back new requests for that long. A read
that runs out of time says which kind of failure kept its keys unanswered. A key is reported
missing only when DynamoDB answered a request for it without returning it.

Each request runs in a copy of the caller's ``contextvars`` context, so whatever the caller
bound for its log lines (a worker binds job, shard and task) is on the lines logged while
reading, from any thread. Retries are logged once per burst of each kind, not once per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import heapq
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Iterator, Mapping, Sequence, Sized
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from featurepull.arrow_columns import extend_column
from featurepull.config import DynamoSettings
from featurepull.dynamo._aws_errors import (
    client_errors,
    connection_errors,
    no_credentials_errors,
    unreachable_errors,
)
from featurepull.dynamo.client import process_client
from featurepull.dynamo.concurrency import Aimd
from featurepull.dynamo.errors import (
    EndpointUnreachable,
    ItemDecodeError,
    PermanentReadError,
    ReadError,
    RequestError,
    RetryDeadlineExceeded,
    TableError,
    UnknownFeatureError,
)
from featurepull.dynamo.features import FeatureCheck, refusal_message
from featurepull.dynamo.found import FoundRows
from featurepull.dynamo.keys_ahead import KeysAhead
from featurepull.dynamo.layouts import DECODE_ERRORS, ColumnsDecoder, Layout, Row, RowDecoder
from featurepull.dynamo.pacing import (
    Pacer,
    PacerFactory,
    ReadCost,
    ReadPace,
    effective_budget,
    local_pacer,
)
from featurepull.dynamo.retry import THROTTLE_CODES, TRANSIENT_CODES, Backoff, FailureTally
from featurepull.dynamo.stats import ReadStats
from featurepull.dynamo.transport import BrokenResponse, Transport, transport_for

if TYPE_CHECKING:
    import pyarrow as pa
    from botocore.exceptions import ClientError

Progress = Callable[[int], None]
T = TypeVar("T")

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
    """Rows in input order (``None`` where DynamoDB has no item) and what the read did; a
    read of several tables (Feast views) also gives each table's own, in ``by_table``."""

    rows: Sequence[Row | None]  # a FoundRows: the decoded columns, and tuples on demand
    stats: ReadStats
    by_table: dict[str, ReadStats] = field(default_factory=dict)


@dataclass
class _Decoders:
    """A layout's decoders for one read: all items of an answer at once, and one item."""

    columns: ColumnsDecoder
    one: RowDecoder


@dataclass
class _Outcome:
    """What one request came back with; folded into the read's state by the main thread."""

    batch: list[int]
    wanted: dict[Hashable, int] = field(default_factory=dict)  # key -> its unique index
    unprocessed: list[int] = field(default_factory=list)
    failure: str | None = None  # "throttle" | "server" | "connection"
    detail: str = ""  # the error code or connection failure, for the deadline message
    items: list[dict[str, Any]] = field(default_factory=list)  # returned, not yet decoded
    latency_ms: float = 0.0
    rcu: float = 0.0
    rcu_known: bool = False  # the answer carried ConsumedCapacity
    sdk_retries: int = 0
    reserved: float = 0.0  # RCU taken from the budget for this request
    sent_at: float = 0.0  # time.monotonic() when sent


class BatchReader:
    """Reads the latest row of many keys from one table, in the order they were given."""

    # Found items decoded together, across answers (10% found: ~20 answers of 10 items).
    # It bounds the raw items held, whatever the read's size, and how long a decode holds
    # up the answers that arrive meanwhile (~0.3-0.7 ms; 1,000 items, ~3 ms, held ~10 of
    # them and their slots' next requests); a call per 200 items costs ~2% more than per
    # 1,000, one per answer of 10 items ~80% more.
    decode_batch = 200

    def __init__(self, table: str, layout: Layout, settings: DynamoSettings,
                 client: Any | None = None, seed: int | None = None,
                 pacers: PacerFactory = local_pacer, *,
                 described: Mapping[str, Any] | None = None,
                 carried: Mapping[str, Any] | None = None) -> None:
        self.table = table
        self.layout = layout
        self.settings = settings
        self._client = client
        self._rng = random.Random(seed)
        self._checked = False
        # A DescribeTable block its caller already asked for (the plain layout's plan):
        # check_table checks it instead of asking again.
        self._described = described
        # The table's key schema as another process checked it earlier (a job's submitter:
        # ``featurepull.dynamo.plan.carried_keys``): check_table takes it without a
        # DescribeTable, and a read under it that finds nothing or is refused describes the
        # table then (`_verify`): one recreated with other keys since fails with TableError.
        self._carried = carried
        self._unverified = False
        self._pacers = pacers
        self._pacer: Pacer | None = None
        self.budget: float | None = None  # RCU/s, resolved by check_table
        self.description: dict[str, Any] | None = None  # DescribeTable's, from check_table
        self.reading: ReadStats | None = None  # the read under way, for progress reports
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
        except client_errors() as exc:
            code = _error_code(exc)
            if code == "ResourceNotFoundException":
                raise TableError(f"{self.where()} does not exist; check --table, "
                                 "--project, the table name template and the region") from None
            raise TableError(f"cannot describe {self.where()}: {code}: {exc}") from None
        except connection_errors() as exc:
            raise TableError(f"cannot reach DynamoDB for {self.where()}: {exc}") from None
        except unreachable_errors() as exc:
            raise EndpointUnreachable(f"{exc}; check --endpoint-url, --region and the "
                                      "network") from None
        except no_credentials_errors():
            raise TableError(f"no AWS credentials found to read {self.where()}: configure the "
                             "credential chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...)") from None

    def check_table(self) -> None:
        """Check once that the table exists and has the layout's key schema, and resolve
        its read budget (a percentage needs the table's capacity)."""
        if not self._checked:
            carried = None if self._needs_capacity() else self._carried
            description = (dict(self._described) if self._described is not None
                           else dict(carried) if carried is not None else self.describe())
            self.layout.check_table(self.table, description)
            self._unverified = self._described is None and carried is not None
            self.description = description
            self.budget = effective_budget(self.settings.max_rcu_per_s,
                                           self.settings.table_budgets.get(self.table),
                                           self.table, description)
            if self.budget is not None:
                self._pacer = self._pacers(self.table, self.budget)
            self._checked = True

    def _needs_capacity(self) -> bool:
        """Whether a read budget is a percentage of the table's capacity, which only its
        DescribeTable says (a carried key schema does not)."""
        return any(isinstance(value, str) for value in (
            self.settings.max_rcu_per_s, self.settings.table_budgets.get(self.table)))

    def _verify(self) -> None:
        """The table described now, for a read under a carried key schema that found
        nothing or was refused: DynamoDB refuses keys of another schema, but an emulator
        may answer them with nothing (moto, for a key of another type). A table keyed
        otherwise than when its job was planned raises TableError (what to do named)."""
        description = self.describe()
        try:
            self.layout.check_table(self.table, description)
        except TableError as exc:
            raise TableError(f"{exc}; its submitter found it keyed as the job reads it "
                             f"({self.where()} now): recreated since, or the submitter's "
                             "region or endpoint is not the workers'? Submit the job again "
                             "to read the table as it is now") from None
        self._unverified = False  # the schema checked holds: later reads need no look

    @property
    def pacer(self) -> Pacer | None:
        """The table's read budget as a pacer (None without one), once check_table ran."""
        return self._pacer

    def read(self, keys: Sequence[Hashable], features: Sequence[str],
             progress: Progress | None = None, row_offset: int = 0, *,
             allow_missing_features: bool = False,
             positions: Sequence[int] | pa.Array | None = None) -> ReadResult:
        """One row per key, in order: ``(event_timestamp, *features)`` or ``None``.

        ``row_offset`` is the number of entity rows before ``keys[0]`` (a shard's place in
        its file), so messages name the entity row of the whole file. A requested feature
        that none of the found items holds raises UnknownFeatureError (rule in
        :mod:`featurepull.dynamo.features`) unless ``allow_missing_features``. With
        ``positions`` (:func:`featurepull.dynamo.keys.unique_keys`) the keys are already
        unique and input row ``i`` is ``keys[positions[i]]``; ``keys`` may be a
        :class:`~featurepull.dynamo.keys_ahead.KeysAhead` still hashing (a thread of its own,
        if started, is joined before this returns or raises)."""
        with closing(keys) if isinstance(keys, KeysAhead) else nullcontext():
            return self._read(keys, features, progress, row_offset, allow_missing_features,
                              positions)

    def _read(self, keys: Sequence[Hashable], features: Sequence[str],
              progress: Progress | None, row_offset: int, allow_missing_features: bool,
              positions: Sequence[int] | pa.Array | None) -> ReadResult:
        _check_features(features)
        self.check_table()
        started = time.perf_counter()
        check = FeatureCheck(() if allow_missing_features else features, self.layout)
        state = _ReadState(keys, self.settings.batch_size, check, row_offset, positions,
                           width=1 + len(features), wire_keys=self.layout.wire_keys_json)
        self.reading = state.stats
        template = {
            **self.layout.projection(features),
            "ConsistentRead": self.settings.consistent_reads,
        }
        # On a loop kept between reads: its connections from the last read are this one's.
        # (Imported here: a submit plans its reads without its loop, http and httptools.)
        from featurepull.dynamo.loops import kept_loop

        with kept_loop() as loop:
            transport = transport_for(self.client, self.settings,
                                      base64_values=self.layout.decodes_base64, loop=loop)
            decode = _Decoders(
                self.layout.columns_decoder(features, base64_values=transport.base64_values),
                self.layout.row_decoder(features, base64_values=transport.base64_values))
            with cyclic_gc_paused():
                try:
                    loop.run(self._dispatch(transport, state, template, decode, progress))
                except PermanentReadError:
                    if self._unverified:
                        self._verify()
                    raise
        stats = state.stats
        self.reading = None
        rows = state.found_rows()
        if self._unverified and len(rows) and not rows.slots:  # (no item found: O(1))
            self._verify()
        repeated = rows.repeated_slot()
        if repeated is not None:
            raise ReadError(f"{self.where()} answered key {state.keys[repeated]!r} with two "
                            "items; DynamoDB answers each key of a BatchGetItem at most once, "
                            "so the endpoint (a proxy or an emulator?) is not answering as "
                            "DynamoDB does and the read is not used")
        stats.found = rows.found_count
        stats.missing = len(rows) - stats.found
        stats.seconds = time.perf_counter() - started
        return ReadResult(rows, stats)

    async def _dispatch(self, transport: Transport, state: _ReadState,
                        template: dict[str, Any], decode: _Decoders,
                        progress: Progress | None) -> None:
        """Keep ``max_read_workers`` requests in flight until every key is answered.

        A request's slot is refilled as soon as its answer is parsed, in the transport's
        callback that hands the answer over (no task per request, none to wake): the answer
        is settled (retries, the budget, the in-flight limit) and the request that takes its
        place started there, written with the others of that turn of the loop first thing in
        the next (:mod:`.http`). Its items are decoded and progress reported by this
        coroutine afterwards: decoding is most of a
        read's CPU, and done first it would hold every answer that arrives meanwhile, and
        the request that could follow it, in a queue.

        How many is ``window.limit`` (AIMD, at most ``max_read_workers``); with a read
        budget each request first takes its estimated cost from the pacer, and when the
        budget is spent new requests wait until it has refilled."""
        window = Aimd(self.settings.max_read_workers, self.settings.adaptive_concurrency)
        pace = ReadPace(self._pacer, ReadCost(self.settings.consistent_reads))
        state.stats.budget_rcu_per_s = pace.rate
        inflight: InFlight[tuple[_Outcome, int]] = InFlight()
        context = contextvars.copy_context()  # the caller's log bindings, for every answer
        stopped = False  # the read is refused: nothing more is sent

        def refill(now: float) -> None:
            while (not stopped and len(inflight) < window.limit
                   and (batch := state.next_batch(now))):
                reserved, wait = pace.reserve(len(batch), now)
                if wait > 0:
                    state.hold(batch, now, wait)
                    break
                call: _Call[tuple[_Outcome, int]] = inflight.expect()
                self._send(transport, batch, state, template, reserved,
                           functools.partial(answered, call))

        def answered(call: _Call[tuple[_Outcome, int]], outcome: _Outcome,
                     answer: dict[str, Any] | BaseException) -> None:
            if not inflight.taking(call):
                return  # the read is over, or ends with another request's error
            try:
                count = context.run(take, outcome, answer)
            except BaseException as exc:  # raised by the dispatcher
                inflight.settle(call, error=exc)
                return
            inflight.settle(call, (outcome, count))

        def take(outcome: _Outcome, answer: dict[str, Any] | BaseException) -> int:
            self._take_answer(outcome, answer, state)
            count = self._settle(outcome, state)
            adapt(outcome, count, pace, window, state.stats)
            refill(time.monotonic())
            return count

        try:
            while state.pending() or inflight:
                now = time.monotonic()
                refill(now)
                timeout = state.wait_hint(now) if len(inflight) < window.limit else None
                ahead = state.ahead
                if ahead is not None and ahead.unhashed:  # keys left to hash, no thread on it
                    # The requests of this turn written first, then a chunk of keys (the
                    # first round trip has nothing else to do), then the answers come so far.
                    await asyncio.sleep(0)
                    ahead.step()
                    timeout = 0.0
                for outcome, count in await inflight.answers(timeout):
                    self._store_rows(outcome, state, decode)
                    if progress is not None and count:
                        progress(count)
                if state.features.active and state.features.refused(finished=False):
                    stopped = True
                    await self._refuse_unheld(transport, state, template, pace, finished=False)
            self._decode_waiting(state, decode)
            await self._refuse_unheld(transport, state, template, pace, finished=True)
            pace.finish(time.monotonic())  # not after a failure: it may be Redis's
        except BaseException:
            # An item that does not decode, in an answer that came before the failure, is
            # the error the read would have raised first had each answer been decoded at once.
            self._decode_waiting(state, decode)
            raise
        finally:
            state.stats.budget_wait_s = pace.waited_s
            await close_requests(inflight, transport)

    def _send(self, transport: Transport, batch: list[int], state: _ReadState,
              template: dict[str, Any], reserved: float,
              answered: Callable[[_Outcome, dict[str, Any] | BaseException], None]) -> None:
        """Start one BatchGetItem (the transport writes it); ``answered`` gets its outcome
        (items not yet decoded) and what the transport came back with."""
        layout, keys = self.layout, state.keys
        batch_keys = [keys[i] for i in batch]
        wire = state.wire_keys(batch_keys) if transport.json_fragments else None
        request = {self.table: {**template, "Keys": wire if wire is not None
                                else [layout.wire_key(key) for key in batch_keys]}}
        outcome = _Outcome(batch, dict(zip(batch_keys, batch, strict=True)), reserved=reserved,
                           sent_at=time.monotonic())
        sent = time.perf_counter()

        def done(answer: dict[str, Any] | BaseException) -> None:
            outcome.latency_ms = (time.perf_counter() - sent) * 1000.0
            answered(outcome, answer)

        transport.start_batch_get_item(request, done)

    def _take_answer(self, outcome: _Outcome, answer: dict[str, Any] | BaseException,
                     state: _ReadState) -> None:
        """What one BatchGetItem came back with, into its outcome; an error that is not a
        refusal, a throttle or a lost connection is raised."""
        table = self.table
        if isinstance(answer, BaseException):
            if isinstance(answer, client_errors()):
                outcome.failure = self._classify(answer)
                outcome.detail = _error_code(answer)
                state.retry_log.note(outcome.failure, table, outcome.detail)
                return
            if isinstance(answer, ssl.SSLCertVerificationError):
                raise self.untrusted(answer) from None
            if isinstance(answer, (*connection_errors(), *unreachable_errors())):
                outcome.failure = "connection"
                outcome.detail = connection_failure(answer, state.retry_log, table)
                return
            raise answer
        outcome.items = answer["Responses"].get(table, [])
        left = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", ())
        if left:
            key_of, wanted = self.layout.key_of, outcome.wanted
            outcome.unprocessed = [wanted[key_of(key)] for key in left]
            state.retry_log.note("unprocessed", table,
                                 f"{len(outcome.unprocessed)} of {len(outcome.batch)} keys")
        for capacity in answer.get("ConsumedCapacity", ()):
            outcome.rcu += float(capacity.get("CapacityUnits", 0.0))
            outcome.rcu_known = True
        outcome.sdk_retries = int(answer.get("ResponseMetadata", {}).get("RetryAttempts", 0))

    async def _refuse_unheld(self, transport: Transport, state: _ReadState,
                             template: dict[str, Any], pace: ReadPace,
                             finished: bool) -> None:
        """Raise UnknownFeatureError for requested features no found item holds, once the
        rule of :mod:`featurepull.dynamo.features` has a verdict."""
        check = state.features
        missing = check.refused(finished)
        if missing:
            held = await self._held_features(transport, check.sample, template, pace)
            raise UnknownFeatureError(
                refusal_message(self.where(), check, missing, held, finished), missing, held)

    async def _held_features(self, transport: Transport, keys: list[Hashable],
                             template: dict[str, Any], pace: ReadPace) -> list[str] | None:
        """The features the whole items of ``keys`` hold (one request, no projection);
        None when that request fails or returns nothing. Paid from the read budget like
        every other request: it waits for the budget, and settles what DynamoDB charged."""
        request = {self.table: {"Keys": [self.layout.wire_key(key) for key in keys],
                                "ConsistentRead": template["ConsistentRead"]}}
        while True:
            reserved, wait = pace.reserve(len(keys), time.monotonic())
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        try:
            answer = await transport.batch_get_item(request)
        except (*client_errors(), *connection_errors(), *unreachable_errors()):
            pace.settle(reserved, 0.0, 0)  # refused or lost: nothing was charged
            return None
        charged = [float(capacity.get("CapacityUnits", 0.0))
                   for capacity in answer.get("ConsumedCapacity", ())]
        pace.settle(reserved, sum(charged) if charged else None, len(keys))
        items = answer["Responses"].get(self.table, [])
        return sorted({name for item in items for name in self.layout.features_of(item)}
                      ) if items else None

    def _store_rows(self, outcome: _Outcome, state: _ReadState, decode: _Decoders) -> None:
        """Take the items of one answer: matched to their keys now, decoded with those of
        the answers before it once ``decode_batch`` items wait (or the read ends). One
        decode of a thousand items costs far less than a hundred of ten (per-call overhead).
        While the feature check is active an answer is decoded alone, at once: the check
        needs decoded items (an item in another layout is named by its decode error)."""
        items, wanted = outcome.items, outcome.wanted
        if not items:  # nothing found: nothing to decode, nothing to observe
            return
        outcome.items = []
        if state.features.active:
            self._store_answer(items, wanted, state, decode)
            return
        try:
            slots = [wanted[key] for key in map(self.layout.key_of, items)]
        except DECODE_ERRORS:  # a stray key, or a key that is not one: raised as alone,
            # its decode error first (and what waits, decoded on the way out, before it).
            # Not any Exception: a signal handler's (Celery's soft time limit) ends the read.
            self._store_answer(items, wanted, state, decode)
            return
        state.waiting.append((items, slots, wanted))
        state.waiting_items += len(items)
        if state.waiting_items >= self.decode_batch:
            self._decode_waiting(state, decode)

    def _decode_waiting(self, state: _ReadState, decode: _Decoders) -> None:
        """Decode the answers that wait, as one batch; when it fails, answer by answer, so
        the item at fault is named exactly as when each answer was decoded alone."""
        waiting = state.waiting
        if not waiting:
            return
        state.waiting, state.waiting_items = [], 0
        try:
            columns = decode.columns([item for items, _, _ in waiting for item in items])
        except DECODE_ERRORS:
            for items, slots, wanted in waiting:
                state.add_found(slots, self._answer_columns(items, wanted, state, decode))
            return
        state.add_found([slot for _, slots, _ in waiting for slot in slots], columns)

    def _store_answer(self, items: list[dict[str, Any]], wanted: dict[Hashable, int],
                      state: _ReadState, decode: _Decoders) -> None:
        """Decode one answer's items alone, observe them, match them to their keys."""
        columns = self._answer_columns(items, wanted, state, decode)
        if state.features.active:  # after decoding: an item in another layout is named
            state.features.observe(items)
        layout = self.layout
        try:
            slots = [wanted[layout.key_of(item)] for item in items]
        except KeyError:
            stray = next(key for key in map(layout.key_of, items) if key not in wanted)
            raise ReadError(f"{self.where()} returned an item for a key that was not "
                            f"requested: {stray!r}") from None
        state.add_found(slots, columns)

    def _answer_columns(self, items: list[dict[str, Any]], wanted: dict[Hashable, int],
                        state: _ReadState, decode: _Decoders) -> list[list[Any]]:
        try:
            return decode.columns(items)
        except DECODE_ERRORS:
            # Item by item, to name the one at fault.
            rows = [self._decode_one(decode.one, item, state, wanted) for item in items]
            return [list(column) for column in zip(*rows, strict=True)]

    def _decode_one(self, decode: RowDecoder, item: dict[str, Any], state: _ReadState,
                    wanted: dict[Hashable, int]) -> Row:
        return self.decode_item(decode, item, lambda key: state.first_row(wanted[key]) + 1
                                + state.row_offset)

    def decode_item(self, decode: RowDecoder, item: dict[str, Any],
                    entity_row: Callable[[Hashable], int] | None = None) -> Row:
        """One item's row; an item that cannot be decoded raises a ReadError naming the
        table, the key and (``entity_row`` of the key) the entity file's row."""
        try:
            return decode(item)
        except ItemDecodeError as exc:
            key = self.layout.key_of(item)
            parts = key if isinstance(key, tuple) else (key,)
            row = f" (entity row {entity_row(key):,})" if entity_row is not None else ""
            raise ReadError(f"{self.where()}: the item of key {', '.join(map(str, parts))}"
                            f"{row}: {exc}") from exc
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise ReadError(f"{self.where()}: the item of key {self.layout.key_of(item)!r} "
                            f"cannot be decoded ({type(exc).__name__}: {exc}); is it in the "
                            f"{self.layout.name} layout?") from exc

    def untrusted(self, exc: ssl.SSLCertVerificationError) -> PermanentReadError:
        """The error of an endpoint whose TLS certificate does not verify."""
        return PermanentReadError(f"{self.where()}: the endpoint's TLS certificate does not "
                                  f"verify ({exc.verify_message}); check --endpoint-url and "
                                  "AWS_CA_BUNDLE")

    def _classify(self, exc: ClientError,
                  operation: str = "BatchGetItem") -> str:
        """"throttle" or "server" (retried), or raise PermanentReadError."""
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
        raise PermanentReadError(f"{self.where()} refused {operation}: {code}: {message}")

    def _settle(self, outcome: _Outcome, state: _ReadState) -> int:
        """Fold one outcome into the read (main thread); return keys newly answered."""
        stats, now = state.stats, time.monotonic()
        stats.requests += 1
        stats.latencies_ms.append(outcome.latency_ms)
        stats.consumed_rcu += outcome.rcu
        stats.retries += outcome.sdk_retries
        if outcome.failure is not None:
            stats.retries += 1
            state.tally.note(outcome.failure, outcome.detail)  # counted in stats by kind
            # A whole request refused or lost says something about the table or the
            # endpoint, not about these keys: hold back new requests too. Without it a dead
            # endpoint turns every unsent batch into an instant failure and a busy loop.
            self._retry_later(outcome.batch, state, now, pause=True)
            return 0
        if outcome.unprocessed:
            stats.unprocessed_retries += len(outcome.unprocessed)
            state.tally.note("unprocessed")  # counted in stats.unprocessed_requests
            # Keys left over are DynamoDB's throttle signal for BatchGetItem: with adaptive
            # concurrency they hold back new requests too, as a refused request does.
            self._retry_later(outcome.unprocessed, state, now,
                              pause=self.settings.adaptive_concurrency)
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
            state.pause_until = max(state.pause_until, now + delay)

    def _give_up(self, state: _ReadState, now: float) -> None:
        left = state.unique - state.answered
        waited = max(now - t for t in state.first_failure.values())
        raise RetryDeadlineExceeded(
            f"{left} of {state.unique} keys of {self.where()} were still unanswered after "
            f"retrying for {waited:.1f}s (retry_deadline_s={self.backoff.deadline_s:g}): "
            f"{state.tally.explain()} No rows were written.",
            keys_left=left, stats=state.stats,
        )


class Answer(Protocol):
    """What :func:`adapt` reads of one request's outcome (BatchGetItem's or a Scan page's)."""

    failure: str | None
    reserved: float
    rcu: float
    rcu_known: bool
    sent_at: float

    @property
    def unprocessed(self) -> Sized: ...


def adapt(outcome: Answer, answered: int, pace: ReadPace, window: Aimd,
          stats: ReadStats) -> None:
    """Settle one answer with the budget and the in-flight limit (AIMD); ``answered``
    counts what the pace's cost is learned per (keys, or 1 for a Scan page)."""
    refused = outcome.failure is not None
    pace.settle(outcome.reserved, outcome.rcu if outcome.rcu_known or refused else None,
                answered)
    if outcome.failure == "throttle" or outcome.unprocessed:
        window.throttled(outcome.sent_at)
    elif not refused:
        window.clean()
    stats.concurrency_min, stats.concurrency_max = window.low, window.high


class _RetryLog:
    """Logs the first retry of each burst of each kind, from whichever thread meets it."""

    lines: dict[str, str] = _RETRY_LINES

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def note(self, kind: str, table: str, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            self._last[kind] = now
        if last is None or now - last > BURST_GAP_S:
            logger.info(self.lines[kind], table, detail,
                        extra={"table": table, "retry": kind, "detail": detail})


class _ReadState:
    """The bookkeeping of one read: unique keys, found columns, and what is waiting to be
    sent."""

    def __init__(self, keys: Sequence[Hashable], batch_size: int,
                 features: FeatureCheck, row_offset: int = 0,
                 positions: Sequence[int] | pa.Array | None = None, width: int = 1,
                 wire_keys: Callable[[list[Hashable]], Any] | None = None) -> None:
        self.row_offset = row_offset
        if positions is None:
            index: dict[Hashable, int] = {}
            setdefault = index.setdefault
            self.positions: Sequence[int] | pa.Array = [
                setdefault(key, len(index)) for key in keys]
            self.keys: Sequence[Hashable] = list(index)
        else:
            self.positions, self.keys = positions, keys
        self.unique = len(self.keys)
        # Keys still being hashed: batches are taken from those hashed so far, a plain list.
        self.ahead = keys if isinstance(keys, KeysAhead) and positions is not None else None
        if self.ahead is not None:
            self.keys = self.ahead.hashed
        self.slots: list[int] = []  # the unique index of each found item, in found order
        self.columns: list[list[Any]] = [[] for _ in range(width)]
        # Answers matched to their keys, not yet decoded: (items, their slots, wanted).
        self.waiting: list[tuple[list[dict[str, Any]], list[int], dict[Hashable, int]]] = []
        self.waiting_items = 0
        self.wire_keys = wire_keys if wire_keys is not None else _no_fragment
        self.batch_size = batch_size
        self.cursor = 0  # next never-sent key
        self.retry_heap: list[tuple[float, int, list[int]]] = []
        self.seq = 0
        self.answered = 0
        self.attempts: dict[int, int] = {}
        self.first_failure: dict[int, float] = {}
        self.pause_until = 0.0
        self.stats = ReadStats(keys=len(self.positions), unique_keys=self.unique)
        self.retry_log = _RetryLog()
        self.tally = FailureTally(self.stats)
        self.features = features

    def add_found(self, slots: list[int], columns: list[list[Any]]) -> None:
        """The decoded columns of one answer's items, whose unique keys are ``slots``."""
        self.slots.extend(slots)
        self.columns = [extend_column(mine, theirs)
                        for mine, theirs in zip(self.columns, columns, strict=True)]

    def first_row(self, unique: int) -> int:
        """The first input row (from 0) whose key is unique key ``unique``."""
        positions = self.positions
        return list(positions.to_pylist() if hasattr(positions, "to_pylist")
                    else positions).index(unique)

    def found_rows(self) -> FoundRows:
        return FoundRows(self.positions, self.unique, self.slots, self.columns)

    def hold(self, batch: list[int], now: float, wait: float) -> None:
        """Put back a batch the budget could not pay for; send nothing new for ``wait``."""
        self.schedule(batch, now)
        self.pause_until = max(self.pause_until, now + wait)

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
            if self.ahead is not None and end > len(self.keys):
                self.ahead.wait(end)
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


class _Call(Generic[T]):
    """A request whose transport calls back (no task): its outcome or error, once settled."""

    __slots__ = ("_error", "_result", "cancelled")

    def __init__(self) -> None:
        self.cancelled = False
        self._result: T | None = None
        self._error: BaseException | None = None

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return cast(T, self._result)

    def cancel(self) -> None:
        self.cancelled = True


class InFlight(set["asyncio.Task[T] | _Call[T]"]):
    """A read's requests in flight — asyncio tasks, or calls a transport settles from its
    callbacks (:meth:`expect`, :meth:`settle`) — and the answers of those that finished, in
    the order they finished. Waiting costs nothing per request still in flight, where
    ``asyncio.wait`` adds and removes a callback on each, every time."""

    def __init__(self) -> None:
        super().__init__()
        self._unstarted = False  # tasks sent that have not had a turn of the loop yet
        self._failed = False  # a call settled with an error
        self._finished: list[asyncio.Task[T] | _Call[T]] = []
        self._wakeup: asyncio.Future[None] | None = None

    def send(self, request: Coroutine[Any, Any, T]) -> None:
        """Start a request: a task, which runs in a copy of this context (log bindings go
        with it)."""
        task = asyncio.ensure_future(request)
        task.add_done_callback(self._finish)
        self.add(task)
        self._unstarted = True

    def expect(self) -> _Call[T]:
        """A request its transport will answer through :meth:`settle`."""
        call: _Call[T] = _Call()
        self.add(call)
        return call

    def taking(self, call: _Call[T]) -> bool:
        """Take ``call`` out of flight as its answer comes; False: nobody wants the answer
        any more (the read is over, or ends with an error that came first)."""
        self.discard(call)
        return not (call.cancelled or self._failed)

    def settle(self, call: _Call[T], result: T | None = None,
               error: BaseException | None = None) -> None:
        """``call``'s answer, or ``error``, raised by :meth:`answers` (no answer is taken
        after it)."""
        call._result, call._error = result, error
        if error is not None:
            self._failed = True
        self._finish(call)

    async def started(self) -> None:
        """Let the requests sent since the last call run up to their first wait (written
        out, or connecting) before the caller goes on. A task only runs once its caller
        awaits: a dispatcher that decodes answers or reports progress right after sending
        would otherwise hold its new requests back for that long (a decode of 1,000 items
        is ~3 ms, a worker's progress report a few Redis round trips)."""
        if self._unstarted:
            self._unstarted = False
            await asyncio.sleep(0)  # the new tasks were scheduled first: they run first

    def _finish(self, task: asyncio.Task[T] | _Call[T]) -> None:
        self._finished.append(task)
        _wake(self._wakeup)

    async def answers(self, timeout: float | None) -> list[T]:
        """The answers of the requests finished since the last call, waiting for one at
        most ``timeout`` (for ``timeout`` only when none is in flight)."""
        if not self._finished:
            self._unstarted = False  # waiting gives them their turn
            if not self:
                await asyncio.sleep(timeout or 0.0)
                return []
            loop = asyncio.get_running_loop()
            self._wakeup = wakeup = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _wake, wakeup)
            try:
                await wakeup
            finally:
                self._wakeup = None
                if timer is not None:
                    timer.cancel()
        finished, self._finished = self._finished, []
        # Results first: a task whose error is raised here leaves the others in the set,
        # where close_requests collects them (asyncio would log each as never retrieved).
        results = [task.result() for task in finished]
        self.difference_update(finished)
        return results


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def close_requests(inflight: InFlight[Any], transport: Transport) -> None:
    """End a read's event loop work: cancel the requests still in flight (a read that
    failed), collect the tasks among them, and close the transport (its connections, and
    the calls it still owed)."""
    for request in inflight:
        request.cancel()
    tasks = [request for request in inflight if isinstance(request, asyncio.Task)]
    if tasks:
        await asyncio.wait(tasks)
        for task in tasks:  # retrieved, so asyncio does not log them at exit
            if not task.cancelled():
                task.exception()
    transport.close()
    await asyncio.sleep(0)  # let the closed connections say goodbye


def connection_failure(exc: BaseException, log: _RetryLog, table: str) -> str:
    """Note a request that lost its connection or answer; its detail for the deadline
    message."""
    detail = str(exc) if isinstance(exc, BrokenResponse) else type(exc).__name__
    log.note("connection", table, detail)
    return str(exc) or type(exc).__name__


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while reading. A read allocates a dozen containers per
    value (parsed JSON, rows) and keeps the rows: the collector, triggered every 700
    allocations, would walk the growing heap again and again (10-20% of a read's CPU).
    Nothing a read makes holds a reference cycle, so reference counting frees it all.
    The objects made meanwhile go to the oldest generation unexamined (freeze, unfreeze):
    re-enabled as they were, the collector would walk them all at the next allocation (a
    row tuple each: ~30 ms of CPU at 100,000 rows) only to find no garbage. Not where the
    caller froze objects itself (a pre-fork server): unfreezing would release those too."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _no_fragment(keys: list[Hashable]) -> None:
    return None


def _error_code(exc: ClientError) -> str:
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or (f"HTTP {status}" if status else type(exc).__name__))


def _check_features(features: Sequence[str]) -> None:
    if not features:
        raise RequestError("no features requested: pass --features a,b,c")
    seen: set[str] = set()
    for name in features:
        if not isinstance(name, str) or not name:
            raise RequestError(f"feature names must be non-empty strings, got {name!r}")
        if name in seen:
            raise RequestError(f"feature {name!r} is requested twice; name it once")
        seen.add(name)
