"""Helpers shared by the hardening tests."""

from __future__ import annotations

import os
import re
import signal
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


def finisher_temporary(directory: Path, name: str, timeout: float) -> tuple[Path, int]:
    """The finisher's temporary output file once it appears, and the pid in its name — that
    process SIGSTOPped at once, so the caller's kill lands in the middle of the write."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.tmp-(\d+)-[0-9a-f]+$")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.scandir(directory):
            found = pattern.match(entry.name)
            if found:
                os.kill(int(found.group(1)), signal.SIGSTOP)
                return Path(entry.path), int(found.group(1))
        time.sleep(0.0005)
    raise AssertionError(f"no temporary {name} appeared in {timeout}s")
