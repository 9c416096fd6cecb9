"""A lean load-test DynamoDB endpoint: one synthetic Feast-layout table served over the
DynamoDB JSON protocol with so little CPU of its own that the client's cost shows.

    python -m featurepull.bench.endpoint --port 0 --drivers 1000000 --latency-ms 10
    # prints one line when ready: LISTENING http://127.0.0.1:PORT

    with start_endpoint(drivers=200_000, latency_ms=5) as endpoint:
        BatchReader(DEFAULT_TABLE, layout, DynamoSettings(endpoint_url=endpoint.url, ...))

It answers DescribeTable (with ``ItemCount`` and ``TableSizeBytes``), BatchGetItem
(projections, ConsumedCapacity, DynamoDB's validation errors, UnprocessedKeys and throttling
at chosen rates) and Scan (``Segment``/``TotalSegments`` by hash range, pages of at most 1 MB
or ``Limit`` items, ``ExclusiveStartKey``/``LastEvaluatedKey``, ConsumedCapacity by the size
read: 0.5 RCU per started 4 KB, 1 strongly consistent), ``GET /stats`` (counters,
including what tests check on the wire: calls in flight at once, ConsistentRead, the SigV4
region) and ``DELETE /stats`` (zero them). With ``--provisioned-rcu`` it enforces a table's
read capacity as DynamoDB does (``featurepull.bench.capacity``) and reports each client's
consumption at ``GET /stats/capacity``. Every
JSON fragment of every item is rendered once at startup, so a request costs dict lookups and
string joins. moto, by comparison, answers about 1,000 keys/s on the development machine.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import functools
import gc
import itertools
import json
import os
import random
import resource
import select
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from base64 import b64encode
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import mmh3
import orjson

from featurepull.bench.capacity import Capacity, client_of
from featurepull.bench.wire_keys import KEYS_MARK, MARK, split_keys
from featurepull.dynamo import EntityKeyEncoder
from featurepull.dynamo.feast_values import ValueProto
from featurepull.local import ServiceError

DEFAULT_TABLE = "demo.driver_stats"
FEATURES = ("conv_rate", "acc_rate", "avg_daily_trips", "city", "last_trip_at")
CITIES = ("Amsterdam", "Berlin", "Lisbon", "Montréal", "Nairobi", "São Paulo", "Tokyo", "Oslo")
MAX_BATCH_KEYS = 100  # DynamoDB's BatchGetItem limit
SCAN_PAGE_BYTES = 1024 * 1024  # DynamoDB's Scan reads at most 1 MB of items per page
MAX_TOTAL_SEGMENTS = 1_000_000
RCU_BYTES = 4096
STARTUP_TIMEOUT_S = 120.0  # 1M drivers take a few seconds; a slow CI box more
_BASE_TS = datetime(2026, 11, 1, tzinfo=UTC)
_LAST_TRIP_BASE = 1_780_000_000
# Distinct values per column. Items are assembled from these shared fragments, which keeps
# 1M drivers in ~300 MB; each driver still gets its own combination, chosen by a hash.
_FLOAT_VARIANTS = 4096
_TIME_VARIANTS = 65536
_ERR = "com.amazonaws.dynamodb.v20120810#"
# Of DynamoDB's ~570 reserved words only the one this table's layout trips over: a plain
# `values` must be written through a placeholder, as the reader does.
_RESERVED = frozenset({"values"})
_PACK_SEED = struct.Struct("<qq").pack

WireRecord = tuple[str, ...]  # (event_ts JSON, then one '"name":{"B":"..."}' per feature)


class SyntheticTable:
    """Drivers ``0..drivers-1`` of a Feast-layout feature view, each item a pure function of
    ``(seed, driver)``: the endpoint serves it, and tests write the same items elsewhere."""

    def __init__(self, drivers: int, seed: int = 0) -> None:
        self.drivers = drivers
        self.seed = seed
        self._encoder = EntityKeyEncoder({"driver_id": "int64"})
        rng = random.Random(seed)
        self._event_ts = [str(_BASE_TS + timedelta(seconds=k * 3, microseconds=k * 7919 % 10**6))
                          for k in range(_TIME_VARIANTS)]
        self._values: list[list[bytes]] = [
            [ValueProto(float_val=rng.random()).SerializeToString()
             for _ in range(_FLOAT_VARIANTS)],
            [ValueProto(double_val=rng.random()).SerializeToString()
             for _ in range(_FLOAT_VARIANTS)],
            [ValueProto(int64_val=n).SerializeToString() for n in range(400)],
            [ValueProto(string_val=city).SerializeToString() for city in CITIES],
            [ValueProto(unix_timestamp_val=_LAST_TRIP_BASE + k).SerializeToString()
             for k in range(_TIME_VARIANTS)],
        ]
        self._sizes = (len(self._event_ts), *(len(column) for column in self._values))

    def _choice(self, driver: int) -> list[int]:
        """Which variant of each column (event_ts, then FEATURES) this driver has."""
        rest = mmh3.hash128(_PACK_SEED(self.seed, driver), signed=False)
        picks = []
        for size in self._sizes:
            rest, pick = divmod(rest, size)
            picks.append(pick)
        return picks

    def entity_id(self, driver: int) -> str:
        """The Feast ``entity_id`` of a driver (int64 join key ``driver_id``)."""
        return self._encoder.entity_id([driver])

    def event_ts(self, driver: int) -> str:
        """``event_ts`` as Feast writes it: ``str`` of an aware datetime."""
        return self._event_ts[self._choice(driver)[0]]

    def expected_features(self, driver: int) -> dict[str, bytes]:
        """Feature name → serialized Feast ``Value`` of one driver."""
        picks = self._choice(driver)[1:]
        return {name: column[pick]
                for name, column, pick in zip(FEATURES, self._values, picks, strict=True)}

    def item(self, driver: int) -> dict[str, Any]:
        """The driver's item in boto3's low-level attribute form (``B`` as bytes)."""
        return {
            "entity_id": {"S": self.entity_id(driver)},
            "event_ts": {"S": self.event_ts(driver)},
            "values": {"M": {name: {"B": data}
                             for name, data in self.expected_features(driver).items()}},
        }

    def items(self, drivers: Iterable[int] | None = None) -> Iterator[dict[str, Any]]:
        """Items of ``drivers`` (default: all of them)."""
        for driver in range(self.drivers) if drivers is None else drivers:
            yield self.item(driver)

    def wire_records(self) -> dict[str, WireRecord]:
        """``entity_id`` → the JSON fragments of its item, rendered once and shared."""
        ts_json = [f'{{"S":{json.dumps(ts)}}}' for ts in self._event_ts]
        value_json = [[f'{json.dumps(name)}:{{"B":"{b64encode(data).decode()}"}}'
                       for data in column] for name, column in zip(FEATURES, self._values,
                                                                    strict=True)]
        columns = [ts_json, *value_json]
        entity_id, choice = self.entity_id, self._choice
        records: dict[str, WireRecord] = {}
        for driver in range(self.drivers):
            records[entity_id(driver)] = tuple(
                column[pick] for column, pick in zip(columns, choice(driver), strict=True))
        return records


@functools.cache
def _synthetic(seed: int) -> SyntheticTable:
    return SyntheticTable(0, seed)


def expected_features(driver: int, seed: int = 0) -> dict[str, bytes]:
    """Feature name → serialized Feast ``Value`` the endpoint serves for ``driver``."""
    return _synthetic(seed).expected_features(driver)


class DynamoError(Exception):
    """A DynamoDB error answer: HTTP status, error type and message."""

    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status

    def body(self) -> bytes:
        """The JSON body DynamoDB sends with this error (botocore reads ``__type``)."""
        return json.dumps({"__type": _ERR + self.kind, "message": str(self)}).encode()


def _validation(message: str) -> DynamoError:
    return DynamoError("ValidationException", message)


Render = Callable[[str, WireRecord], str]
# A BatchGetItem read through its plan: request, spec, ids, renderer (_planned_batch_get).
_Planned = tuple[dict[str, Any], Any, list[str], Render | None]


@dataclass(frozen=True)
class _Projection:
    """Which parts of an item a request wants."""

    key: bool
    event_ts: bool
    features: tuple[int, ...] | None  # indices into FEATURES; None = no `values` at all

    def renderer(self) -> Render | None:
        """Item JSON from ``(entity_id, record)``; None when nothing projected exists, as
        DynamoDB then leaves the item out."""
        parts: list[str] = []
        getters: list[Render] = []
        if self.key:
            parts.append('"entity_id":{"S":"%s"}')
            getters.append(lambda entity_id, record: entity_id)
        if self.event_ts:
            parts.append('"event_ts":%s')
            getters.append(lambda entity_id, record: record[0])
        if self.features:
            first = 1 + self.features[0]
            pick: Callable[[WireRecord], Sequence[str]] = (
                itemgetter(*(1 + i for i in self.features)) if len(self.features) > 1
                else itemgetter(slice(first, first + 1)))
            parts.append('"values":{"M":{%s}}')
            getters.append(lambda entity_id, record: ",".join(pick(record)))
        if not parts:
            return None
        template = "{" + ",".join(parts) + "}"
        if len(parts) == 3:  # the reader's shape: one %-format, no loop over getters
            return lambda entity_id, record: template % (entity_id, record[0],
                                                         ",".join(pick(record)))
        return lambda entity_id, record: template % tuple(get(entity_id, record)
                                                          for get in getters)


_ALL = _Projection(True, True, tuple(range(len(FEATURES))))


def parse_projection(expression: str, names: dict[str, str]) -> _Projection:
    """A ProjectionExpression of top-level names and ``values.<feature>`` paths, written
    plainly or through ``#placeholders``."""
    used: set[str] = set()

    def resolve(token: str) -> str:
        token = token.strip()
        if token.startswith("#"):
            if token not in names:
                raise _validation("Invalid ProjectionExpression: An expression attribute name "
                                  f"used in the document path is not defined; attribute name: "
                                  f"{token}")
            used.add(token)
            return names[token]
        if not token or not token.replace("_", "a").isalnum():
            raise _validation(f"Invalid ProjectionExpression: Syntax error; token: {token!r}")
        if token.lower() in _RESERVED:
            raise _validation("Invalid ProjectionExpression: Attribute name is a reserved "
                              f"keyword; reserved keyword: {token}")
        return token

    paths = [tuple(resolve(part) for part in path.split(".")) for path in expression.split(",")]
    unused = sorted(set(names) - used)
    if unused:
        raise _validation("Value provided in ExpressionAttributeNames unused in expressions: "
                          f"keys: {{{', '.join(unused)}}}")
    for i, one in enumerate(paths):
        for two in paths[i + 1:]:
            if one[:len(two)] == two or two[:len(one)] == one:
                raise _validation("Invalid ProjectionExpression: Two document paths overlap with "
                                  f"each other; must remove or rewrite one of these paths; path "
                                  f"one: {list(one)}, path two: {list(two)}")
    whole = ("values",) in paths
    wanted = {path[1] for path in paths if len(path) == 2 and path[0] == "values"}
    features = tuple(i for i, name in enumerate(FEATURES) if whole or name in wanted)
    return _Projection(("entity_id",) in paths, ("event_ts",) in paths,
                       features if whole or features else None)


@dataclass
class Counters:
    """What the endpoint has done, for ``GET /stats``."""

    requests: int = 0  # DynamoDB API calls of any kind
    batch_get_item: int = 0
    keys: int = 0  # keys asked for in BatchGetItem calls that were not refused
    items: int = 0  # items returned
    unprocessed_keys: int = 0
    throttled: int = 0
    errors: int = 0  # 4xx answers other than throttling
    connections: int = 0
    consistent_reads: int = 0  # BatchGetItem and Scan calls with ConsistentRead true
    scan: int = 0  # Scan calls (pages asked for; refused ones included)
    scan_pages: int = 0  # Scan pages answered
    scanned_items: int = 0  # items Scan pages read
    consumed_rcu: float = 0.0  # ConsumedCapacity charged, BatchGetItem and Scan
    in_flight: int = 0  # DynamoDB calls received and not yet answered (latency included)
    max_in_flight: int = 0
    # SigV4 credential scope region of each call (the region the client signed for).
    regions: dict[str, int] = field(default_factory=dict)


@dataclass
class DynamoTable:
    """Answers DynamoDB JSON-protocol calls for one synthetic table (no I/O here).
    ``records`` is handed over: read-only from then on (the set of ids and the scan index
    are built from it once)."""

    name: str
    records: Mapping[str, WireRecord]
    unprocessed_rate: float = 0.0
    throttle_rate: float = 0.0
    seed: int = 0
    counters: Counters = field(default_factory=Counters)
    capacity: Capacity = field(default_factory=Capacity)
    zero_counts: bool = False  # DescribeTable says 0 items, 0 bytes (a table not yet counted)

    def __post_init__(self) -> None:
        self._caller = ""
        self._rng = random.Random(self.seed)
        self._name_json = json.dumps(self.name)
        self._projections: dict[Any, Render | None] = {}
        # The rest of a BatchGetItem body around its keys -> what it holds (_plan).
        self._plans: dict[tuple[bytes, bytes], Any] = {}
        # Most ids asked for are absent: a set answers "absent" from about one cache line, a
        # dict from two or three (its index, then its entries).
        # Looked up per found item through the dict itself: a proxy costs ~75 ns more each.
        self._records = self.records
        self.records = MappingProxyType(self._records)
        self._ids = frozenset(self.records)
        self._scan_index: tuple[list[str], list[int]] | None = None

    def handle(self, target: str, body: bytes, client: str = "") -> tuple[int, bytes]:
        """HTTP status and JSON body for one call (``X-Amz-Target``, request body, and the
        access key id that signed it)."""
        self.counters.requests += 1
        self._caller = client
        operation = target.rpartition(".")[2]
        try:
            if not target.startswith("DynamoDB_20120810.") or operation not in _OPERATIONS:
                raise DynamoError("UnknownOperationException", f"Unknown operation: {target!r}")
            planned = self._planned_batch_get(body) if operation == "BatchGetItem" else None
            if planned is None:
                try:
                    request = _json_request(body) if body else {}
                except ValueError:
                    raise DynamoError("SerializationException", "Start of structure or map "
                                      "found where not expected") from None
                if not isinstance(request, dict):
                    raise DynamoError("SerializationException", "Expected a JSON object")
            try:
                if planned is not None:
                    return 200, self._batch_get_planned(*planned).encode()
                return 200, _OPERATIONS[operation](self, request).encode()
            except (AttributeError, KeyError, TypeError) as exc:  # a member of the wrong type
                raise _validation(f"malformed {operation} request: {exc!r}") from None
        except DynamoError as exc:
            if exc.kind == "ProvisionedThroughputExceededException":
                self.counters.throttled += 1
            else:
                self.counters.errors += 1
            return exc.status, exc.body()

    def describe_table(self, request: dict[str, Any]) -> str:
        """DescribeTable: the key schema a Feast table has, ACTIVE, with its item count."""
        self._check_table(request.get("TableName"))
        return json.dumps({"Table": {
            "TableName": self.name,
            "KeySchema": [{"AttributeName": "entity_id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "entity_id", "AttributeType": "S"}],
            "TableStatus": "ACTIVE",
            "ItemCount": 0 if self.zero_counts else len(self.records),
            "TableSizeBytes": 0 if self.zero_counts else self._size_bytes(),
            **self.capacity.describe(),
        }})

    def _check_table(self, name: object) -> None:
        if name != self.name:
            raise DynamoError("ResourceNotFoundException",
                              f"Requested resource not found: Table: {name} not found")

    def batch_get_item(self, request: dict[str, Any]) -> str:
        """BatchGetItem: validated like DynamoDB, then throttled or partly left unprocessed
        at the configured rates; absent keys are simply not in Responses."""
        self.counters.batch_get_item += 1
        spec = self._batch_spec(request)
        keys = spec.get("Keys")
        if not isinstance(keys, list) or not keys:
            raise _validation("1 validation error detected: Value at 'requestItems."
                              f"{self.name}.member.keys' failed to satisfy constraint: Member "
                              "must have length greater than or equal to 1")
        if len(keys) > MAX_BATCH_KEYS:
            raise _validation("Too many items requested for the BatchGetItem call")
        ids = _entity_ids(keys)
        if spec.get("ConsistentRead") is True:
            self.counters.consistent_reads += 1
        if len(set(ids)) != len(ids):
            raise _validation("Provided list of item keys contains duplicates")
        return self._batch_answer(request, spec, ids, self._renderer(spec))

    def _batch_spec(self, request: dict[str, Any]) -> Any:
        """The one table's part of a BatchGetItem's ``RequestItems``."""
        tables = request.get("RequestItems")
        if not isinstance(tables, dict) or not tables:
            raise _validation("1 validation error detected: Value null at 'requestItems' "
                              "failed to satisfy constraint: Member must not be null")
        for name in tables:
            self._check_table(name)
        return tables[self.name]

    def _planned_batch_get(self, body: bytes) -> _Planned | None:
        """A BatchGetItem whose keys are the plain array (:mod:`featurepull.bench.wire_keys`)
        and whose rest is one this table has read before and found valid: the request
        (``Keys`` the mark), its spec, renderer and ids. None when anything is unusual —
        then :meth:`batch_get_item` reads the body and says what is wrong, as before."""
        split = split_keys(body)
        if split is None:
            return None
        before, after, ids = split
        plan = self._plans.get((before, after), _UNREAD)
        if plan is _UNREAD:
            plan = self._plan(before, after)
            if len(self._plans) < _MAX_PLANS:
                self._plans[before, after] = plan
        if plan is None or len(ids) > MAX_BATCH_KEYS or len(set(ids)) != len(ids):
            return None
        request, spec, render = plan
        return request, spec, ids, render

    def _plan(self, before: bytes, after: bytes
              ) -> tuple[dict[str, Any], Any, Render | None] | None:
        """What :meth:`batch_get_item` finds in a body of these pieces around its keys,
        validated as it validates them; None when it would find anything else."""
        if b"\\" in before or b"\\" in after:
            return None
        try:
            request = _json_request(before + KEYS_MARK + after)
        except ValueError:
            return None
        if not isinstance(request, dict):
            return None
        try:
            spec = self._batch_spec(request)
            if not isinstance(spec, dict) or spec.get("Keys") != MARK:
                return None
            return request, spec, self._renderer(spec)
        except (DynamoError, AttributeError, KeyError, TypeError):
            return None

    def _batch_get_planned(self, request: dict[str, Any], spec: Any, ids: list[str],
                           render: Render | None) -> str:
        """:meth:`batch_get_item` of a request already validated (:meth:`_planned_batch_get`)."""
        self.counters.batch_get_item += 1
        if spec.get("ConsistentRead") is True:
            self.counters.consistent_reads += 1
        return self._batch_answer(request, spec, ids, render)

    def _batch_answer(self, request: dict[str, Any], spec: Any, ids: list[str],
                      render: Render | None) -> str:
        """A valid BatchGetItem's answer (or its throttling), its capacity and counters."""
        if self.throttle_rate and self._rng.random() < self.throttle_rate:
            raise DynamoError("ProvisionedThroughputExceededException", _THROTTLE_MESSAGE)
        per_key = 1.0 if spec.get("ConsistentRead") else 0.5
        left: list[str] = []
        if self.unprocessed_rate:
            draw, rate, kept = self._rng.random, self.unprocessed_rate, []
            for entity_id in ids:
                if draw() < rate:
                    left.append(entity_id)
                else:
                    kept.append(entity_id)
            ids = kept
        served = self.capacity.admit(self._caller, len(ids), per_key) if ids else 0
        if ids and not served:
            raise DynamoError("ProvisionedThroughputExceededException", _THROTTLE_MESSAGE)
        left.extend(ids[served:])
        ids = ids[:served]
        self.counters.keys += len(ids) + len(left)
        self.counters.consumed_rcu += per_key * len(ids)
        records = self._records
        found = []
        # One C-level pass finds the few stored ids; only those are looked up, in the order asked.
        if render is not None and (stored := self._ids.intersection(ids)):
            found = [render(entity_id, records[entity_id]) for entity_id in ids
                     if entity_id in stored]
        self.counters.items += len(found)
        self.counters.unprocessed_keys += len(left)
        parts = ['{"Responses":{', self._name_json, ":[", ",".join(found), ']},"UnprocessedKeys":',
                 self._unprocessed(spec, left)]
        if request.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
            parts += [',"ConsumedCapacity":[{"TableName":', self._name_json, ',"CapacityUnits":',
                      repr(per_key * len(ids)), "}]"]
        parts.append("}")
        return "".join(parts)

    def scan(self, request: dict[str, Any]) -> str:
        """Scan: one page of a segment (items in entity_id order within the segment's hash
        range), at most 1 MB or ``Limit`` items, charged by the size of the items read."""
        self.counters.scan += 1
        self._check_table(request.get("TableName"))
        segment, total = _segments(request)
        limit = request.get("Limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise _validation("1 validation error detected: Value at 'limit' failed to "
                              "satisfy constraint: Member must have value greater than or "
                              "equal to 1")
        consistent = request.get("ConsistentRead") is True
        if consistent:
            self.counters.consistent_reads += 1
        render = self._renderer(request)
        if self.throttle_rate and self._rng.random() < self.throttle_rate:
            raise DynamoError("ProvisionedThroughputExceededException", _THROTTLE_MESSAGE)
        ids, sizes = self._index()
        start, end = _segment_range(ids, segment, total)
        after = request.get("ExclusiveStartKey")
        if after is not None:
            start = max(start, bisect.bisect_right(ids, _entity_ids([after])[0], start, end))
        stop, read = start, 0
        while stop < end and (limit is None or stop - start < limit) \
                and read + sizes[stop] <= SCAN_PAGE_BYTES:
            read += sizes[stop]
            stop += 1
        units = max(1, -(-read // RCU_BYTES)) * (1.0 if consistent else 0.5)
        if not self.capacity.charge(self._caller, units):
            raise DynamoError("ProvisionedThroughputExceededException", _THROTTLE_MESSAGE)
        records = self._records
        found = [] if render is None else [render(entity_id, records[entity_id])
                                           for entity_id in ids[start:stop]]
        counters = self.counters
        counters.scan_pages += 1
        counters.scanned_items += stop - start
        counters.items += len(found)
        counters.consumed_rcu += units
        parts = ['{"Items":[', ",".join(found), '],"Count":', str(len(found)),
                 ',"ScannedCount":', str(stop - start)]
        # Stopped by the page size or the limit (even on the segment's last item, as
        # DynamoDB does): more may follow.
        if stop > start and (stop < end or stop - start == limit):
            parts += [',"LastEvaluatedKey":{"entity_id":{"S":"', ids[stop - 1], '"}}']
        if request.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
            parts += [',"ConsumedCapacity":{"TableName":', self._name_json,
                      ',"CapacityUnits":', repr(units), "}"]
        parts.append("}")
        return "".join(parts)

    def _size_bytes(self) -> int:
        """TableSizeBytes: exact once a Scan has sized every item; before, the item count
        times the mean size of up to 1,000 items — as approximate as DynamoDB's own figure,
        and quick for a table of millions (sizing every item took DescribeTable past a
        client's read timeout at 5M items)."""
        if self._scan_index is not None:
            return sum(self._scan_index[1])
        sample = list(itertools.islice(self.records.items(), 1_000))
        if not sample:
            return 0
        mean = sum(_item_size(key, record) for key, record in sample) / len(sample)
        return round(mean * len(self.records))

    def _index(self) -> tuple[list[str], list[int]]:
        """Entity ids in key order and each item's size in bytes (DynamoDB's measure:
        attribute names plus values), built at the first call that needs them."""
        if self._scan_index is None:
            ids = sorted(self.records)
            self._scan_index = ids, [_item_size(i, self.records[i]) for i in ids]
        return self._scan_index

    def _unprocessed(self, spec: dict[str, Any], left: list[str]) -> str:
        if not left:
            return "{}"
        # The keys as they were sent: each exactly {"entity_id": {"S": id}} (_entity_ids).
        again: dict[str, Any] = {"Keys": [{"entity_id": {"S": entity_id}} for entity_id in left]}
        for name in ("ProjectionExpression", "ExpressionAttributeNames", "AttributesToGet",
                     "ConsistentRead"):
            if name in spec:
                again[name] = spec[name]
        return json.dumps({self.name: again})

    def _renderer(self, spec: dict[str, Any]) -> Render | None:
        expression = spec.get("ProjectionExpression")
        names = spec.get("ExpressionAttributeNames") or {}
        attributes = spec.get("AttributesToGet")
        cache_key = (expression, tuple(sorted(names.items())),
                     tuple(attributes) if isinstance(attributes, list) else None)
        if cache_key in self._projections:
            return self._projections[cache_key]
        if expression is not None and attributes is not None:
            raise _validation("Can not use both expression and non-expression parameters "
                              "in the same request")
        if isinstance(attributes, list):
            expression = ",".join(attributes)
        projection = _ALL if expression is None else parse_projection(expression, names)
        render = self._projections[cache_key] = projection.renderer()
        return render

    def stats(self) -> dict[str, Any]:
        """The counters, for ``GET /stats``."""
        return dict(vars(self.counters))

    def reset_stats(self) -> None:
        """Zero the counters (``DELETE /stats``), keeping the calls still in flight."""
        self.counters = Counters(in_flight=self.counters.in_flight)


_THROTTLE_MESSAGE = ("The level of configured provisioned throughput for the table was "
                     "exceeded. Consider increasing your provisioning level with the "
                     "UpdateTable API.")
# Bodies of distinct rests kept: a client sends a handful (one per projection and flags).
_MAX_PLANS = 256
_UNREAD = object()
_OPERATIONS: dict[str, Callable[[DynamoTable, dict[str, Any]], str]] = {
    "DescribeTable": DynamoTable.describe_table,
    "BatchGetItem": DynamoTable.batch_get_item,
    "Scan": DynamoTable.scan,
}


def _segments(request: dict[str, Any]) -> tuple[int, int]:
    """``(Segment, TotalSegments)``, ``(0, 1)`` without them; validated as DynamoDB does."""
    segment, total = request.get("Segment"), request.get("TotalSegments")
    if segment is None and total is None:
        return 0, 1
    if segment is None or total is None:
        raise _validation("The Segment parameter is required but was not present in the "
                          "request when parameter TotalSegments is present" if segment is None
                          else "The TotalSegments parameter is required but was not present "
                          "in the request when Segment parameter is present")
    if not isinstance(total, int) or not 1 <= total <= MAX_TOTAL_SEGMENTS:
        raise _validation("1 validation error detected: Value at 'totalSegments' failed to "
                          f"satisfy constraint: Member must have value between 1 and "
                          f"{MAX_TOTAL_SEGMENTS}")
    if not isinstance(segment, int) or not 0 <= segment < total:
        raise _validation("The Segment parameter is zero-based and must be less than "
                          "parameter TotalSegments")
    return segment, total


def _segment_range(ids: list[str], segment: int, total: int) -> tuple[int, int]:
    """The slice of ``ids`` (sorted entity_ids, hex) in a segment: the segments split the
    hash space (the first 32 bits) into ``total`` equal ranges, as DynamoDB splits it by
    partitions, so every item is in exactly one segment."""
    bound = [format(-(-n * 2**32 // total), "08x") for n in (segment, segment + 1)]
    start = bisect.bisect_left(ids, bound[0])
    end = len(ids) if segment + 1 == total else bisect.bisect_left(ids, bound[1])
    return start, end


def _item_size(entity_id: str, record: WireRecord) -> int:
    """An item's size as DynamoDB counts it: each attribute's name and value bytes (a B
    value's decoded length), map entries likewise, plus 3 bytes per map and 1 per entry."""
    size = len("entity_id") + len(entity_id) + len("event_ts") + len(record[0]) - 8  # {"S":""}
    size += len("values") + 3
    for fragment in record[1:]:
        name, _, value = fragment.partition(":")
        encoded = value[6:-2]  # {"B":"...."}
        size += len(name) - 2 + 1 + len(encoded) * 3 // 4 - encoded.count("=")
    return size


_DIGITS_AS_NINES = bytes.maketrans(b"0123456789", b"9" * 10)
_NINETEEN_DIGITS = b"9" * 19


def _json_request(body: bytes) -> Any:
    """``json.loads(body)``, read by orjson where that gives the same objects: orjson reads
    an integer beyond 64 bits as a float (any run of 19 digits goes to ``json``, which keeps
    it an int) and refuses what ``json`` takes on (NaN, lone surrogates, UTF-16, ...)."""
    if _NINETEEN_DIGITS not in body.translate(_DIGITS_AS_NINES):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def _entity_ids(keys: list[Any]) -> list[str]:
    """The entity_id of every key, refusing any other key shape as DynamoDB does."""
    try:
        values = [key["entity_id"] for key in keys]
        ids = [value["S"] for value in values]
        # Each key must be exactly {"entity_id": {"S": str}}; map(len) keeps this in C.
        if sum(map(len, keys)) == len(keys) == sum(map(len, values)) and {
                *map(type, ids)} == {str}:
            return ids
    except (KeyError, TypeError):
        pass
    raise _validation("The provided key element does not match the schema")


# --------------------------------------------------------------------------------------
# HTTP. Not http.server: it spends a thread per connection (boto3 keeps up to 50 open) and
# parses every request through email.message; here one asyncio loop owns every socket, a
# request is one bytes.find plus a split, and latency is a timer, not a sleeping thread.
# --------------------------------------------------------------------------------------

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found"}


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered one at a time, in order."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.buffer = bytearray()
        self.busy = False  # a response is waiting out the latency
        self.transport: asyncio.Transport | None = None
        self.call_open = False  # a DynamoDB call counted in flight, not yet answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.table.counters.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        # An answer still waiting out the latency finds no transport and is dropped.
        self._call_answered()
        self.transport = None

    def _call_answered(self) -> None:
        if self.call_open:
            self.call_open = False
            self.server.table.counters.in_flight -= 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._answer_buffered()

    def _answer_buffered(self) -> None:
        try:
            while self.transport is not None and not self.busy:
                request = _parse_request(self.buffer)
                if request is None:
                    return
                self.call_open = request.method == "POST" and request.path == "/"
                status, body, keep_alive = self.server.answer(request)
                if self.server.waiting.latency_s > 0:
                    self.busy = True
                    self.server.waiting.call_later(
                        functools.partial(self._send_later, status, body, keep_alive))
                else:
                    self._call_answered()
                    self._send(status, body, keep_alive)
        except ValueError as exc:  # not a request this endpoint can read: say so and hang up
            self._send(400, json.dumps({"message": str(exc)}).encode(), keep_alive=False)

    def _send_later(self, status: int, body: bytes, keep_alive: bool) -> None:
        self.busy = False
        self._call_answered()
        self._send(status, body, keep_alive)
        self._answer_buffered()

    def _send(self, status: int, body: bytes, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.server.sent += 1
        close = "" if keep_alive else "Connection: close\r\n"
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                "Content-Type: application/x-amz-json-1.0\r\n"
                f"Content-Length: {len(body)}\r\nx-amz-crc32: {zlib.crc32(body)}\r\n"
                f"x-amzn-RequestId: featurepull-bench-{self.server.sent}\r\n{close}\r\n")
        self.transport.write(head.encode() + body)
        if not keep_alive:
            self.transport.close()
            self.transport = None


class _Latency:
    """Answers waiting out the endpoint's latency. The latency is one constant, so they fall
    due in the order they were made: one loop timer for the earliest of them, not one per
    request (a TimerHandle each, kept in a heap by a Python ``__lt__``)."""

    _RESOLUTION = time.get_clock_info("monotonic").resolution  # as asyncio's loop allows

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.due: collections.deque[tuple[float, Callable[[], None]]] = collections.deque()
        self.armed = False  # a loop timer will run the earliest answer

    def call_later(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the latency has passed."""
        loop = asyncio.get_running_loop()
        self.due.append((loop.time() + self.latency_s, callback))
        if not self.armed:
            self.armed = True
            loop.call_at(self.due[0][0], self._run_due)

    def _run_due(self) -> None:
        loop = asyncio.get_running_loop()
        end, due = loop.time() + self._RESOLUTION, self.due
        try:
            while due and due[0][0] < end:  # callbacks may add answers; armed keeps one timer
                due.popleft()[1]()
        finally:  # an answer that failed (the loop logs it) must not hold up the others
            if due:
                loop.call_at(due[0][0], self._run_due)
            else:
                self.armed = False


if sys.platform == "linux":
    class _PreciseSelector(selectors.EpollSelector):
        """epoll, waiting out a timeout to the microsecond. ``epoll_wait`` takes whole
        milliseconds and asyncio rounds a timeout up, so each latency timer fired up to 1 ms
        late (0.5 ms on average, answers due within the same millisecond sent together):
        the bench measured a round trip of its configured latency plus that. Here the wait
        is a ``select`` on the epoll descriptor itself (readable when an event is ready),
        then the events are taken without waiting. Never shorter than asked: select()
        waits at least its timeout."""

        def select(self, timeout: float | None = None
                   ) -> list[tuple[selectors.SelectorKey, int]]:
            if timeout is not None and timeout > 0 and self.fileno() < _FD_SETSIZE:
                select.select([self.fileno()], [], [], timeout)
                timeout = 0
            return super().select(timeout)


_FD_SETSIZE = 1024  # select() takes no descriptor from it on


def _precise_loop() -> asyncio.AbstractEventLoop:
    """The endpoint's event loop: timers to the microsecond (kqueue's already are)."""
    if sys.platform == "linux":
        return asyncio.SelectorEventLoop(_PreciseSelector())
    return asyncio.new_event_loop()


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes


def _parse_request(buffer: bytearray) -> _Request | None:
    """Take one complete request off the buffer (None until one is complete)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > _MAX_HEAD:
            raise ValueError(f"request head over {_MAX_HEAD} bytes")
        return None
    lines = buffer[:end].decode("latin-1").split("\r\n")
    method, path, version = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {name.strip().lower(): value.strip()
               for line in lines[1:] for name, _, value in [line.partition(":")]}
    if "transfer-encoding" in headers:  # botocore never sends DynamoDB a chunked body
        raise ValueError("chunked request bodies are not supported; send Content-Length")
    length = int(headers.get("content-length", "0") or 0)
    if not 0 <= length <= _MAX_BODY:
        raise ValueError(f"Content-Length {length} is outside 0..{_MAX_BODY}")
    total = end + 4 + length
    if len(buffer) < total:
        return None
    body = bytes(buffer[end + 4:total])
    del buffer[:total]
    return _Request(method, path, version, headers, body)


def _signer(authorization: str) -> tuple[str, str]:
    """The access key id (``client_of``) and the region of a SigV4 ``Authorization``
    header's credential scope ('' if unsigned)."""
    _, found, rest = authorization.partition("Credential=")
    scope = rest.split(",", 1)[0].split("/") if found else []
    region = scope[2] if len(scope) == 5 else ""
    # client_of's first match is here when the scope starts with a plain word and a "/".
    if len(scope) > 1 and scope[0].isalnum():
        return scope[0], region
    return client_of(authorization), region


@dataclass
class _Server:
    table: DynamoTable
    waiting: _Latency
    extra_stats: dict[str, float] = field(default_factory=dict)
    sent: int = 0

    def answer(self, request: _Request) -> tuple[int, bytes, bool]:
        """Status, body, and whether the connection stays open."""
        keep_alive = (request.version == "HTTP/1.1"
                      and request.headers.get("connection", "").lower() != "close")
        method, path = request.method, request.path
        if method == "POST" and path == "/":
            counters = self.table.counters
            counters.in_flight += 1  # until _Connection sends the answer
            counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
            client, region = _signer(request.headers.get("authorization", ""))
            counters.regions[region] = counters.regions.get(region, 0) + 1
            target = request.headers.get("x-amz-target", "")
            status, body = self.table.handle(target, request.body, client)
            return status, body, keep_alive
        if method == "GET" and path == "/stats":
            stats = {**self.table.stats(), **self.extra_stats}
            return 200, json.dumps(stats).encode(), keep_alive
        if method == "GET" and path == "/stats/capacity":
            return 200, json.dumps(self.table.capacity.stats()).encode(), keep_alive
        if method == "DELETE" and path == "/stats":
            self.table.reset_stats()
            return 200, b"{}", keep_alive
        return 404, json.dumps({"message": f"no {method} {path} here"}).encode(), keep_alive


async def serve(table: DynamoTable, host: str, port: int, latency_s: float,
                ready: Callable[[str], None], extra_stats: dict[str, float] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; ``ready(url)`` is called once the socket listens."""
    loop = asyncio.get_running_loop()
    server_state = _Server(table, _Latency(latency_s), extra_stats or {})
    server = await loop.create_server(lambda: _Connection(server_state), host, port,
                                      backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready(f"http://{bound[0]}:{bound[1]}")
    async with server:
        await stop.wait()


# --------------------------------------------------------------------------------------
# The endpoint as a process
# --------------------------------------------------------------------------------------


@dataclass
class EndpointProcess:
    """A running endpoint subprocess: where it listens, its counters, and how to stop it."""

    process: subprocess.Popen[bytes]
    url: str
    workdir: Path

    def stats(self) -> dict[str, Any]:
        """The endpoint's ``GET /stats`` counters."""
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as response:
            return dict(json.loads(response.read()))

    def capacity(self) -> dict[str, Any]:
        """``GET /stats/capacity``: the table's capacity and each client's consumption."""
        with urllib.request.urlopen(f"{self.url}/stats/capacity", timeout=10) as response:
            return dict(json.loads(response.read()))
    def reset_stats(self) -> None:
        """Zero the endpoint's counters (``DELETE /stats``), e.g. between two tests."""
        request = urllib.request.Request(f"{self.url}/stats", method="DELETE")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the endpoint wrote to stderr, for error messages."""
        text = (self.workdir / "endpoint.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (then kill it) and remove its working folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EndpointProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_endpoint(drivers: int, latency_ms: float = 0.0, unprocessed_rate: float = 0.0,
                   throttle_rate: float = 0.0, seed: int = 0, table: str = DEFAULT_TABLE,
                   port: int = 0, timeout: float = STARTUP_TIMEOUT_S,
                   provisioned_rcu: float = 0.0, burst_s: float = 1.0,
                   on_demand_max_rcu: float = 0.0, zero_counts: bool = False
                   ) -> EndpointProcess:
    """Start the endpoint in a subprocess and wait until it listens."""
    workdir = Path(tempfile.mkdtemp(prefix="featurepull-bench-"))
    args = [sys.executable, "-m", "featurepull.bench.endpoint", "--port", str(port),
            "--drivers", str(drivers), "--latency-ms", str(latency_ms),
            "--unprocessed-rate", str(unprocessed_rate), "--throttle-rate", str(throttle_rate),
            "--seed", str(seed), "--table", table, "--provisioned-rcu", str(provisioned_rcu),
            "--burst-s", str(burst_s), "--on-demand-max-rcu", str(on_demand_max_rcu),
            *(["--zero-counts"] if zero_counts else [])]
    with open(workdir / "endpoint.log", "wb") as log:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=log, start_new_session=True)
    endpoint = EndpointProcess(process, "", workdir)
    try:
        endpoint.url = _await_listening(process, timeout)
    except ServiceError as exc:
        tail = endpoint.log_tail()
        endpoint.stop()
        raise ServiceError(f"{exc}; its log ends with:\n{tail}") from None
    return endpoint


def _await_listening(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    fd, seen = process.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while b"\n" not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServiceError(f"the bench endpoint did not listen within {timeout:.0f}s")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise ServiceError(f"the bench endpoint exited with code {process.wait()} "
                                   "while starting")
            seen += chunk
    line = seen.split(b"\n", 1)[0].decode()
    if not line.startswith("LISTENING "):
        raise ServiceError(f"the bench endpoint printed {line!r} instead of LISTENING <url>")
    return line.split(" ", 1)[1]


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: build the table, listen, print ``LISTENING <url>``, serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m featurepull.bench.endpoint",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--drivers", type=int, default=1_000_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--unprocessed-rate", type=_rate, default=0.0,
                        help="fraction of requested keys left in UnprocessedKeys")
    parser.add_argument("--throttle-rate", type=_rate, default=0.0,
                        help="fraction of BatchGetItem calls answered with throttling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", default=DEFAULT_TABLE)
    parser.add_argument("--provisioned-rcu", type=float, default=0.0,
                        help="a provisioned table of this many RCU/s (0: on-demand, unlimited)")
    parser.add_argument("--burst-s", type=float, default=1.0,
                        help="seconds of unused capacity a provisioned table keeps for bursts")
    parser.add_argument("--on-demand-max-rcu", type=float, default=0.0,
                        help="on-demand: the MaxReadRequestUnits DescribeTable reports")
    parser.add_argument("--zero-counts", action="store_true",
                        help="DescribeTable reports ItemCount and TableSizeBytes 0, as for a "
                        "table DynamoDB has not counted yet (it counts about every 6 hours)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    gc.disable()  # a million small tuples would trigger full collections for nothing
    records = SyntheticTable(args.drivers, args.seed).wire_records()
    gc.freeze()
    gc.enable()
    build_s = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"featurepull bench endpoint: {args.drivers:,} drivers of {args.table} built in "
          f"{build_s:.1f}s, max RSS {rss_mb:.0f} MB", file=sys.stderr, flush=True)
    capacity = Capacity(args.provisioned_rcu, args.burst_s, args.on_demand_max_rcu)
    table = DynamoTable(args.table, records, args.unprocessed_rate, args.throttle_rate, args.seed,
                        capacity=capacity, zero_counts=args.zero_counts)

    def ready(url: str) -> None:
        print(f"LISTENING {url}", flush=True)

    extra = {"drivers": args.drivers, "build_seconds": round(build_s, 3),
             "max_rss_mb": round(rss_mb, 1)}
    with asyncio.Runner(loop_factory=_precise_loop) as runner:
        runner.run(serve(table, args.host, args.port, args.latency_ms / 1000.0, ready, extra))


if __name__ == "__main__":
    main()
