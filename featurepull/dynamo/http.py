"""Keep-alive HTTP/1.1 connections on an asyncio event loop, for the fast transport.

The read path sends thousands of near-identical POSTs per second; a thread per request
through urllib3 and ``http.client`` spends most of its client CPU on work that is not the
request: parsing headers with the ``email`` package, two ``send`` calls per request, a
``poll`` per checkout, and the GIL handed between a dozen threads on every socket call.
Here the read's requests share one thread and one event loop; each is one ``write`` of the
whole request, and the response is parsed by ``httptools`` (llhttp, the parser Node.js
uses) as the bytes arrive. Framing (Content-Length, chunked, read-until-close) is llhttp's;
this module only keeps connections, timeouts, and turns every way a response can go wrong
into :class:`BrokenResponse`.

A request's response or failure is handed to a callback from the protocol's own callbacks,
as soon as the last byte is parsed (:meth:`ConnectionPool.start`): the reader settles the
answer and starts the request that takes its place there, without waking a task (each
wake-up is a turn of the loop, behind whatever else is ready). The requests started while
the loop handles one batch of ready sockets are written together, first thing in its next
turn: written one at a time, each woke the endpoint for itself (one reader and the endpoint,
~+10% and ~+20% CPU; a fleet's reads on two cores slower than before).

A :class:`ConnectionPool` belongs to one event loop. A read's own loop closes it at the read's
end; a kept loop (:mod:`featurepull.dynamo.loops`) keeps it between reads, and a connection
idle for :data:`IDLE_LIMIT_S`, or that the server closed, is not used again.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias, cast
from urllib.parse import urlsplit

import httptools

from featurepull.dynamo.client import per_process

DEFAULT_PORTS = {"http": 80, "https": 443}
# A connection idle this long is closed, not reused. DynamoDB closes idle connections after
# ~60 s (aws/aws-sdk-java#1365; ~90 s in feast-dev/feast#5167); boto 2 discarded its own after
# 60 s, aiobotocore after 12 s. Half of DynamoDB's leaves the server's close far away (a
# request sent as it closes would be lost), and stays well under the 350 s after which an AWS
# NAT gateway silently forgets a connection (urllib3/urllib3#3184), which no check at
# checkout can see. Shards of one job follow each other within a second.
IDLE_LIMIT_S = 30.0


class BrokenResponse(ConnectionError):
    """The response arrived cut, garbled or mismatched: the request is sent again."""


@dataclass
class Response:
    """One complete HTTP response; header names lower-cased."""

    status: int
    headers: Mapping[str, str]
    body: bytes


# What a request ends with: its response, or why there is none (BrokenResponse, TimeoutError
# from the connection; the pool's callers get a BrokenResponse for a timeout too).
Outcome: TypeAlias = "Response | BaseException"
OnResponse: TypeAlias = "Callable[[Response | BaseException], None]"


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, parsed by llhttp as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # The response's headers as llhttp hands them over, names as sent: the parser calls
        # the dict's own __setitem__ (no Python call per header), made into the Response's
        # lower-cased text once the response is complete.
        self._raw_headers: dict[bytes, bytes] = {}
        self.on_header = self._raw_headers.__setitem__
        self._parser = httptools.HttpResponseParser(self)
        # The request's callback while one is outstanding, and when it times out; the
        # response parsed, handed over once the parser has returned.
        self._on_response: OnResponse | None = None
        self._deadline = 0.0
        # The read-timeout timer, kept across requests (see send): it fires at or before
        # the outstanding request's deadline, when it is set again for a later one.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._response: Response | None = None
        self._body: list[bytes] = []
        self._headers_done = False
        # Registered once: idle_and_open asks it at every checkout (None: no socket to ask).
        self._poller: select.poll | None = None
        self.idle_since = 0.0  # time.monotonic() when it last went back to its pool

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # poll, not select: a process with over 1,024 open files has fds select cannot
            # take.
            poller = select.poll()
            try:
                poller.register(sock.fileno(), select.POLLIN)
            except (OSError, ValueError):
                return  # idle_and_open then finds the transport closing, or trusts it
            self._poller = poller

    def data_received(self, data: bytes) -> None:
        if self._on_response is None:
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self._fail(BrokenResponse(f"unexpected bytes from the server: {data[:80]!r}"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenResponse(f"malformed HTTP response ({exc}): {data[:80]!r}"))
            return
        response = self._response
        if response is not None:
            self._response = None
            self._deliver(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self._on_response is not None:
            if self._response is None and self._headers_done and not self._framed():
                self._complete()  # a body that runs until the server closes
            response, self._response = self._response, None
            if response is not None:
                self._deliver(response)
                return
            reason = f" ({type(exc).__name__}: {exc})" if exc else ""
            self._deliver(
                BrokenResponse(f"connection closed before the response was complete{reason}"))

    # httptools callbacks (and on_header, the headers dict's __setitem__)
    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete()

    # ours
    def send(self, request: bytes, timeout: float, on_response: OnResponse) -> None:
        """Write one whole request now; ``on_response`` gets its whole response, or the
        failure (TimeoutError after ``timeout`` seconds, and the connection is closed),
        from a callback of the loop — never from within this call."""
        assert self.transport is not None
        self._on_response = on_response
        self._raw_headers.clear()
        self._body = []
        self._headers_done = False
        self._response = None
        # One timer per connection, not one per request (a TimerHandle made, pushed on the
        # loop's heap and cancelled each time, ~2-3 µs): an answer leaves it running, and
        # when it fires before the outstanding request's deadline it is set for that.
        loop = asyncio.get_running_loop()
        self._deadline = deadline = loop.time() + timeout
        if self._timer is None or self._timer_at > deadline:
            self._set_timer(loop, deadline)
        self.transport.write(request)

    def close(self) -> None:
        """Close the connection; a request still outstanding is abandoned untold."""
        self.closed = True
        self._take()
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def _take(self) -> OnResponse | None:
        """The outstanding request's callback, which this connection no longer owes (its
        timer left running: see send)."""
        on_response, self._on_response = self._on_response, None
        return on_response

    def _deliver(self, outcome: Outcome) -> None:
        on_response = self._take()
        if on_response is not None:
            on_response(outcome)

    def _set_timer(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(when, self._time_out), when

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _complete(self) -> None:
        if self._on_response is None or self._response is not None:
            return
        keep_alive = self._parser.should_keep_alive()
        # A repeated name keeps its last value (the value of its spelling first sent last,
        # when it came in two cases: no answer of DynamoDB's repeats one).
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in self._raw_headers.items()}
        self._response = Response(self._parser.get_status_code(), headers,
                                  b"".join(self._body))
        if not keep_alive:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def _fail(self, exc: BrokenResponse | TimeoutError) -> None:
        on_response = self._take()
        self.close()
        if on_response is not None:
            on_response(exc)

    def _framed(self) -> bool:
        """Content-Length or chunked: the parser knows where the body ends."""
        return any(name.lower() in (b"content-length", b"transfer-encoding")
                   for name in self._raw_headers)

    def _time_out(self) -> None:
        self._timer = None
        if self._on_response is None:
            return  # idle: the next request sets a timer of its own
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:  # a later request's deadline (not answered yet)
            self._set_timer(loop, self._deadline)
            return
        self._fail(TimeoutError())

    def idle_and_open(self) -> bool:
        """Still usable: open, and the server has sent nothing (no EOF) while it was idle."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if self._poller is None:
            return self.transport.get_extra_info("socket") is None
        try:
            return not self._poller.poll(0)
        except (OSError, ValueError):
            return False


class ConnectionPool:
    """Keep-alive connections to one endpoint, for the loop that is running it."""

    def __init__(self, url: str, connect_timeout: float, read_timeout: float,
                 verify: bool | str = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"cannot send requests to endpoint {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssl: ssl.SSLContext | None = (
            tls_context(verify) if parts.scheme == "https" else None)
        self._idle: list[_Connection] = []
        # Connections with a request outstanding, and connections being made for one: what
        # close() closes or cancels besides the idle ones (a read that failed).
        self._busy: set[_Connection] = set()
        self._connecting: set[asyncio.Task[None]] = set()
        # Requests started and not yet written (see the module's docstring): written by
        # _write, scheduled by the first of them.
        self._unwritten: list[tuple[_Connection, bytes, OnResponse]] = []

    async def request(self, raw: bytes) -> Response:
        """Send ``raw`` (a whole HTTP/1.1 request) on an idle or new connection."""
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.start(raw, lambda outcome: _settle(waiter, outcome))
        return await waiter

    def start(self, raw: bytes, on_response: OnResponse) -> None:
        """Send ``raw`` (a whole HTTP/1.1 request) on an idle connection, written with the
        others started in this turn of the loop at the start of the next, else once a new
        connection is made. ``on_response`` gets the response, or the failure (a
        BrokenResponse, or the certificate's ssl.SSLCertVerificationError), from a callback
        of the loop — never from within this call; nothing after :meth:`close`."""
        while self._idle:
            conn = self._idle.pop()
            if _reusable(conn, time.monotonic()):
                self._send(conn, raw, on_response)
                return
            conn.close()
        task = asyncio.ensure_future(self._connect_and_send(raw, on_response))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _send(self, conn: _Connection, raw: bytes, on_response: OnResponse) -> None:
        def answered(outcome: Outcome) -> None:
            self._busy.discard(conn)
            if isinstance(outcome, Response):
                if not conn.closed:
                    conn.idle_since = time.monotonic()
                    self._idle.append(conn)  # free again before the caller writes its next
            else:
                conn.close()
                if isinstance(outcome, TimeoutError):
                    outcome = BrokenResponse(f"no complete response within "
                                             f"{self.read_timeout:g}s (read_timeout)")
            on_response(outcome)

        self._busy.add(conn)
        if not self._unwritten:
            asyncio.get_running_loop().call_soon(self._write)
        self._unwritten.append((conn, raw, answered))

    def _write(self) -> None:
        unwritten, self._unwritten = self._unwritten, []
        for conn, raw, answered in unwritten:
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                answered(BrokenResponse("connection closed before the request was written"))
            else:
                conn.send(raw, self.read_timeout, answered)

    async def _connect_and_send(self, raw: bytes, on_response: OnResponse) -> None:
        try:
            conn = await self._connect()
        except asyncio.CancelledError:
            raise  # the pool was closed: nobody waits
        except BaseException as exc:  # whatever it is, the caller waits to be told
            on_response(exc)
            return
        self._send(conn, raw, on_response)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            raise BrokenResponse(f"could not connect to {self.host}:{self.port} within "
                                 f"{self.connect_timeout:g}s (connect_timeout)") from None
        except ssl.SSLCertVerificationError:
            raise  # not a flaky network: the reader fails at once with the reason
        except OSError as exc:
            raise BrokenResponse(f"could not connect to {self.host}:{self.port}: "
                                 f"{exc}") from None
        return conn

    def close_stale(self) -> None:
        """Close the idle connections that may not be used again (a kept pool, before a
        read): idle for IDLE_LIMIT_S, or closed by the server meanwhile."""
        now = time.monotonic()
        stale = [conn for conn in self._idle if not _reusable(conn, now)]
        for conn in stale:
            conn.close()
        self._idle = [conn for conn in self._idle if not conn.closed]

    def close(self) -> None:
        """Close every connection, abandoning the requests still outstanding untold, and
        stop the ones being made (call before the loop stops)."""
        for conn in [*self._idle, *self._busy]:
            conn.close()
        self._idle.clear()
        self._busy.clear()
        self._unwritten.clear()
        for task in self._connecting:
            task.cancel()


def _settle(waiter: asyncio.Future[Response], outcome: Outcome) -> None:
    if waiter.done():
        return
    if isinstance(outcome, Response):
        waiter.set_result(outcome)
    else:
        waiter.set_exception(outcome)


def _reusable(conn: _Connection, now: float) -> bool:
    return now - conn.idle_since < IDLE_LIMIT_S and conn.idle_and_open()


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """This process's TLS context, trusting what botocore's HTTP session trusts (the CA
    bundle ``verify`` names, else :func:`default_ca_bundle` — not the system's store), or,
    with ``verify=False``, no certificate check (as boto3's ``verify=False``)."""
    def build() -> ssl.SSLContext:
        if verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(
            cafile=verify if isinstance(verify, str) else default_ca_bundle())

    return per_process(("tls-context", verify), build)


def default_ca_bundle() -> str:
    """The CA bundle botocore's HTTP session checks certificates with when given no other
    (``botocore.httpsession.get_cert_path(True)``): certifi's, else botocore's own
    ``cacert.pem`` (found without importing botocore)."""
    try:
        from certifi import where
    except ImportError:
        import importlib.util
        import os

        spec = importlib.util.find_spec("botocore")
        assert spec is not None and spec.submodule_search_locations is not None
        return os.path.join(next(iter(spec.submodule_search_locations)), "cacert.pem")
    return str(where())
