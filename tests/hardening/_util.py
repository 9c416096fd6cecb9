"""Helpers shared by the hardening tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.bench.endpoint import FEATURES
from featurepull.client import Job, submit
from tests.tasks.conftest import Fleet


def write_entities(path: Path, ids: list[int]) -> Path:
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


def run_job(workers: Fleet, entities: Path, output: Path | None, **kwargs: Any) -> Job:
    kwargs.setdefault("settings", workers.settings())
    return submit("driver_stats", list(FEATURES), str(entities),
                  str(output) if output else None, **kwargs)


def wait_for_log(workers: Fleet, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = workers.log_text()
        if text in logs:
            return logs
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the worker logs:\n{workers.log_text()[-3000:]}")
