"""Connections kept between reads (featurepull.dynamo.loops), against the lean bench endpoint
behind a TCP forwarder of the test's: reads in a row send on the connections of the first;
one the server closed while idle, or idle past the limit, is not used; a read that fails
leaves none open; a forked child opens its own and leaves its parent's alone."""

from __future__ import annotations

import asyncio
import gc
import os
import select
import time
from collections.abc import Iterator

import pytest

from featurepull.bench.endpoint import EndpointProcess, expected_features, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout, http, loops
from featurepull.dynamo.feast_values import decode_value
from featurepull.dynamo.http import ConnectionPool
from tests.conftest import REGION
from tests.dynamo.forwarder import Forwarder
from tests.dynamo.test_event_loop import _sockets

TABLE = "kept.driver_stats"
LAYOUT = FeastLayout({"driver_id": "int64"})
IDS = [*range(0, 400), 10_000]  # 400 known, one unknown: 41 requests of 10
KEYS = LAYOUT.keys_for({"driver_id": IDS})
CITIES = [decode_value(expected_features(d)["city"]) for d in IDS[:-1]] + [None]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=500, table=TABLE) as running:
        yield running


@pytest.fixture
def no_kept_loops() -> Iterator[None]:
    loops.close_kept_loops()
    yield
    loops.close_kept_loops()


@pytest.fixture
def forwarder(endpoint: EndpointProcess, no_kept_loops: None) -> Iterator[Forwarder]:
    running = Forwarder(endpoint.url)
    try:
        yield running
    finally:
        running.stop()


def _reader(url: str) -> BatchReader:
    reader = BatchReader(TABLE, LAYOUT, DynamoSettings(
        region=REGION, endpoint_url=url, batch_size=10, max_read_workers=8,
        retry_deadline_s=10))
    reader.check_table()  # DescribeTable: the boto3 client's own connection, not the read's
    return reader


def _read(reader: BatchReader) -> int:
    """Read KEYS, check the rows; the connection failures the read met."""
    result = reader.read(KEYS, ["city"])
    assert [row[1] if row else None for row in result.rows] == CITIES
    assert result.stats.requests == 41
    return result.stats.connection_errors


def _kept_pools() -> list[ConnectionPool]:
    return [pool for loop in loops._shelf for pool in loop._pools.values()]


def test_reads_in_a_row_send_on_the_connections_of_the_first(forwarder: Forwarder) -> None:
    reader = _reader(forwarder.url)
    before = forwarder.accepted
    assert _read(reader) == 0
    opened = forwarder.accepted - before
    assert 1 <= opened <= 8
    for _ in range(3):
        assert _read(reader) == 0
    # another reader of the same endpoint, too
    other = _reader(forwarder.url)
    assert _read(other) == 0
    assert forwarder.accepted - before == opened


def test_a_connection_the_server_closed_while_idle_is_not_used(forwarder: Forwarder) -> None:
    reader = _reader(forwarder.url)
    assert _read(reader) == 0
    before = forwarder.accepted
    forwarder.close_all()
    idle = [conn for pool in _kept_pools() for conn in pool._idle]
    assert idle
    for conn in idle:  # until the server's FIN is in each socket; no loop has run since
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        readable, _, _ = select.select([sock.fileno()], [], [], 10.0)
        assert readable and not conn.closed
    assert _read(reader) == 0  # no request sent on a closed connection
    assert forwarder.accepted > before


def test_a_connection_idle_past_the_limit_is_not_used(
        forwarder: Forwarder, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = _reader(forwarder.url)
    assert _read(reader) == 0
    opened = forwarder.accepted
    kept = [conn for pool in _kept_pools() for conn in pool._idle]
    monkeypatch.setattr(http, "IDLE_LIMIT_S", 0.0)
    assert _read(reader) == 0
    assert forwarder.accepted > opened
    assert kept and all(conn.closed for conn in kept)


def test_a_read_that_fails_leaves_no_connection_open(endpoint: EndpointProcess,
                                                     no_kept_loops: None) -> None:
    # Straight to the endpoint: the forwarder's sockets would be this process's too.
    reader = _reader(endpoint.url)
    assert _read(reader) == 0
    loops.close_kept_loops()
    gc.collect()  # clients other tests left behind close their sockets now, not mid-count
    sockets = _sockets()

    class Stop(Exception):
        pass

    def progress(answered: int) -> None:
        raise Stop("the caller gave up")

    with pytest.raises(Stop):
        reader.read(KEYS, ["city"], progress=progress)
    assert loops._shelf == []  # its loop was closed, not kept
    assert _sockets() == sockets
    before = endpoint.stats()["connections"]
    assert _read(reader) == 0
    assert endpoint.stats()["connections"] > before


def test_a_forked_child_leaves_its_parents_connections_alone(forwarder: Forwarder) -> None:
    reader = _reader(forwarder.url)
    assert _read(reader) == 0
    kept = [conn for pool in _kept_pools() for conn in pool._idle]
    before = forwarder.accepted
    pid = os.fork()
    if pid == 0:  # the child: its own connections; the parent's loops collected here
        code = 1
        try:
            kept.clear()  # the child's copy: nothing of the parent's loop stays referenced
            gc.collect()
            code = 3 if _read(reader) else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_opened = forwarder.accepted - before
    assert child_opened >= 1
    # The parent reads on its own connections, untouched by the child.
    assert _read(reader) == 0
    assert forwarder.accepted - before == child_opened
    assert {id(c) for pool in _kept_pools() for c in pool._idle} >= {id(c) for c in kept}
    # Its loop still wakes up for another thread's call: the child removed nothing from the
    # epoll it shares with its parent (the loop's self-pipe).
    loop = loops._shelf[0]
    woke: list[float] = []

    async def from_a_thread() -> None:
        started = time.monotonic()
        # The call takes long enough for the loop to wait in epoll meanwhile.
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
            None, time.sleep, 0.2), 5)
        woke.append(time.monotonic() - started)

    loop.run(from_a_thread())
    assert woke[0] < 2.5  # not woken by the wait_for's 5 s timer
