"""featurepull's own processes run without transparent huge pages (featurepull._huge_pages):
a worker's pool processes started either way (``celery -A featurepull.worker worker`` and
``featurepull worker``), and the command's own process once pyarrow has loaded; a value of
``MIMALLOC_ALLOW_THP`` the user set is kept. What the kernel reports for each process
(``THP_enabled`` in /proc/PID/status, 0 once mimalloc disabled them) is the check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featurepull.bench.endpoint import EndpointProcess
from featurepull.local import RedisService
from tests.tasks.conftest import fleet


def _thp_enabled(pid: int | str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("THP_enabled:"):
            return line.split()[1]
    pytest.skip("this kernel does not report THP_enabled")


@pytest.mark.parametrize("cli", [False, True], ids=["celery-A", "featurepull-worker"])
def test_a_workers_pool_processes_run_without_huge_pages(
        redis_server: RedisService, fast_dynamo: EndpointProcess, cli: bool) -> None:
    with fleet(redis_server, fast_dynamo.url) as workers:
        worker = workers.start_worker(concurrency=2, cli=cli)
        children = workers.children(worker)
        assert len(children) == 2
        assert [_thp_enabled(pid) for pid in (worker.pid, *children)] == ["0", "0", "0"]


def test_a_value_the_user_set_is_kept(redis_server: RedisService,
                                      fast_dynamo: EndpointProcess) -> None:
    with fleet(redis_server, fast_dynamo.url) as workers:
        workers.env["MIMALLOC_ALLOW_THP"] = "1"
        worker = workers.start_worker(concurrency=1, cli=True)
        assert [_thp_enabled(pid) for pid in (worker.pid, *workers.children(worker))] == [
            "1", "1"]


# The command in this interpreter, reporting its own THP_enabled as it exits (a refused pull
# exits the ordinary way, after pyarrow loaded to read its entity file).
_COMMAND = ("import atexit, sys; from featurepull.cli import run; "
            "atexit.register(lambda: print('pyarrow' in sys.modules, [line.split()[1] for line "
            "in open('/proc/self/status') if line.startswith('THP_enabled:')], "
            "file=sys.stderr)); sys.argv = ['featurepull', *sys.argv[1:]]; run()")


@pytest.mark.parametrize(("env", "expected"), [({}, "0"), ({"MIMALLOC_ALLOW_THP": "1"}, "1")])
def test_a_pull_runs_without_huge_pages(fast_dynamo: EndpointProcess, tmp_path: Path,
                                        env: dict[str, str], expected: str) -> None:
    _thp_enabled("self")  # skips where the kernel does not say
    entities = tmp_path / "ids.csv"
    entities.write_text("driver_id\n1\n\n2\n")  # a blank line: refused once read
    clean = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ALLOW_THP"}
    proc = subprocess.run(
        [sys.executable, "-c", _COMMAND, "pull", "--project", "demo", "--table", "driver_stats",
         "--features", "conv_rate", "--entities", str(entities), "--output",
         str(tmp_path / "out.parquet"), "--endpoint-url", fast_dynamo.url, "--region",
         "us-east-1"], capture_output=True, text=True, timeout=120, env={**clean, **env},
        check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == f"True ['{expected}']"
