"""The read's event loop as a caller meets it: a plain blocking call from anywhere.

Each read runs its requests on an event loop in the calling thread; these tests pin down the
cases a caller can put that loop in: called from inside a running event loop (a notebook, an
async web app), interrupted by a signal handler that raises (Celery's soft time limit),
and its connections kept for the next read (tests/dynamo/test_kept_loops.py: which are not).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess, expected_features, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from featurepull.dynamo.feast_values import decode_value
from featurepull.dynamo.loops import close_kept_loops
from featurepull.dynamo.reader import InFlight, close_requests
from tests.conftest import REGION

LAYOUT = FeastLayout({"driver_id": "int64"})
TABLE = "loop.driver_stats"


class TimeLimit(Exception):
    """Stands for celery.exceptions.SoftTimeLimitExceeded: an Exception, not a BaseException."""


@pytest.fixture(scope="module")
def slow_endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=2_000, table=TABLE, latency_ms=50) as running:
        yield running


def _reader(endpoint: EndpointProcess, **settings: object) -> BatchReader:
    return BatchReader(TABLE, LAYOUT, DynamoSettings(region=REGION, endpoint_url=endpoint.url,
                                                     **settings))  # type: ignore[arg-type]


def _sockets() -> int:
    """Open TCP sockets of this process."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def test_read_from_inside_a_running_event_loop(slow_endpoint: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": [5, 6, 7_000]})

    async def notebook_cell() -> list[object]:
        return _reader(slow_endpoint).read(keys, ["city"]).rows

    rows = asyncio.run(notebook_cell())
    cities = [decode_value(expected_features(d)["city"]) for d in (5, 6)]
    assert [row[1] if row else None for row in rows] == [*cities, None]


def test_an_exception_raised_by_a_signal_handler_ends_the_read(
        slow_endpoint: EndpointProcess) -> None:
    # 2,000 keys, batch 10, one request in flight, 50 ms each: ~10 s if nothing stops it.
    keys = LAYOUT.keys_for({"driver_id": list(range(2_000))})
    reader = _reader(slow_endpoint, batch_size=10, max_read_workers=1)

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeLimit("soft time limit")

    previous = signal.signal(signal.SIGALRM, alarm)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(TimeLimit, match="soft time limit"):
            reader.read(keys, list(FEATURES))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 5  # half the read's ~10 s


def test_answered_slots_are_refilled_on_the_wire_before_the_answers_are_taken_in(
        slow_endpoint: EndpointProcess) -> None:
    # A request task runs only once the dispatcher awaits; sending the refills and then
    # decoding answers or reporting progress (a worker's Redis round trips) held them back
    # for that long. When the first progress report runs, the endpoint has already
    # received the requests that took the answered ones' places.
    keys = LAYOUT.keys_for({"driver_id": list(range(100))})
    reader = _reader(slow_endpoint, batch_size=10, max_read_workers=4)
    reader.check_table()
    before = slow_endpoint.stats()["batch_get_item"]
    received: list[int] = []

    def progress(answered: int) -> None:
        if not received:
            received.append(slow_endpoint.stats()["batch_get_item"] - before)

    assert reader.read(keys, ["city"], progress=progress).stats.requests == 10
    assert received[0] > 4  # the first 4, and at least one sent in an answered one's place


def test_connections_are_kept_for_the_next_read_and_closed_with_the_kept_loops(
        slow_endpoint: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": list(range(400))})
    reader = _reader(slow_endpoint, batch_size=10, max_read_workers=8)
    reader.check_table()  # the boto3 client's own pool is not the read's
    close_kept_loops()
    gc.collect()
    before = _sockets()
    result = reader.read(keys, ["city"])
    assert result.stats.requests == 40
    kept = _sockets()
    assert before < kept <= before + 8 + 2  # its connections, and its loop's self-pipe
    assert reader.read(keys, ["city"]).stats.requests == 40
    assert _sockets() == kept
    close_kept_loops()
    assert _sockets() == before
    assert gc.isenabled()  # the read pauses the cyclic collector, and only while it reads


def test_requests_that_fail_together_are_all_collected() -> None:
    # The first failure is raised; the others stay in flight, where close_requests takes
    # their errors: asyncio logs each error nobody retrieved ("Task exception was never
    # retrieved"), which a worker would show as an error of its own.
    async def refused(n: int) -> None:
        raise PermissionError(f"request {n}: AccessDenied")

    unretrieved: list[dict[str, object]] = []

    class Closed:
        def close(self) -> None:
            pass

    async def main() -> int:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: unretrieved.append(context))
        inflight: InFlight[None] = InFlight()
        for n in range(3):
            inflight.send(refused(n))
        await asyncio.wait(set(inflight))
        with pytest.raises(PermissionError, match="request 0"):
            await inflight.answers(None)
        left = len(inflight)
        await close_requests(inflight, Closed())  # type: ignore[arg-type]
        inflight.clear()
        gc.collect()
        return left

    assert asyncio.run(main()) == 3
    assert unretrieved == []
