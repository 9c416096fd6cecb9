"""The fast transport's keep-alive pool (featurepull.dynamo.http) on a real socket server:
a connection the server closed while it sat idle is not reused, a response that does not come
within read_timeout fails that request alone, and a request's timer does not outlive it."""

from __future__ import annotations

import asyncio
import select
import socket
import socketserver
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from featurepull.dynamo.http import BrokenResponse, ConnectionPool

REQUEST = b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n{}"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nanswer!"
# No Content-Length, not chunked: the body runs to the close; a header sent twice, in two
# cases.
UNFRAMED = (b"HTTP/1.1 200 OK\r\nX-Amz-Crc32: 1\r\nX-Amzn-RequestId: a\r\n"
            b"x-amzn-requestid: b\r\n\r\nall of it")
SLOW_S = 2.2  # a slow answer; the timer of the request before it expires meanwhile
T = TypeVar("T")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        # "close": close after each answer; "hang": never answer; "slow": answer after
        # SLOW_S
        self.mode = "keep-alive"
        self.connections = 0
        self.stop = threading.Event()


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.server.connections += 1
        sock: socket.socket = self.request
        buffered = b""
        while not self.server.stop.is_set():
            while REQUEST not in buffered:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffered += chunk
            buffered = buffered[buffered.index(REQUEST) + len(REQUEST):]
            if self.server.mode == "hang":
                self.server.stop.wait(30)
                return
            if self.server.mode == "slow":
                self.server.stop.wait(SLOW_S)
            if self.server.mode == "unframed":  # a body that ends where the server closes
                sock.sendall(UNFRAMED)
                sock.close()
                return
            sock.sendall(ANSWER)
            if self.server.mode == "close":
                sock.close()
                return


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


def _with_pool(server: _Server, work: Callable[[ConnectionPool], Awaitable[T]],
               read_timeout: float = 10.0) -> T:
    """What ``work`` returns, given a pool to ``server`` (closed after), in a loop of its own."""
    host, port = server.server_address[:2]

    async def run() -> T:
        pool = ConnectionPool(f"http://{host}:{port}", 5.0, read_timeout)
        try:
            return await work(pool)
        finally:
            pool.close()

    return asyncio.run(run())


@pytest.mark.slow
def test_a_timer_ends_with_its_request(server: _Server) -> None:
    # Each answer takes SLOW_S; read_timeout is longer than one answer and shorter than
    # two. The first request's timer expires while the second is waiting on the same
    # connection: it must have been cancelled with the first answer, or it fails the
    # second. 1.8 s of margin for a loaded machine to answer within read_timeout.
    server.mode = "slow"

    async def twice(pool: ConnectionPool) -> list[bytes]:
        return [(await pool.request(REQUEST)).body for _ in range(2)]

    assert _with_pool(server, twice, read_timeout=4.0) == [b"answer!"] * 2
    assert server.connections == 1


def test_a_connection_closed_while_idle_is_not_reused(server: _Server) -> None:
    # The server closes each connection after answering. The next request is sent before
    # the loop has read that end of file: only the check at checkout (poll on the socket)
    # can tell, and a new connection must carry it.
    server.mode = "close"

    async def work(pool: ConnectionPool) -> list[bytes]:
        bodies = [(await pool.request(REQUEST)).body]
        for _ in range(3):
            conn = pool._idle[-1]
            assert conn.transport is not None
            sock = conn.transport.get_extra_info("socket")
            # Until the server's FIN is in this socket (no loop iteration in between).
            readable, _, _ = select.select([sock.fileno()], [], [], 10.0)
            assert readable and not conn.closed
            bodies.append((await pool.request(REQUEST)).body)
        return bodies

    assert _with_pool(server, work) == [b"answer!"] * 4
    assert server.connections == 4


def test_no_answer_within_read_timeout_fails_that_request(server: _Server) -> None:
    server.mode = "hang"

    async def work(pool: ConnectionPool) -> tuple[str, int]:
        with pytest.raises(BrokenResponse) as failed:
            await pool.request(REQUEST)
        return str(failed.value), len(pool._idle)

    message, idle = _with_pool(server, work, read_timeout=0.2)
    assert message == "no complete response within 0.2s (read_timeout)"
    assert idle == 0  # the connection that timed out is closed, not kept


def test_a_connection_times_out_each_request_at_its_own_deadline(server: _Server) -> None:
    # A connection's timer is kept from one request to the next: the first request's
    # deadline comes before the second's, which must not fail before read_timeout. (The
    # pause between them only makes the first deadline fall well before the second; the
    # assertion is a lower bound that holds however late the loop runs.)
    async def work(pool: ConnectionPool) -> tuple[float, str]:
        assert (await pool.request(REQUEST)).body == b"answer!"
        server.mode = "hang"
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.15)
        sent = loop.time()
        with pytest.raises(BrokenResponse) as failed:
            await pool.request(REQUEST)
        return loop.time() - sent, str(failed.value)

    waited, message = _with_pool(server, work, read_timeout=0.3)
    assert waited >= 0.3
    assert message == "no complete response within 0.3s (read_timeout)"
    assert server.connections == 1


def test_a_body_without_length_runs_to_the_close_and_headers_are_lower_cased(
        server: _Server) -> None:
    server.mode = "unframed"

    async def work(pool: ConnectionPool) -> tuple[int, dict[str, str], bytes]:
        response = await pool.request(REQUEST)
        return response.status, dict(response.headers), response.body

    assert _with_pool(server, work) == (
        200, {"x-amz-crc32": "1", "x-amzn-requestid": "b"}, b"all of it")


def test_a_started_request_is_written_next_turn_and_closing_the_pool_abandons_it_untold(
        server: _Server) -> None:
    # The reader starts an answered slot's next request from the previous answer's callback
    # (ConnectionPool.start), so a read that fails leaves requests outstanding on busy
    # connections: closing the pool must close those too, cancel their timers, and tell
    # nobody (the read is over). The callback never runs from within start().
    async def work(pool: ConnectionPool) -> tuple[list[object], bool, bool]:
        assert (await pool.request(REQUEST)).body == b"answer!"  # one idle connection
        conn = pool._idle[-1]
        server.mode = "hang"
        told: list[object] = []
        pool.start(REQUEST, told.append)
        taken = not pool._idle and not told  # the idle connection, for this request
        await asyncio.sleep(0)  # written first thing in the loop's next turn
        sent = conn._timer is not None
        pool.close()
        await asyncio.sleep(0)
        assert conn.transport is not None
        return told, taken and sent, conn.transport.is_closing() and conn._timer is None

    assert _with_pool(server, work) == ([], True, True)
    assert server.connections == 1
