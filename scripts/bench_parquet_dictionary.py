#!/usr/bin/env python
"""What Parquet's dictionary encoding costs and saves on an output's columns, by writer setting:

    .venv/bin/python scripts/bench_parquet_dictionary.py --rounds 5

A key column of distinct int64 ids (a shard of 100,000 and a pull of 1M), a key of 1,000
values repeated, and text columns of 5,000 and 20,000 distinct values, each written as the
output's writer writes it (`pq.ParquetWriter`, row groups of 65,536 rows) with pyarrow's
defaults (a column's dictionary falls back to plain values past 1 MiB a row group), a
smaller `dictionary_pagesize_limit`, and the key column without a dictionary. A key table
has the bench's other columns beside it (90% null). Per cell: CPU ms to encode (best of
``--rounds``) and the file's bytes; every file is read back equal to its table. Prints a
table and saves JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 65_536  # featurepull.io._row_view.CHUNK_ROWS


def _key_table(keys: np.ndarray, rng: np.random.Generator) -> pa.Table:
    rows = len(keys)
    missing = rng.random(rows) >= 0.1

    def found(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
        return pa.array(values, arrow_type, mask=missing)

    stamps = pa.timestamp("us", "UTC")
    return pa.table({
        "driver_id": pa.array(keys, pa.int64()),
        "event_timestamp": found(rng.integers(1.6e15, 1.7e15, rows), stamps),
        "conv_rate": found(rng.random(rows), pa.float64()),
        "acc_rate": found(rng.random(rows), pa.float64()),
        "avg_daily_trips": found(rng.integers(0, 1000, rows), pa.int64()),
        "last_trip_at": found(rng.integers(1.6e15, 1.7e15, rows), stamps)})


def _text_table(rows: int, distinct: int, rng: np.random.Generator) -> pa.Table:
    words = np.array([f"name-{i:07d}-{'x' * (i % 7)}" for i in range(distinct)], dtype=object)
    return pa.table({"city": pa.array(words[rng.integers(0, distinct, rows)])})


def _encode(table: pa.Table, rounds: int, **options: Any) -> tuple[float, int]:
    best = float("inf")
    data = b""
    for _ in range(rounds):
        sink = io.BytesIO()
        began = time.process_time()
        writer = pq.ParquetWriter(sink, table.schema, **options)
        for start in range(0, table.num_rows, ROW_GROUP):
            writer.write_table(table.slice(start, ROW_GROUP), row_group_size=ROW_GROUP)
        writer.close()
        best = min(best, time.process_time() - began)
        data = sink.getvalue()
    if not pq.read_table(io.BytesIO(data)).equals(table):
        raise AssertionError("read back unequal")
    return best * 1000, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json-out", default="bench-output/parquet-dictionary.json")
    args = parser.parse_args()
    rng = np.random.default_rng(19)
    first = 10 ** 9
    tables: dict[str, Callable[[], pa.Table]] = {
        "100,000 distinct ids": lambda: _key_table(
            rng.permutation(np.arange(first, first + 100_000)), rng),
        "1M distinct ids": lambda: _key_table(
            rng.permutation(np.arange(first, first + 1_000_000)), rng),
        "1M ids of 1,000 keys": lambda: _key_table(
            rng.integers(first, first + 1000, 1_000_000), rng),
        "1M texts of 5,000": lambda: _text_table(1_000_000, 5000, rng),
        "1M texts of 20,000": lambda: _text_table(1_000_000, 20_000, rng),
    }
    settings: dict[str, Callable[[pa.Table], dict[str, Any]]] = {
        "default": lambda t: {},
        "dictionary ≤ 64 KiB": lambda t: {"dictionary_pagesize_limit": 64 * 1024},
        "dictionary ≤ 256 KiB": lambda t: {"dictionary_pagesize_limit": 256 * 1024},
        "key plain": lambda t: {"use_dictionary": [n for n in t.column_names
                                                   if n != "driver_id"]},
    }
    results = []
    for name, make in tables.items():
        table = make()
        for setting, options in settings.items():
            if setting == "key plain" and "driver_id" not in table.column_names:
                continue
            ms, size = _encode(table, args.rounds, **options(table))
            results.append({"table": name, "setting": setting, "encode_ms": round(ms, 1),
                            "bytes": size})
            print(f"{name:22} | {setting:20} | {ms:7.1f} ms | {size:>11,} bytes", flush=True)
    with open(args.json_out, "w") as out:
        json.dump({"rounds": args.rounds, "pyarrow": pa.__version__, "results": results},
                  out, indent=1)
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
