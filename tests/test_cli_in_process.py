"""The command line in this process (click's runner) against a real HTTP endpoint and the
real redis-server: exit codes, messages and what each command prints. The same commands as
real processes are in test_cli_pull.py and test_cli_pull_flags.py; these are here because
scripts/mutation.sh traces only this process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from featurepull.bench.endpoint import EndpointProcess
from featurepull.cli import main
from featurepull.local import RedisService
from tests.faultproxy import FaultPlan, FaultProxy

IDS = [5, 1, 1_500, 5, 0]


@pytest.fixture(scope="module")
def endpoint(cli_endpoint: EndpointProcess) -> EndpointProcess:
    return cli_endpoint


@pytest.fixture
def throttling(cli_endpoint: EndpointProcess) -> Iterator[FaultProxy]:
    with FaultProxy(cli_endpoint.url, FaultPlan(throttle_rate=1.0)) as proxy:
        yield proxy


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def pull_args(endpoint: EndpointProcess | FaultProxy, tmp_path: Path, *extra: str) -> list[str]:
    entities = tmp_path / "ids.csv"
    entities.write_text("driver_id\n" + "\n".join(map(str, IDS)) + "\n")
    return ["pull", "--project", "cli", "--table", "drivers", "--features", "conv_rate,city",
            "--entities", str(entities), "--endpoint-url", endpoint.url, "--region",
            "us-east-1", *extra]


def test_pull_json_and_text_summaries(endpoint: EndpointProcess, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    result = invoke(*pull_args(endpoint, tmp_path, "--output", str(out), "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["output"] == str(out) and summary["rows_written"] == len(IDS)
    assert (summary["found"], summary["missing"], summary["requests"]) == (4, 1, 1)
    assert pq.read_table(out).column("driver_id").to_pylist() == IDS
    text = invoke(*pull_args(endpoint, tmp_path, "--output", str(out), "--overwrite"))
    assert text.exit_code == 0
    assert text.stdout.splitlines()[0] == f"featurepull: wrote {len(IDS)} rows to {out}"
    assert "rows=5 " in text.stdout.splitlines()[1]


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--join-key-types", "driver_id"], 2, "Error: Invalid value for --join-key-types: "
                                           "'driver_id' is not NAME=TYPE (e.g. driver_id=int64)"),
    (["--join-key-types", "=int64"], 2, "'=int64' is not NAME=TYPE"),
    (["--join-key-types", "driver_id="], 2, "'driver_id=' is not NAME=TYPE"),
    (["--join-key-types", "driver_id=int64=x"], 2, "join key 'driver_id' has type 'int64=x'"),
    (["--with-features"], 2, "--with-features keeps the features beside a scorer's scores; "
                             "add --scorer NAME"),
    (["--batch-size", "0"], 2, "featurepull: error: "),
    (["--table", "nope"], 2, "featurepull: error: table cli.nope"),
])
def test_pull_refuses_bad_input(endpoint: EndpointProcess, tmp_path: Path, extra: list[str],
                                code: int, message: str) -> None:
    out = tmp_path / "out.parquet"
    result = invoke(*pull_args(endpoint, tmp_path, "--output", str(out)), *extra)
    assert result.exit_code == code
    assert message in result.stderr
    assert not out.exists()


def test_a_pull_that_found_nothing_warns_on_stderr(endpoint: EndpointProcess,
                                                   tmp_path: Path) -> None:
    entities = tmp_path / "absent.csv"
    entities.write_text("driver_id\n5000\n5001\n")
    out = tmp_path / "out.parquet"
    args = pull_args(endpoint, tmp_path, "--output", str(out))
    args[args.index("--entities") + 1] = str(entities)
    result = invoke(*args)
    assert result.exit_code == 0
    assert result.stderr.startswith("featurepull: warning: 0 of 2 entities were found in "
                                    "table cli.drivers; ")
    assert result.stdout.startswith(f"featurepull: wrote 2 rows to {out}\n")


def test_a_failed_read_exits_1(throttling: FaultProxy, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    result = invoke(*pull_args(throttling, tmp_path, "--output", str(out),
                               "--retry-deadline", "0.2", "--max-read-workers", "1"))
    assert result.exit_code == 1
    assert result.stderr.startswith("featurepull: failed: 4 of 4 keys of table cli.drivers")
    assert not out.exists()


def test_an_unreachable_endpoint_exits_1_naming_what_to_check(tmp_path: Path) -> None:
    entities = tmp_path / "ids.csv"
    entities.write_text("driver_id\n1\n")
    result = invoke("pull", "--project", "cli", "--table", "drivers", "--features", "a",
                    "--entities", str(entities), "--output", str(tmp_path / "o.csv"),
                    "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1")
    assert result.exit_code in (1, 2)
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["cancel"], ["cleanup"],
                                     ["fetch", "--output", "x.parquet"]])
def test_job_commands_name_an_unknown_job(redis_server: RedisService, command: list[str]) -> None:
    result = invoke(command[0], "0123456789abcdef", *command[1:], "--redis-url",
                    redis_server.url)
    assert result.exit_code == 2
    assert result.stderr.startswith("featurepull: error: ")
    assert "0123456789abcdef" in result.stderr


def test_flower_defaults_leave_given_options_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from featurepull.cli import _flower_defaults

    monkeypatch.delenv("FLOWER_ADDRESS", raising=False)
    monkeypatch.delenv("FLOWER_TASKS_COLUMNS", raising=False)
    assert _flower_defaults([]) == [
        "--address=127.0.0.1",
        "--tasks_columns=name,state,args,result,received,runtime,worker,uuid"]
    assert _flower_defaults(["--address=0.0.0.0", "--port=1"]) == [
        "--tasks_columns=name,state,args,result,received,runtime,worker,uuid"]
    monkeypatch.setenv("FLOWER_TASKS_COLUMNS", "name")
    assert _flower_defaults(["--tasks-columns=x"]) == ["--address=127.0.0.1"]
