"""``featurepull demo``: the whole read path on embedded services, in one command.

Starts a local DynamoDB endpoint (moto's server mode), seeds a Feast-layout feature view with
synthetic drivers, writes an entity file (shuffled, with absent ids and duplicates), pulls the
features in input order, prints a summary and the first rows, and stops the endpoint.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.config import Settings, load_settings
from featurepull.dynamo import EntityKeyEncoder, build_client
from featurepull.dynamo.feast_values import ValueProto
from featurepull.pull import PullOutcome, PullRequest, pull

PROJECT = "demo"
VIEW = "driver_hourly_stats"
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "city", "is_active", "last_trip_at",
            "embedding"]
CITIES = ["Amsterdam", "Berlin", "Lisbon", "Montréal", "Nairobi", "São Paulo", "Tokyo"]
_WRITE_CHUNK = 25  # BatchWriteItem's per-request limit


def driver_values(driver: int, rng: random.Random) -> dict[str, Any]:
    """Synthetic features of realistic Feast types for one driver."""
    value: dict[str, Any] = {}
    value["conv_rate"] = ValueProto(float_val=rng.random())
    value["acc_rate"] = ValueProto(double_val=rng.random())
    value["avg_daily_trips"] = ValueProto(int64_val=rng.randrange(0, 400))
    value["city"] = ValueProto(string_val=CITIES[driver % len(CITIES)])
    value["is_active"] = ValueProto(bool_val=rng.random() > 0.2)
    value["last_trip_at"] = ValueProto(unix_timestamp_val=1_780_000_000 + rng.randrange(86400))
    embedding = ValueProto()
    embedding.float_list_val.val.extend(round(rng.uniform(-1, 1), 4) for _ in range(8))
    value["embedding"] = embedding
    return value


def _items(drivers: range, seed: int) -> Iterator[dict[str, Any]]:
    encoder = EntityKeyEncoder({"driver_id": "int64"})
    rng = random.Random(seed)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for driver in drivers:
        yield {
            "entity_id": {"S": encoder.entity_id([driver])},
            "event_ts": {"S": str(base + timedelta(seconds=rng.randrange(86400)))},
            "values": {"M": {name: {"B": proto.SerializeToString()}
                             for name, proto in driver_values(driver, rng).items()}},
        }


def seed_table(settings: Settings, drivers: int, progress: Callable[[int], None]) -> str:
    """Create the demo feature view as Feast would and write ``drivers`` items to it."""
    client = build_client(settings.dynamodb)
    table = settings.dynamodb.table_name(PROJECT, VIEW)
    client.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "entity_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "entity_id", "AttributeType": "S"}],
    )

    def write(start: int) -> None:
        chunk = range(start, min(drivers, start + 1000))
        batch: list[dict[str, Any]] = []
        for item in _items(chunk, seed=start):
            batch.append({"PutRequest": {"Item": item}})
            if len(batch) == _WRITE_CHUNK:
                _write_batch(client, table, batch)
                batch = []
        if batch:
            _write_batch(client, table, batch)
        progress(len(chunk))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(0, drivers, 1000)))
    return table


def _write_batch(client: Any, table: str, batch: list[dict[str, Any]]) -> None:
    pending = batch
    while pending:
        response = client.batch_write_item(RequestItems={table: pending})
        pending = response.get("UnprocessedItems", {}).get(table, [])


def write_entities(path: Path, drivers: int, seed: int = 1) -> int:
    """Entity ids for the demo: every driver, 10% unknown ids, 5% repeats, shuffled."""
    rng = random.Random(seed)
    ids = list(range(drivers)) + [10_000_000 + i for i in range(drivers // 10)]
    ids += rng.choices(ids, k=drivers // 20)
    rng.shuffle(ids)
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return len(ids)


def run_demo(endpoint_url: str, out_dir: Path, drivers: int,
             progress_factory: Callable[[str, int], Any]) -> PullOutcome:
    """Seed, pull, and return the outcome; the caller owns the endpoint's lifetime."""
    settings = load_settings(overrides={
        "project": PROJECT,
        "dynamodb": {"endpoint_url": endpoint_url, "region": "us-east-1"},
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    with progress_factory("seeding DynamoDB", drivers) as bar:
        seed_table(settings, drivers, bar.update)
    entities = out_dir / "entities.parquet"
    total = write_entities(entities, drivers)
    request = PullRequest(table=VIEW, features=FEATURES, join_keys=["driver_id"])
    with progress_factory("pulling features", total) as bar:

        def set_total(unique_keys: int) -> None:
            bar.total = unique_keys

        return pull(request, str(entities), str(out_dir / "features.parquet"), settings,
                    overwrite=True, progress=bar.update, on_keys=set_total)


def preview(path: str, rows: int = 5) -> str:
    """The first rows of the output as an aligned text table."""
    table = pq.read_table(path).slice(0, rows).to_pylist()
    columns = list(table[0]) if table else []
    cells = [[_short(row[c]) for c in columns] for row in table]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value[:2]) + (", …]" if len(value) > 2 else "]")
    return "null" if value is None else str(value)
