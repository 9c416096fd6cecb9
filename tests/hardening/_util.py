"""Helpers shared by the hardening tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable
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


def freeze_finisher_mid_write(start: Callable[[], Job], directory: Path, name: str,
                              timeout: float, tries: int = 3) -> tuple[Job, Path, int]:
    """Start a job (``start``) and SIGSTOP the process writing its output ``directory/name``
    in the middle of the write; returns the job, the temporary file and the frozen pid, so
    the caller's kill lands mid-write.

    Frozen the moment its temporary file appears, then checked: if the write ended between
    the look and the stop (no temporary file any more), the writer is let go, the job ends,
    its output is removed and another job is started."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.tmp-(\d+)-[0-9a-f]+$")
    for _ in range(tries):
        job = start()
        temporary, pid = _temporary(directory, pattern, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            if temporary.exists():
                return job, temporary, pid
            os.kill(pid, signal.SIGCONT)
        job.wait(timeout=timeout, progress=False)
        (directory / name).unlink()
    raise AssertionError(f"no writer of {name} was caught mid-write in {tries} jobs")


def _temporary(directory: Path, pattern: re.Pattern[str], timeout: float) -> tuple[Path, int]:
    """A temporary output file once it appears, and the writer's pid in its name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.scandir(directory):
            found = pattern.match(entry.name)
            if found:
                return Path(entry.path), int(found.group(1))
        time.sleep(0.0005)
    raise AssertionError(f"no temporary {pattern.pattern} appeared in {timeout}s")
