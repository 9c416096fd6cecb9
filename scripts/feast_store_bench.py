#!/usr/bin/env python
"""Feast's ``get_online_features`` with Feast's own DynamoDB online store against the same
call with featurepull's (``featurepull.feast_store.FeaturepullOnlineStore``), on one local
endpoint and the same entity rows.

    .venv/bin/python scripts/feast_store_bench.py                     # 1,000 and 100,000 rows
    .venv/bin/python scripts/feast_store_bench.py --sizes 1000 --unprocessed-rate 0.05 \\
        --latency-ms 5 --json-out bench-output/feast_store_bench.json

The lean BatchGetItem endpoint (``featurepull.bench.endpoint``: one Feast-layout table,
``demo.driver_stats``, 5 features per driver) is started once; a feature repository in a
temporary folder registers its entity and feature view (registry only: the table exists).
Each size's entity rows are 90% known drivers and 10% unknown ids, shuffled, no repeats.
Every store (``--stores``: Feast's; featurepull's; featurepull's with ``transport: botocore``)
answers the same ``get_online_features`` call, one store after the other, each
cell ``--repeats`` times after one small warm-up call; the table shows the median wall time,
rows/s, the CPU seconds of this process (every thread), and how many rows came back found.
``--unprocessed-rate`` makes the endpoint leave that share of keys in UnprocessedKeys.
Needs Feast: ``pip install -e '.[feast]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Float32, Float64, Int64, String, UnixTimestamp

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, start_endpoint
from featurepull.feast_store import STORE_TYPE

# Store name -> its online_store block (beside region and endpoint_url).
STORES: dict[str, dict[str, Any]] = {
    "feast": {"type": "dynamodb"},
    "featurepull": {"type": STORE_TYPE},
    "featurepull-botocore": {"type": STORE_TYPE, "transport": "botocore"},
}
PROJECT, VIEW = DEFAULT_TABLE.split(".")
KNOWN_SHARE = 0.9
# Dummy credentials: the endpoint accepts anything, and real ones must never be used here.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class Cell:
    size: int
    store: str
    seconds: float  # median over the repeats
    rows_per_s: float
    cpu_s: float  # median, this process, every thread
    found: int
    missing: int
    repeats: int


def _repo(endpoint_url: str, folder: Path, store: str) -> FeatureStore:
    config = RepoConfig(
        project=PROJECT, provider="local", registry=str(folder / "registry.db"),
        entity_key_serialization_version=3,
        online_store={**STORES[store], "region": "us-east-1", "endpoint_url": endpoint_url})
    return FeatureStore(config=config, repo_path=str(folder))


def _register(store: FeatureStore) -> None:
    """The endpoint's table as a Feast feature view, in the registry only: the endpoint
    answers DescribeTable and BatchGetItem, not the table management ``apply`` does."""
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name=VIEW, entities=[driver], ttl=None,
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
        schema=[Field(name="driver_id", dtype=Int64), Field(name="conv_rate", dtype=Float32),
                Field(name="acc_rate", dtype=Float64),
                Field(name="avg_daily_trips", dtype=Int64), Field(name="city", dtype=String),
                Field(name="last_trip_at", dtype=UnixTimestamp)])
    store.registry.apply_entity(driver, PROJECT, commit=True)
    store.registry.apply_feature_view(view, PROJECT, commit=True)


def _entity_ids(size: int, drivers: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    known = int(size * KNOWN_SHARE)
    ids = rng.sample(range(drivers), known) + [drivers + i for i in range(size - known)]
    rng.shuffle(ids)
    return ids


def _measure(store: FeatureStore, ids: list[int], repeats: int) -> tuple[list[float],
                                                                         list[float], int]:
    features = [f"{VIEW}:{name}" for name in FEATURES]
    walls, cpus, found = [], [], -1
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        response = store.get_online_features(features=features,
                                             entity_rows={"driver_id": ids}).to_dict()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        found = sum(value is not None for value in response["city"])
    return walls, cpus, found


def run(args: argparse.Namespace) -> list[Cell]:
    sizes = sorted(args.sizes)
    drivers = max(sizes)
    cells: list[Cell] = []
    with start_endpoint(drivers, latency_ms=args.latency_ms,
                        unprocessed_rate=args.unprocessed_rate, seed=args.seed) as endpoint, \
            tempfile.TemporaryDirectory(prefix="feast-store-bench-") as folder:
        stores = {name: _repo(endpoint.url, Path(folder), name) for name in args.stores}
        _register(next(iter(stores.values())))
        for store in stores.values():
            store.get_online_features(features=[f"{VIEW}:city"],
                                      entity_rows={"driver_id": list(range(10))})
        for size in sizes:
            ids = _entity_ids(size, drivers, args.seed)
            for name, store in stores.items():
                repeats = args.repeats if size <= 10_000 else 1
                walls, cpus, found = _measure(store, ids, repeats)
                wall = statistics.median(walls)
                cell = Cell(size, name, round(wall, 4), round(size / wall),
                            round(statistics.median(cpus), 4), found, size - found, repeats)
                cells.append(cell)
                print(f"  {size:>8,} rows  {name:<20} {wall:8.3f} s", file=sys.stderr)
    return cells


def table(cells: list[Cell]) -> str:
    lines = [f"{'rows':>9}  {'store':<20} {'seconds':>8} {'rows/s':>9} {'CPU s':>7} "
             f"{'found':>8} {'missing':>8}"]
    for c in cells:
        lines.append(f"{c.size:>9,}  {c.store:<20} {c.seconds:>8.3f} {c.rows_per_s:>9,} "
                     f"{c.cpu_s:>7.2f} {c.found:>8,} {c.missing:>8,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(n) for n in s.split(",")],
                        default=[1_000, 100_000], help="entity rows per call (comma list)")
    parser.add_argument("--stores", type=lambda s: s.split(","),
                        default=list(STORES), help=",".join(STORES))
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="endpoint latency per BatchGetItem")
    parser.add_argument("--unprocessed-rate", type=float, default=0.0,
                        help="share of keys the endpoint leaves unprocessed")
    parser.add_argument("--repeats", type=int, default=3,
                        help="calls per cell up to 10,000 rows (larger cells run once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path,
                        default=Path("bench-output/feast_store_bench.json"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.stores) - set(STORES))
    if unknown:
        parser.error(f"unknown store {', '.join(unknown)}; choose from {', '.join(STORES)}")
    os.environ.update(AWS_ENV)
    cells = run(args)
    print(f"get_online_features, {len(FEATURES)} features, endpoint latency "
          f"{args.latency_ms:g} ms, unprocessed {args.unprocessed_rate:.0%} of keys, "
          f"known entities {KNOWN_SHARE:.0%}")
    print(table(cells))
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "python": platform.python_version(), "machine": platform.machine(),
        "cells": [asdict(cell) for cell in cells]}, indent=2))
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
