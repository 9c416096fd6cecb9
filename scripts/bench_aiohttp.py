"""An aiohttp transport for the benchmark: featurepull's fast transport with its hand-written
HTTP layer (``featurepull/dynamo/http.py``: asyncio protocol + llhttp) swapped for aiohttp's
client, everything else the same — the body (orjson), the SigV4 signer, the length and
``x-amz-crc32`` checks, the parsing. So a cell of ``featurepull_pull[aiohttp]`` against
``featurepull_pull[fast]`` measures only the HTTP client. ``bench_methods.py`` installs it
with :func:`installed` for a cell; featurepull itself never imports this module. Run on its
own, it reads the same keys through both clients in turns and prints the ratios:

    .venv/bin/python scripts/bench_aiohttp.py --entities 100000 --latency-ms 10 --in-flight 10,32
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import aiohttp
import orjson

import featurepull.dynamo.reader as reader_module
from featurepull.config import DynamoSettings
from featurepull.dynamo.http import BrokenResponse
from featurepull.dynamo.transport import (
    FastTransport,
    OnAnswer,
    Transport,
    _base64,
    _check_complete,
    _error_answer,
    _hand_over,
    _parse_answer,
)


class AiohttpTransport(FastTransport):
    """BatchGetItem as one signed POST through an ``aiohttp.ClientSession`` whose connector
    keeps up to ``max_read_workers`` keep-alive connections."""

    posts = 0  # POSTs aiohttp carried, in this process (the test checks they were its)

    def __init__(self, client: Any, settings: DynamoSettings,
                 base64_values: bool = False) -> None:
        super().__init__(client, settings, base64_values)
        self._limit = settings.max_read_workers
        self._timeout = aiohttp.ClientTimeout(sock_connect=settings.connect_timeout,
                                              sock_read=settings.read_timeout)
        self._ssl = self.pool.ssl if self.pool.ssl is not None else False
        self._connector: aiohttp.TCPConnector | None = None
        self._session: aiohttp.ClientSession | None = None
        self._started: set[asyncio.Task[dict[str, Any]]] = set()  # start_batch_get_item's

    def _client_session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the read's running loop (aiohttp binds to it).
        if self._session is None:
            self._connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=self._connector, timeout=self._timeout, auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        return self._session

    async def batch_get_item(self, request_items: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps({"RequestItems": request_items, "ReturnConsumedCapacity": "TOTAL"},
                            default=_base64)
        # The fast transport's signer, as it signs (its unsigned headers after the signed).
        headers = {**self.signer.sign(body, self.credentials.get_frozen_credentials()),
                   **self.signer.unsigned}
        AiohttpTransport.posts += 1
        try:
            async with self._client_session().post(self.url, data=body,
                                                   headers=headers) as response:
                data = await response.read()
                status = response.status
                answer_headers = {name.lower(): value
                                  for name, value in response.headers.items()}
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise BrokenResponse(f"aiohttp: {type(exc).__name__}: {exc}") from None
        _check_complete(answer_headers, data)
        if status != 200:
            raise _error_answer(status, answer_headers, data)
        return _parse_answer(data, answer_headers, self.base64_values)

    def start_batch_get_item(self, request_items: dict[str, Any], on_answer: OnAnswer) -> None:
        # Through aiohttp, as batch_get_item (the fast transport's would use its own pool).
        task = asyncio.ensure_future(self.batch_get_item(request_items))
        self._started.add(task)
        task.add_done_callback(self._started.discard)
        task.add_done_callback(functools.partial(_hand_over, on_answer))

    def close(self) -> None:
        for task in self._started:
            task.cancel()  # nobody is told any more
        # Called synchronously at the end of the read, inside its loop, which stops right
        # after: aiohttp's close() is a coroutine there would be no loop left to finish, so
        # the connector's synchronous part closes the connections now.
        if self._connector is not None:
            self._connector._close()
        self.pool.close()


@contextmanager
def installed() -> Iterator[None]:
    """The reader builds AiohttpTransport instead of its fast transport, for the block."""
    original = reader_module.transport_for

    def aiohttp_transport(client: Any, settings: DynamoSettings, base64_values: bool = False,
                          loop: object = None) -> Transport:
        # aiohttp keeps its own connections: none kept on the read's loop between reads.
        return AiohttpTransport(client, settings, base64_values)

    reader_module.transport_for = aiohttp_transport  # type: ignore[assignment]
    try:
        yield
    finally:
        reader_module.transport_for = original


__all__ = ["AiohttpTransport", "installed"]


# ---------------------------------------------------------------------------------------
# A/B: the two HTTP clients read the same keys in turns, in one process
# ---------------------------------------------------------------------------------------


def _ab(argv: list[str] | None = None) -> int:
    """Interleaved reads through the fast transport and AiohttpTransport; median wall and
    CPU seconds per read, and their ratio. Turns alternate, so load from other work on the
    machine falls on both alike."""
    import argparse
    import os
    import statistics
    import time

    from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, start_endpoint
    from featurepull.dynamo import BatchReader, FeastLayout

    parser = argparse.ArgumentParser(description=_ab.__doc__)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--in-flight", default="10,32", help="max_read_workers values")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    layout = FeastLayout({"driver_id": "int64"})
    keys = layout.keys_for({"driver_id": list(range(args.entities))})  # every one seeded
    print(f"{args.entities:,} entities, {args.latency_ms:g} ms a request, "
          f"{args.rounds} rounds, aiohttp {aiohttp.__version__}")
    print(f"{'in flight':>9} {'client':8} {'wall s':>7} {'CPU s':>6}  wall ratio  CPU ratio")
    with start_endpoint(drivers=args.entities, latency_ms=args.latency_ms) as endpoint:
        for in_flight in [int(n) for n in args.in_flight.split(",")]:
            settings = DynamoSettings(endpoint_url=endpoint.url, region="us-east-1",
                                      max_read_workers=in_flight)
            reader = BatchReader(DEFAULT_TABLE, layout, settings)
            reader.check_table()
            wall: dict[str, list[float]] = {"fast": [], "aiohttp": []}
            cpu: dict[str, list[float]] = {"fast": [], "aiohttp": []}
            for _ in range(args.rounds):
                for client in ("fast", "aiohttp"):
                    swap = installed() if client == "aiohttp" else nullcontext()
                    with swap:
                        started, cpu_started = time.perf_counter(), time.process_time()
                        result = reader.read(keys, list(FEATURES))
                        wall[client].append(time.perf_counter() - started)
                        cpu[client].append(time.process_time() - cpu_started)
                    if result.stats.found != args.entities:
                        raise SystemExit(f"{client}: {result.stats.found} found")
            medians = {c: (statistics.median(wall[c]), statistics.median(cpu[c]))
                       for c in wall}
            for client, (wall_s, cpu_s) in medians.items():
                ratio = (f"{wall_s / medians['fast'][0]:10.2f} {cpu_s / medians['fast'][1]:10.2f}"
                         if client == "aiohttp" else "")
                print(f"{in_flight:9} {client:8} {wall_s:7.3f} {cpu_s:6.3f}  {ratio}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_ab())
