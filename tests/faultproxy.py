"""A fault-injecting HTTP proxy between a boto3 client and a local DynamoDB endpoint.

It misbehaves only on BatchGetItem — throttles, 500s, keys moved to UnprocessedKeys,
shuffled responses, responses cut mid-body, latency and latency spikes, a throttling storm
of a set length, answers held until the test says what they are — and, with ``FaultPlan(scan=True)``, on Scan pages alike (those of the
faults that apply to a whole request), so a reader can be proven correct when DynamoDB is
not polite. Every other request passes through untouched, so tables can be built and inspected through the same
endpoint.

    with FaultProxy(endpoint_url, FaultPlan(throttle_rate=0.3, seed=1)) as proxy:
        client = boto3.client("dynamodb", endpoint_url=proxy.url, ...)

With ``FaultPlan(hold=True)`` nothing is answered until the test decides: what a client
sends while its earlier requests wait (``wait_held``, ``throttle_held``, ``release``) shows
what it does between answers, whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

BATCH_GET_TARGET = "DynamoDB_20120810.BatchGetItem"
SCAN_TARGET = "DynamoDB_20120810.Scan"
DESCRIBE_TARGET = "DynamoDB_20120810.DescribeTable"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
UPSTREAM_TIMEOUT_S = 30.0
_PTEE = "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
# DynamoDB throttles with all three types; a reader has to treat them alike. Rotating
# (instead of drawing) guarantees every type shows up within a handful of throttles.
THROTTLE_TYPES = (_PTEE, _PTEE, "com.amazon.coral.availability#ThrottlingException", _PTEE,
                  "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded")
INTERNAL_ERROR_TYPE = "com.amazonaws.dynamodb.v20120810#InternalServerError"
# Headers that describe one hop, not the message; Content-Length is recomputed because
# bodies may be rewritten.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "expect", "content-length"})
COUNT_NAMES = ("batch_requests", "throttled", "errors_500", "dropped", "unprocessed_keys",
               "shuffled", "keys_requested", "spikes", "storm_throttled", "scan_requests",
               "describe_requests", "describe_errors")

Headers = list[tuple[str, str]]


@dataclass
class FaultPlan:
    """What to do to BatchGetItem. A cut with FIN is no transport error to botocore (it reads
    with enforce_content_length=False): only the x-amz-crc32 check notices it, and in the
    standard retry mode, once attempts run out, botocore returns the truncated body as an
    empty *success*. drop_reset=True cuts with RST: botocore raises ConnectionClosedError."""

    unprocessed_rate: float = 0.0  # per requested key: moved to UnprocessedKeys
    throttle_rate: float = 0.0  # per request: HTTP 400 throttling error
    error_rate: float = 0.0  # per request: HTTP 500 InternalServerError
    drop_rate: float = 0.0  # per response: cut mid-body, then the socket is closed
    drop_reset: bool = False  # cut with a TCP RST instead of an orderly FIN
    shuffle: bool = False  # shuffle Responses items and UnprocessedKeys keys
    latency_s: float = 0.0  # sleep before answering each BatchGetItem
    spike_rate: float = 0.0  # per request: a latency spike, spike_s more before answering
    spike_s: float = 0.0
    # A throttling storm: every BatchGetItem is throttled for storm_s seconds, from the
    # (storm_after + 1)-th request under this plan on (counted in throttled too).
    storm_s: float = 0.0
    storm_after: int = 0
    seed: int = 0
    # Hold every BatchGetItem unanswered until the test throttles it (throttle_held) or lets
    # all through (release); the other faults apply to what is let through.
    hold: bool = False
    # Scan pages get the whole-request faults too: throttling (storm included), 500s, cuts,
    # latency and spikes (counted in the same counts, and in scan_requests).
    scan: bool = False
    # The first describe_errors DescribeTable requests under this plan get HTTP 500
    # InternalServerError (counted in describe_errors).
    describe_errors: int = 0
    # Sleep before answering each DescribeTable (an endpoint slow to describe).
    describe_latency_s: float = 0.0
    # The first first_hits draws of each fault with a nonzero rate hit (unprocessed_rate:
    # the first keys drawn for), then the seeded draws go on. Concurrent requests reach the
    # shared RNG in any order, so only this makes "each fault kind happened" certain.
    first_hits: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.endswith("_rate") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"{f.name} must be within [0, 1], got {getattr(self, f.name)}")
        for name in ("latency_s", "spike_s", "storm_s", "storm_after", "describe_errors",
                     "describe_latency_s", "first_hits"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class _Held:
    """A BatchGetItem waiting at the proxy: its keys, and what the test decided."""

    keys: frozenset[str]  # each key as canonical JSON
    throttle: bool = False
    decided: bool = False


@dataclass
class _Reply:
    status: int
    headers: Headers
    body: bytes


def _json_reply(status: int, payload: dict[str, Any], headers: Headers | None = None) -> _Reply:
    """A JSON reply; keeps `headers` (e.g. upstream's) but recomputes x-amz-crc32."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    if headers is None:
        headers = [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-RequestId", uuid.uuid4().hex)]
    # botocore checks x-amz-crc32 on DynamoDB responses, so a rewritten body needs a new one.
    crc = str(zlib.crc32(body) & 0xFFFFFFFF)
    kept = [(k, v) for k, v in headers if k.lower() != "x-amz-crc32"]
    return _Reply(status, [*kept, ("x-amz-crc32", crc)], body)


class FaultProxy:
    """An in-process HTTP proxy on 127.0.0.1 that injects faults into BatchGetItem."""

    def __init__(self, upstream_url: str, plan: FaultPlan | None = None) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream_url must be http(s)://host[:port], got {upstream_url!r}")
        self.upstream_url = upstream_url
        self._upstream = (parts.scheme, parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._held_changed = threading.Condition(self._lock)
        self._held: list[_Held] = []
        self._holding = False
        self._counts = dict.fromkeys(COUNT_NAMES, 0)
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.plan = plan or FaultPlan()

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        # Re-seed on every new plan so a test that swaps plans still gets repeatable faults.
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)
            self._throttle_seq = 0
            self._plan_requests = 0
            self._plan_describes = 0
            self._hits: dict[str, int] = {}
            self._storm_started: float | None = None
            self._storm_last: float | None = None
            self._holding = plan.hold

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy is not running; call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def storm_span_s(self) -> float:
        """Seconds from the first to the last request the current plan's storm throttled."""
        with self._lock:
            if self._storm_started is None or self._storm_last is None:
                return 0.0
            return self._storm_last - self._storm_started

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(COUNT_NAMES, 0)

    def start(self) -> FaultProxy:
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                            kwargs={"poll_interval": 0.05}, name="faultproxy")
            self._thread.start()
        return self

    def wait_held(self, n: int, timeout: float = 60.0) -> list[frozenset[str]]:
        """Wait until ``n`` BatchGetItem requests are held (``FaultPlan(hold=True)``); the
        keys of each held request (canonical JSON), in the order they arrived."""
        with self._held_changed:
            if not self._held_changed.wait_for(lambda: len(self._held) >= n, timeout):
                raise TimeoutError(f"{len(self._held)} requests held after {timeout:g}s, "
                                   f"waited for {n}")
            return [held.keys for held in self._held]

    def throttle_held(self, n: int) -> list[frozenset[str]]:
        """Answer the first ``n`` held requests with a throttling error; their keys."""
        with self._held_changed:
            chosen, self._held = self._held[:n], self._held[n:]
            for held in chosen:
                held.throttle = held.decided = True
            self._held_changed.notify_all()
        return [held.keys for held in chosen]

    def release(self) -> None:
        """Stop holding: every held request and every later one goes on as the plan says."""
        with self._held_changed:
            for held in self._held:
                held.decided = True
            self._held, self._holding = [], False
            self._held_changed.notify_all()

    def _hold(self, items: dict[str, dict[str, Any]]) -> bool:
        """Hold a request while the plan holds; True when the test throttled it."""
        keys = frozenset(json.dumps(key, sort_keys=True)
                         for spec in items.values() for key in spec.get("Keys", []))
        held = _Held(keys)
        with self._held_changed:
            if not self._holding:
                return False
            self._held.append(held)
            self._held_changed.notify_all()
            self._held_changed.wait_for(lambda: held.decided)
        return held.throttle

    def stop(self) -> None:
        self.release()  # a held request would keep its handler (and its client) waiting
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # Pooled keep-alive connections would otherwise keep being served after stop().
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the faults ---------------------------------------------------------------------

    def _bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _chance(self, rate: float, fault: str) -> bool:
        """Whether this draw for ``fault`` (a plan's rate field) hits."""
        if rate <= 0.0:
            return False
        with self._lock:
            if self._hits.get(fault, 0) < self._plan.first_hits:
                self._hits[fault] = self._hits.get(fault, 0) + 1
                return True
            return rate >= 1.0 or self._rng.random() < rate

    def _in_storm(self, plan: FaultPlan) -> bool:
        """Whether this request falls in the plan's throttling storm (counts the request)."""
        if plan.storm_s <= 0:
            return False
        now = time.monotonic()
        with self._lock:
            self._plan_requests += 1
            if self._storm_started is None and self._plan_requests > plan.storm_after:
                self._storm_started = now
            if self._storm_started is None or now - self._storm_started >= plan.storm_s:
                return False
            self._storm_last = now
            self._counts["storm_throttled"] += 1
            return True

    def _batch_get(self, method: str, path: str, headers: Headers, body: bytes) -> tuple[
            _Reply, str]:
        """The reply to one BatchGetItem request, and how to end it ("", "fin" or "rst")."""
        plan = self.plan  # one plan per request, even if a test swaps it meanwhile
        try:
            request: dict[str, Any] = json.loads(body)
            items: dict[str, dict[str, Any]] = request["RequestItems"]
        except (ValueError, KeyError, TypeError):
            return self._forward(method, path, headers, body), ""  # let upstream complain
        tables = list(items)
        self._bump("batch_requests")
        self._bump("keys_requested", sum(len(spec.get("Keys", [])) for spec in items.values()))
        if plan.hold and self._hold(items):
            return self._throttle(), ""
        refused = self._refuse(plan)
        if refused is not None:
            return refused, ""

        removed = self._remove_keys(items, plan.unprocessed_rate)
        if removed and not items:
            # Nothing left to ask for, and DynamoDB rejects an empty request: answer alone.
            reply = _json_reply(200, {"Responses": {}, "UnprocessedKeys": {}})
        else:
            if removed:
                body = json.dumps(request, separators=(",", ":")).encode()
            reply = self._forward(method, path, headers, body)
        if reply.status == 200 and (removed or plan.shuffle):
            reply = self._rewrite(reply, tables, removed, plan.shuffle)
        if not self._chance(plan.drop_rate, "drop_rate"):
            # Counted only when delivered: keys in a response that is then cut never reach
            # the client as unprocessed (it resends the whole request instead).
            self._bump("unprocessed_keys", sum(len(spec["Keys"]) for spec in removed.values()))
            return reply, ""
        self._bump("dropped")
        return reply, "rst" if plan.drop_reset else "fin"

    def _refuse(self, plan: FaultPlan) -> _Reply | None:
        """Latency, then a throttle or 500 for the whole request (None: let it through)."""
        if plan.latency_s:
            time.sleep(plan.latency_s)
        if self._chance(plan.spike_rate, "spike_rate"):
            self._bump("spikes")
            time.sleep(plan.spike_s)
        if self._in_storm(plan) or self._chance(plan.throttle_rate, "throttle_rate"):
            return self._throttle()
        if self._chance(plan.error_rate, "error_rate"):
            self._bump("errors_500")
            return _json_reply(500, {"__type": INTERNAL_ERROR_TYPE,
                                     "message": "faultproxy: internal server error"})
        return None

    def _describe(self, method: str, path: str, headers: Headers, body: bytes) -> _Reply:
        if self.plan.describe_latency_s:
            time.sleep(self.plan.describe_latency_s)
        with self._lock:
            self._counts["describe_requests"] += 1
            self._plan_describes += 1
            failing = self._plan_describes <= self._plan.describe_errors
            if failing:
                self._counts["describe_errors"] += 1
        if failing:
            return _json_reply(500, {"__type": INTERNAL_ERROR_TYPE,
                                     "message": "faultproxy: internal server error"})
        return self._forward(method, path, headers, body)

    def _throttle(self) -> _Reply:
        with self._lock:
            error_type = THROTTLE_TYPES[self._throttle_seq % len(THROTTLE_TYPES)]
            self._throttle_seq += 1
            self._counts["throttled"] += 1
        return _json_reply(400, {"__type": error_type,
                                 "message": "faultproxy: throughput exceeded"})

    def _scan(self, method: str, path: str, headers: Headers, body: bytes) -> tuple[
            _Reply, str]:
        """The reply to one Scan page under a plan with ``scan``: refused, cut or passed."""
        plan = self.plan
        self._bump("scan_requests")
        refused = self._refuse(plan)
        if refused is not None:
            return refused, ""
        reply = self._forward(method, path, headers, body)
        if not self._chance(plan.drop_rate, "drop_rate"):
            return reply, ""
        self._bump("dropped")
        return reply, "rst" if plan.drop_reset else "fin"

    def _remove_keys(self, items: dict[str, dict[str, Any]], rate: float) -> dict[str, Any]:
        """Take keys out of the request (in place); returns them shaped as UnprocessedKeys."""
        removed: dict[str, Any] = {}
        if rate <= 0.0:
            return removed
        for table, spec in list(items.items()):
            keep: list[Any] = []
            drop: list[Any] = []
            for key in spec.get("Keys", []):
                (drop if self._chance(rate, "unprocessed_rate") else keep).append(key)
            if not drop:
                continue
            # Same shape as DynamoDB: the keys plus the request's projection/consistency.
            removed[table] = {**{k: v for k, v in spec.items() if k != "Keys"}, "Keys": drop}
            if keep:
                spec["Keys"] = keep
            else:
                del items[table]  # an empty Keys list is a ValidationException upstream
        return removed

    def _rewrite(self, reply: _Reply, tables: list[str], removed: dict[str, Any],
                 shuffle: bool) -> _Reply:
        payload: dict[str, Any] = json.loads(reply.body)
        responses: dict[str, list[Any]] = payload.setdefault("Responses", {})
        unprocessed: dict[str, Any] = payload.setdefault("UnprocessedKeys", {})
        for table in tables:
            responses.setdefault(table, [])
        for table, spec in removed.items():
            if table in unprocessed:  # upstream left some too: merge, keep its parameters
                unprocessed[table]["Keys"].extend(spec["Keys"])
            else:
                unprocessed[table] = spec
        if shuffle:
            with self._lock:
                for rows in responses.values():
                    self._rng.shuffle(rows)
                for spec in unprocessed.values():
                    self._rng.shuffle(spec["Keys"])
                self._counts["shuffled"] += 1
        return _json_reply(reply.status, payload, reply.headers)

    def _forward(self, method: str, path: str, headers: Headers, body: bytes) -> _Reply:
        scheme, host, port = self._upstream
        conn_class = (http.client.HTTPSConnection if scheme == "https"
                      else http.client.HTTPConnection)
        conn = conn_class(host, port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            data = resp.read()
            keep = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return _Reply(resp.status, keep, data)
        except (OSError, http.client.HTTPException) as exc:
            msg = f"faultproxy: upstream {self.upstream_url} failed: {exc!r}"
            return _Reply(502, [("Content-Type", "text/plain")], msg.encode())
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up (and we hang up on them on purpose); only real bugs get a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the test output

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.proxy._lock:
            self.server.proxy._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        proxy = self.server.proxy
        target = self.headers.get("X-Amz-Target")
        if target == BATCH_GET_TARGET:
            reply, drop = proxy._batch_get(self.command, self.path, headers, body)
        elif target == SCAN_TARGET and proxy.plan.scan:
            reply, drop = proxy._scan(self.command, self.path, headers, body)
        elif target == DESCRIBE_TARGET:
            reply, drop = proxy._describe(self.command, self.path, headers, body), ""
        else:
            reply, drop = proxy._forward(self.command, self.path, headers, body), ""
        self._send(reply, drop)

    do_GET = do_PUT = do_DELETE = do_POST  # moto-api and S3 pass through too

    def _send(self, reply: _Reply, drop: str) -> None:
        self.send_response_only(reply.status)  # upstream's own Date/Server headers are kept
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if not drop:
            self.wfile.write(reply.body)
            return
        # Promise the whole body, deliver half, hang up: the client sees a truncated read.
        self.wfile.write(reply.body[: len(reply.body) // 2])
        self.wfile.flush()
        self.close_connection = True
        if drop == "rst":
            # Linger 0: close() aborts with RST (sent once rfile/wfile are closed in finish()).
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()
