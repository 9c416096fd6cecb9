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

A :class:`ConnectionPool` belongs to one event loop. A read's own loop closes it at the read's
end; a kept loop (:mod:`featurepull.dynamo.loops`) keeps it between reads, and a connection
idle for :data:`IDLE_LIMIT_S`, or that the server closed, is not used again.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
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


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, parsed by llhttp as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._framed = False  # Content-Length or chunked: the parser knows where it ends
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
        if self._waiter is None:
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self._fail(BrokenResponse(f"unexpected bytes from the server: {data[:80]!r}"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenResponse(f"malformed HTTP response ({exc}): {data[:80]!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._headers_done and not self._framed:
                self._complete()  # a body that runs until the server closes
                return
            reason = f" ({type(exc).__name__}: {exc})" if exc else ""
            self._waiter.set_exception(
                BrokenResponse(f"connection closed before the response was complete{reason}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in ("content-length", "transfer-encoding"):
            self._framed = True
        self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete()

    # ours
    async def exchange(self, request: bytes, timeout: float) -> Response:
        """Send one whole request and wait for its whole response, at most ``timeout``
        seconds (then TimeoutError, and the connection is closed)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        self._waiter = waiter
        self._headers, self._body = {}, []
        self._framed = self._headers_done = False
        # One timer handle, not asyncio.timeout's context manager around the await: this
        # runs for every request.
        timer = loop.call_at(loop.time() + timeout, self._time_out)
        self.transport.write(request)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self._parser.should_keep_alive():
            self.close()
        waiter.set_result(Response(self._parser.get_status_code(), self._headers,
                                   b"".join(self._body)))

    def _fail(self, exc: BrokenResponse | TimeoutError) -> None:
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def _time_out(self) -> None:
        if self._waiter is not None and not self._waiter.done():  # not answered just now
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

    async def request(self, raw: bytes) -> Response:
        """Send ``raw`` (a whole HTTP/1.1 request) on an idle or new connection."""
        conn = await self._checkout()
        try:
            response = await conn.exchange(raw, self.read_timeout)
        except TimeoutError:
            conn.close()
            raise BrokenResponse(f"no complete response within {self.read_timeout:g}s "
                                 "(read_timeout)") from None
        except BaseException:
            conn.close()
            raise
        if not conn.closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        return response

    async def _checkout(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if _reusable(conn, time.monotonic()):
                return conn
            conn.close()
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
        """Close every idle connection (call before the loop stops)."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()


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
