"""Scorers the tests register (by ``tests.tasks.scorers_for_tests:NAME`` paths): one that
works, and one for each way a scorer can go wrong."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def linear(rows: pa.Table) -> pa.Table:
    """A weighted sum of two features (null for missing entities), and the found flag."""
    conv = pc.cast(rows.column("conv_rate"), pa.float64())
    score = pc.add(pc.multiply(conv, 3.0), rows.column("acc_rate"))
    return pa.table({"score": score, "seen": rows.column("_found").to_pylist()})


def trips_bucket(rows: pa.Table) -> dict[str, Any]:
    """A dict of a plain list: trips in hundreds, None when unknown."""
    trips = rows.column("avg_daily_trips").to_pylist()
    return {"trips_bucket": [None if t is None else t // 100 for t in trips]}


def boom(rows: pa.Table) -> dict[str, Any]:
    return {"score": [1 / 0 for _ in range(rows.num_rows)]}


def one_short(rows: pa.Table) -> dict[str, Any]:
    return {"score": [0.5] * (rows.num_rows - 1)}


def scalar(rows: pa.Table) -> float:
    return 0.5


def records(rows: pa.Table) -> list[dict[str, Any]]:
    return [{"score": 0.5} for _ in range(rows.num_rows)]


def clash(rows: pa.Table) -> dict[str, Any]:
    return {"driver_id": [0] * rows.num_rows}
