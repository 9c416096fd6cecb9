"""`featurepull demo` as a newcomer runs it: a real process that starts redis-server, a
DynamoDB endpoint and 2 worker processes, and leaves none of them behind — also on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import wait_until
from tests.test_readme import quick_start_commands

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

ROOT = Path(__file__).resolve().parents[1]


def marked_processes(marker: str) -> list[int]:
    """Processes whose environment carries the marker (inherited from the demo)."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get("DEMO_TEST_MARKER") == marker:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...)."""
    try:
        return [child.pid for child in psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


_STARTED: list[subprocess.Popen[str]] = []


def default_ctrl_c() -> None:
    """Run in the demo's process before it starts: Ctrl-C's default action. A process
    started with SIGINT ignored (pytest as a background job of a non-interactive shell)
    passes that on, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def stop_demos_left_running() -> Iterator[None]:
    """A failed assertion must not leave a demo (and its services) running."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)


def start_demo(tmp_path: Path, *args: str,
               env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    marker = uuid.uuid4().hex
    env = {**os.environ, **(env or {}), "DEMO_TEST_MARKER": marker}
    proc = subprocess.Popen([sys.executable, "-m", "featurepull", "demo", "--out-dir",
                             str(tmp_path / "out"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=default_ctrl_c)
    _STARTED.append(proc)
    return proc, marker


def read_until(proc: subprocess.Popen[str], phrase: str, timeout: float = 120) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if phrase in line:
            return "".join(seen)
    raise AssertionError(f"{phrase!r} never appeared:\n{''.join(seen)}")


def gone(marker: str, timeout: float = 30) -> bool:
    """Wait until no process carries the marker; fail if one still does after ``timeout``."""
    return bool(wait_until(lambda: not marked_processes(marker), "end of the demo's processes",
                           timeout, every_s=0.2))  # a look at every process's environment


def _start_time(pid: int) -> float | None:
    """When ``pid`` started, or None once it has exited: gone, or a zombie (killed, its
    exit status not collected yet)."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.NoSuchProcess:
        return None


def still_running(started: dict[int, float | None], timeout: float = 30) -> list[int]:
    """Which of the processes (pid: start time) still run, waiting up to ``timeout`` for
    them to end: a SIGKILL is delivered at once, but the process ends when it is scheduled.
    A pid that now belongs to a process started later is not one of them."""
    def left() -> list[int]:
        return [pid for pid, at in started.items() if at is not None and _start_time(pid) == at]

    with contextlib.suppress(AssertionError):  # the caller names the pids left
        wait_until(lambda: not left(), "end of the demo's processes", timeout, every_s=0.2)
    return left()


def test_the_readme_demo_command_writes_every_row_in_order_and_stops_everything(
        tmp_path: Path) -> None:
    # Exactly the README's first quick-start command (it creates or updates .venv first).
    commands = quick_start_commands()
    assert len(commands) == 2 and commands[1] == "bash scripts/test.sh"
    marker = uuid.uuid4().hex
    proc = subprocess.Popen([*shlex.split(commands[0]), "--drivers", "20000", "--out-dir",
                             str(tmp_path / "out")], env={**os.environ, "DEMO_TEST_MARKER": marker},
                            cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=default_ctrl_c)
    _STARTED.append(proc)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "nothing is left running" in output
    entities = pq.read_table(tmp_path / "out" / "entities.parquet")
    features = pq.read_table(tmp_path / "out" / "features.parquet")
    assert features.num_rows == entities.num_rows == 20000
    assert features.column("driver_id").equals(entities.column("driver_id"))
    unknown = sum(d >= 10_000_000 for d in entities.column("driver_id").to_pylist())
    assert features.column("event_timestamp").null_count == unknown
    # The example scorer ran in the workers: a risk in (0, 1) beside the features, null for
    # the unknown drivers.
    assert features.column_names[-1] == "risk"
    assert features.column("risk").null_count == unknown
    assert all(0 < risk < 1 for risk in features.column("risk").drop_null().to_pylist())
    assert gone(marker)


def wait_until_halfway(redis_url: str, timeout: float = 120) -> tuple[int, int]:
    """Until the demo's job has some shards done and some not; (done, shards) then."""
    from featurepull.tasks.store import JobStore, connect

    store = JobStore(connect(redis_url), ttl_s=60)

    def halfway() -> tuple[int, int] | None:
        for key in store.redis.scan_iter("featurepull:job:*:meta"):
            job_id = key.decode().split(":")[2]
            done, shards = store.done_count(job_id), store.meta(job_id).shards
            if 0 < done < shards:
                return done, shards
        return None

    found: tuple[int, int] = wait_until(halfway, "demo job halfway", timeout)
    return found


def test_ctrl_c_halfway_stops_everything_with_a_clear_message(tmp_path: Path) -> None:
    # By key: auto would scan this table, and a scan job's shards start only once the whole
    # table is scanned — this test stops the demo halfway through its shards.
    proc, marker = start_demo(tmp_path, "--drivers", "400000",
                              env={"FEATUREPULL_DYNAMODB__READ_MODE": "batch-get"})
    started = read_until(proc, "submitting a job")
    redis_url = re.search(r"redis-server on (redis://\S+)", started)
    assert redis_url is not None, started
    done, shards = wait_until_halfway(redis_url.group(1))
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "nothing is left running" in output
    assert "Traceback" not in output
    assert gone(marker)
    assert 0 < done < shards
    assert not (tmp_path / "out" / "features.parquet").exists()  # stopped before the end


def test_keep_running_explains_how_to_submit_more_then_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc, marker = start_demo(tmp_path, "--drivers", "5000", "--keep-running")
    shown = read_until(proc, "Press Ctrl-C")
    assert "featurepull submit --table driver_hourly_stats" in shown
    assert "export FEATUREPULL_SCORERS='[{\"name\": \"driver_risk\"" in shown
    assert "FEATUREPULL_REDIS_URL=redis://127.0.0.1:" in shown
    # By parentage, not only by the marker: Celery rewrites its processes' title over their
    # environment when setproctitle is installed (mutmut brings it), hiding the marker.
    started = {pid: _start_time(pid) for pid in descendants(proc.pid)}
    assert len(started) >= 4  # redis, endpoint, worker and its pool
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert gone(marker)
    assert still_running(started) == []
