"""What a finisher that was killed mid-write left beside a local output, and who may remove it
(featurepull.tasks.output), on real files and real processes. The same through workers (a
finisher SIGKILLed while writing) is in test_pipeline.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from featurepull.tasks.output import process_exists, remove_dead_finishers_file


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def leftovers(directory: Path, pids: list[int]) -> list[Path]:
    """An output and, beside it, a temporary file of each process in `pids`."""
    output = directory / "out.parquet"
    output.write_bytes(b"published")
    files = [directory / f".out.parquet.tmp-{pid}-0a1b2c3d" for pid in pids]
    for file in files:
        file.write_bytes(b"half written")
    return files


def test_the_files_of_a_dead_finisher_on_this_host_are_removed(tmp_path: Path) -> None:
    dead, other = dead_pid(), dead_pid()
    mine, theirs = leftovers(tmp_path, [dead, other])
    extra = tmp_path / f".out.parquet.tmp-{dead}-ffffffff"
    extra.write_bytes(b"")
    finisher = f"{socket.gethostname()}:{dead}"
    with structlog.testing.capture_logs() as logs:
        remove_dead_finishers_file(str(tmp_path / "out.parquet"), finisher)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [theirs.name, "out.parquet"])
    assert not mine.exists() and not extra.exists()
    assert sorted(logs, key=lambda entry: entry["path"]) == [
        {"event": "stale_output_removed", "log_level": "warning", "path": str(path),
         "finisher": finisher} for path in sorted([mine, extra])]


@pytest.mark.parametrize("finisher", [
    None,                       # no earlier finisher
    "another-host:{dead}",      # its files are on another machine
    "{host}:{alive}",           # still running
    "{host}:not-a-pid",
])
def test_files_that_are_not_a_dead_finishers_stay(tmp_path: Path, finisher: str | None) -> None:
    dead = dead_pid()
    files = leftovers(tmp_path, [dead])
    named = finisher and finisher.format(dead=dead, host=socket.gethostname(),
                                         alive=os.getpid())
    remove_dead_finishers_file(str(tmp_path / "out.parquet"), named)
    assert all(file.exists() for file in files)


def test_an_s3_output_touches_no_local_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An S3 output is staged in an anonymous file: nothing named after it is ours."""
    monkeypatch.chdir(tmp_path)
    dead = dead_pid()
    local = tmp_path / "s3:" / "bucket"
    local.mkdir(parents=True)
    files = leftovers(local, [dead])
    remove_dead_finishers_file("s3://bucket/out.parquet", f"{socket.gethostname()}:{dead}")
    assert all(file.exists() for file in files)


def test_process_exists() -> None:
    assert process_exists(os.getpid())
    assert not process_exists(dead_pid())
