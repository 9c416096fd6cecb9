#!/usr/bin/env python
"""CPU per BatchGetItem request of one process reading from the lean endpoint, layer by
layer: what the HTTP pool alone costs, the fast transport (body, SigV4, parse), and the
whole reader (bookkeeping and decoding the items into columns).

    .venv/bin/python scripts/bench_requests.py [--keys 200000] [--found-share 0.1] \\
        [--in-flight 32] [--latency-ms 10] [--layers pool,transport,reader]
    .venv/bin/python scripts/bench_requests.py --endpoint-url URL --keys N --layers reader

Each layer sends the same 100-key requests (Feast layout, 5 features, entity ids shuffled so
that every request finds about ``--found-share`` of its keys) with ``--in-flight`` at once,
and prints user+sys CPU seconds of this process per request (``resource.getrusage``) with
the load average. On a shared machine compare runs of two trees interleaved, or count
instructions under valgrind: two ``--keys`` sizes, each against an endpoint serving
``keys * found-share`` drivers (so that both find the same share); their difference over the
difference in requests is a request's instructions, imports cancelled. Against one endpoint
both sizes find the same items, and the difference leaves out decoding them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo.client import process_client
from featurepull.dynamo.layouts import FeastLayout
from featurepull.dynamo.reader import BatchReader
from featurepull.dynamo.transport import FastTransport

BATCH = 100
LAYERS = ("pool", "transport", "reader")
# Dummy credentials: the endpoint accepts anything, and real ones must never be used here.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _fan_out(batches: Sequence[list[Any]], in_flight: int,
                   send: Callable[[list[Any]], Awaitable[Any]]) -> None:
    pending = iter(batches)

    async def worker() -> None:
        for batch in pending:
            await send(batch)

    await asyncio.gather(*(worker() for _ in range(in_flight)))


def measure(url: str, keys: int, found_share: float, in_flight: int,
            layers: Sequence[str]) -> list[dict[str, Any]]:
    """One cell per layer: CPU seconds per request and per key."""
    layout = FeastLayout({"driver_id": "int64"})
    # Drivers below keys * found_share exist on the endpoint (started with that many).
    ids = list(range(keys))
    random.Random(1).shuffle(ids)
    entity_ids = layout.keys_for({"driver_id": ids})
    settings = DynamoSettings(endpoint_url=url, region="us-east-1", max_read_workers=in_flight)
    client = process_client(settings)
    features = list(FEATURES)
    template = {**layout.projection(features), "ConsistentRead": False}
    batches = [entity_ids[i:i + BATCH] for i in range(0, keys, BATCH)]
    reader = BatchReader(DEFAULT_TABLE, layout, settings)
    reader.check_table()

    def request_items(batch: list[Any]) -> dict[str, Any]:
        return {DEFAULT_TABLE: {**template, "Keys": layout.wire_keys_json(batch)}}

    async def pool_only() -> None:
        transport = FastTransport(client, settings, base64_values=True)
        body = orjson.dumps({"RequestItems": request_items(batches[0]),
                             "ReturnConsumedCapacity": "TOTAL"})
        raw = transport._request_bytes(body)
        await _fan_out(batches, in_flight, lambda _: transport.pool.request(raw))
        transport.close()

    async def transport_only() -> None:
        transport = FastTransport(client, settings, base64_values=True)
        await _fan_out(batches, in_flight,
                       lambda batch: transport.batch_get_item(request_items(batch)))
        transport.close()

    def read() -> int:
        return reader.read(entity_ids, features, positions=range(keys)).stats.found

    runs: dict[str, Callable[[], Any]] = {
        "pool": lambda: asyncio.run(pool_only()),
        "transport": lambda: asyncio.run(transport_only()),
        "reader": read,
    }
    cells = []
    for layer in layers:
        cpu, started = _cpu(), time.perf_counter()
        found = runs[layer]()
        cpu, wall = _cpu() - cpu, time.perf_counter() - started
        cells.append({"layer": layer, "requests": len(batches), "found": found,
                      "wall_s": round(wall, 3),
                      "cpu_s": round(cpu, 3),
                      "cpu_us_per_request": round(cpu / len(batches) * 1e6, 1),
                      "load_average": round(os.getloadavg()[0], 1)})
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--found-share", type=float, default=0.1)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--endpoint-url", help="an endpoint already serving "
                        "keys * found-share drivers (default: start one)")
    parser.add_argument("--layers", default=",".join(LAYERS),
                        type=lambda text: [name for name in text.split(",") if name])
    args = parser.parse_args(argv)
    os.environ.update(AWS_ENV)
    unknown = set(args.layers) - set(LAYERS)
    if unknown:
        parser.error(f"unknown layers {sorted(unknown)}; choose from {', '.join(LAYERS)}")
    drivers = max(1, int(args.keys * args.found_share))
    if args.endpoint_url:
        cells = measure(args.endpoint_url, args.keys, args.found_share, args.in_flight,
                        args.layers)
    else:
        with start_endpoint(drivers=drivers, latency_ms=args.latency_ms) as endpoint:
            cells = measure(endpoint.url, args.keys, args.found_share, args.in_flight,
                            args.layers)
    for cell in cells:
        print(json.dumps(cell))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
