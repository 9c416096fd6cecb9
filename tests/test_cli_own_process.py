"""What the console command does because its process is its own (``featurepull.cli.run``): a
pull that succeeded ends at once, without the interpreter's teardown, its lines flushed
first; every other command, and any failure, exits the ordinary way; a pull runs pyarrow
with pandas blocked. ``run`` ends its process, so each case runs in a forked child of this
one, which runs the same (possibly mutated) code. The mutation runs (scripts/mutation.sh)
pick a function's tests by what runs in this process during a test (not in its fixtures):
each test also runs ``run`` here first (``run_here``), with a command that exits the
ordinary way. ``python -m
featurepull`` itself is in test_cli_pull.py and test_imports.py."""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis

from featurepull import cli
from featurepull.bench.endpoint import EndpointProcess
from featurepull.dynamo import ReadResult
from featurepull.io import EntityTable
from featurepull.local import RedisService
from featurepull.tasks.store import ACTIVE_JOBS

IDS = [5, 1, 1_500]
RERAISED = 100  # a child's exit code is this plus the code of the SystemExit run() raised


def run_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run()`` in this process too, marking it the command's own (restored after); with
    an unknown option, which exits 2 the ordinary way whatever run() checks."""
    monkeypatch.setattr(cli, "_own_process", False)
    monkeypatch.setattr(sys, "argv", ["featurepull", "--no-such-option"])
    with pytest.raises(SystemExit) as exited:
        cli.run()
    assert exited.value.code == 2
    assert cli._own_process is True


def run_forked(argv: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """``featurepull ARGV`` through ``run()`` in a forked child: its exit code, stdout and
    stderr (files, so that what was not flushed is lost as it would be)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    pid = os.fork()
    if pid == 0:  # the child never returns to pytest
        code = 99
        try:
            sys.stdout, sys.stderr = open(out, "w"), open(err, "w")  # noqa: SIM115
            sys.argv = ["featurepull", *argv]
            cli.run()
        except SystemExit as exc:
            code = RERAISED + (exc.code if isinstance(exc.code, int) else 50)
        except BaseException:
            code = 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()


def pull_argv(endpoint: EndpointProcess, tmp_path: Path, *extra: str) -> list[str]:
    entities = tmp_path / "ids.csv"
    entities.write_text("driver_id\n" + "\n".join(map(str, IDS)) + "\n")
    return ["pull", "--project", "cli", "--table", "drivers", "--features", "conv_rate",
            "--entities", str(entities), "--endpoint-url", endpoint.url, "--region",
            "us-east-1", *extra]


def test_a_pull_that_succeeded_exits_at_once_with_its_lines_flushed(
        cli_endpoint: EndpointProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_here(monkeypatch)
    out = tmp_path / "out.parquet"
    code, stdout, stderr = run_forked(pull_argv(cli_endpoint, tmp_path, "--output", str(out)),
                                      tmp_path)
    assert (code, stderr) == (0, "")
    assert stdout.splitlines()[0] == f"featurepull: wrote {len(IDS)} rows to {out}"
    assert pq.read_table(out).column("driver_id").to_pylist() == IDS


@pytest.mark.parametrize(("argv", "code", "says"), [
    (["--version"], RERAISED + 0, "version"),
    (["pull", "--project", "cli"], RERAISED + 2, "Missing option"),
])
def test_other_commands_and_failures_exit_the_ordinary_way(
        tmp_path: Path, argv: list[str], code: int, says: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run_here(monkeypatch)
    exit_code, stdout, stderr = run_forked(argv, tmp_path)
    assert exit_code == code
    assert says in stdout + stderr


def test_a_failed_pull_exits_the_ordinary_way(cli_endpoint: EndpointProcess, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run_here(monkeypatch)
    out = tmp_path / "out.parquet"
    code, _, stderr = run_forked(pull_argv(cli_endpoint, tmp_path, "--output", str(out),
                                           "--table", "nope"), tmp_path)
    assert code == RERAISED + 2
    assert stderr.startswith("featurepull: error: table cli.nope")
    assert not out.exists()


@pytest.mark.parametrize("name", ["pandas", "pandas.core.frame", "numpy", "numpy.linalg",
                                  "cloudpickle"])
def test_what_a_pull_does_not_need_is_blocked_as_if_not_installed(name: str) -> None:
    with pytest.raises(ModuleNotFoundError) as blocked:
        cli._Blocked(cli._NOT_FOR_A_PULL).find_spec(name)
    assert blocked.value.name == name
    assert str(blocked.value) == (f"No module named {name!r} (featurepull pull runs pyarrow "
                                  "without it)")


@pytest.mark.parametrize("name", ["pandasql", "numpyro", "pyarrow.pandas_compat", "geopandas"])
def test_other_modules_are_not_blocked(name: str) -> None:
    assert cli._Blocked(cli._NOT_FOR_A_PULL).find_spec(name) is None


def test_a_lean_pull_blocks_only_what_is_not_yet_imported_and_restores_gc(
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = list(sys.meta_path)
    importlib.import_module("pandas")
    assert gc.isenabled()
    with cli._lean_pull():  # pandas already imported: left alone
        assert importlib.import_module("pandas") is sys.modules["pandas"]
        assert not gc.isenabled()
    assert gc.isenabled()
    monkeypatch.delitem(sys.modules, "pandas")  # as if not imported yet (restored after)
    with cli._lean_pull(), pytest.raises(ModuleNotFoundError,
                                         match="runs pyarrow without it"):
        importlib.import_module("pandas")
    assert sys.meta_path == before
    assert gc.isenabled()


def test_a_submit_that_succeeded_exits_at_once_with_its_lines_flushed(
        cli_endpoint: EndpointProcess, redis_server: RedisService, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Its messages are in Redis once submit() returns: nothing is left for a teardown.
    run_here(monkeypatch)
    queue = f"own-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FEATUREPULL_JOBS__QUEUE", queue)
    argv = pull_argv(cli_endpoint, tmp_path, "--redis-url", redis_server.url, "--json")
    code, stdout, stderr = run_forked(["submit", *argv[1:]], tmp_path)
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert (code, stderr) == (0, "")
        assert json.loads(stdout)["rows"] == len(IDS)
        assert client.llen(queue) == 1
    finally:
        client.delete(queue)
        if stdout:
            job_id = json.loads(stdout)["job_id"]
            for key in client.scan_iter(match=f"featurepull:job:{job_id}:*"):
                client.delete(key)
            client.zrem(ACTIVE_JOBS, job_id)  # the watchdog's list


@pytest.mark.parametrize("own_process", [True, False])
def test_only_a_pull_in_its_own_process_keeps_its_rows_until_the_end(
        cli_endpoint: EndpointProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        own_process: bool) -> None:
    # run() ends that process without freeing them; a pull inside another program (a
    # notebook, click's test runner) lets them go when it returns.
    kept: list[object] = []
    monkeypatch.setattr(cli, "_kept_until_exit", kept)
    monkeypatch.setattr(cli, "_own_process", own_process)
    out = tmp_path / "out.parquet"
    cli.main(pull_argv(cli_endpoint, tmp_path, "--output", str(out)), standalone_mode=False)
    assert pq.read_table(out).column("driver_id").to_pylist() == IDS
    results = [held for held in kept if isinstance(held, ReadResult)]
    entities = [held for held in kept if isinstance(held, EntityTable)]
    if not own_process:
        assert kept == []
        return
    assert [len(result.rows) for result in results] == [len(IDS)]
    assert [entity.columns["driver_id"] for entity in entities] == [IDS]
