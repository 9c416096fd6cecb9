"""The command line in this process (click's runner) against a real HTTP endpoint and the
real redis-server: exit codes, messages and what each command prints. The same commands as
real processes are in test_cli_pull.py and test_cli_pull_flags.py; these are here because
scripts/mutation.sh traces only this process."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import sys
import termios
import threading
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from featurepull.bench.endpoint import EndpointProcess
from featurepull.cli import main
from featurepull.io._entity_table import ArrowBackedColumns
from featurepull.local import RedisService
from tests.conftest import REGION
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
    [plan] = summary["read_plans"]
    assert (plan["table"], plan["read_mode"]) == ("cli.drivers", "batch-get")
    assert "warnings" not in summary  # every entity found but one: none
    text = invoke(*pull_args(endpoint, tmp_path, "--output", str(out), "--overwrite"))
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0] == f"featurepull: wrote {len(IDS)} rows to {out}"
    assert "rows=5 " in lines[1]
    assert lines[2] == f"featurepull: cli.drivers: {plan['reason']}"


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
    (["--table", ""], 2, "featurepull: error: name a table and its features"),
    (["--full-feature-names"], 2, "full_feature_names and respect_ttl apply to Feast references"),
    (["--features", "conv_rate,nosuch"], 2, "pass --allow-missing-features to read it as null"),
])
def test_pull_refuses_bad_input(endpoint: EndpointProcess, tmp_path: Path, extra: list[str],
                                code: int, message: str) -> None:
    out = tmp_path / "out.parquet"
    result = invoke(*pull_args(endpoint, tmp_path, "--output", str(out)), *extra)
    assert result.exit_code == code
    assert message in result.stderr
    assert not out.exists()


def test_request_flags_reach_the_pull(endpoint: EndpointProcess, tmp_path: Path) -> None:
    """--allow-missing-features and --join-keys, as the pull reads them (each is refused or
    finds nothing without it, above and here)."""
    out = tmp_path / "out.parquet"
    sparse = invoke(*pull_args(endpoint, tmp_path, "--output", str(out)), "--features",
                    "conv_rate,nosuch", "--allow-missing-features")
    assert sparse.exit_code == 0, sparse.stderr
    assert pq.read_table(out).column("nosuch").null_count == len(IDS)
    entities = tmp_path / "two.csv"  # every column is a join key by default
    entities.write_text("driver_id,batch\n" + "".join(f"{d},{d % 7}\n" for d in IDS))
    args = pull_args(endpoint, tmp_path, "--output", str(out), "--overwrite", "--json")
    args[args.index("--entities") + 1] = str(entities)
    assert json.loads(invoke(*args).stdout)["found"] == 0
    assert json.loads(invoke(*args, "--join-keys", "driver_id").stdout)["found"] == 4


@pytest.mark.parametrize(("flag", "stamp"), [
    (["--event-ts-attribute", "updated_at"],
     lambda i: datetime.fromtimestamp(1_780_000_000 + i, UTC)),
    (["--event-ts-attribute", ""], lambda i: None),
])
def test_plain_layout_and_event_ts_attribute(endpoint_url: str,
                                             plain_table: str,
                                             tmp_path: Path, flag: list[str],
                                             stamp: Any) -> None:
    """As test_cli_pull_flags.py's, in this process: --layout and --event-ts-attribute."""
    entities = tmp_path / "users.jsonl"
    entities.write_text("".join(json.dumps({"user": u}) + "\n" for u in ["u2", "u0"]))
    out = tmp_path / "out.parquet"
    result = invoke("pull", "--layout", "plain", "--table", plain_table, "--features",
                    "plan", "--entities", str(entities), "--output", str(out),
                    "--endpoint-url", endpoint_url, "--region", REGION, *flag)
    assert result.exit_code == 0, result.stderr
    assert pq.read_table(out).to_pylist() == [
        {"user": "u2", "event_timestamp": stamp(2), "plan": "p2"},
        {"user": "u0", "event_timestamp": stamp(0), "plan": "p0"}]


def test_a_csv_pulls_the_rows_its_ids_read_as_python_values_pull(endpoint: EndpointProcess,
                                                                  tmp_path: Path) -> None:
    """A CSV file's Feast keys are built from its columns as Arrow arrays
    (`EntityTable.arrays`), a JSONL file's from Python values: the same ids (repeats, an
    unknown one) give the same rows, in the same order."""
    ids = [*IDS, 1_500, 7_777_777, 1, *range(2, 40, 3)]
    outputs = []
    for name, text in (("many.csv", "driver_id\n" + "".join(f"{i}\n" for i in ids)),
                       ("many.jsonl", "".join(json.dumps({"driver_id": i}) + "\n" for i in ids))):
        entities, out = tmp_path / name, tmp_path / f"{name}.parquet"
        entities.write_text(text)
        args = pull_args(endpoint, tmp_path, "--output", str(out))
        args[args.index("--entities") + 1] = str(entities)
        assert invoke(*args).exit_code == 0
        outputs.append(pq.read_table(out))
    assert outputs[0].equals(outputs[1])
    assert outputs[0].column("driver_id").to_pylist() == ids
    assert 0 < outputs[0].column("city").null_count < len(ids)


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_a_feast_pull_of_a_csv_never_makes_its_ids_python_values(
        endpoint: EndpointProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        ext: str) -> None:
    """The keys and the output's key column are taken from the CSV reader's Arrow arrays:
    no column of `ArrowBackedColumns` is asked for its Python values (a million ints, ~50 ms
    of CPU at 1M ids)."""
    asked: list[str] = []
    made = ArrowBackedColumns.__getitem__

    def asking(columns: ArrowBackedColumns, name: str) -> list[Any]:
        asked.append(name)
        return made(columns, name)

    monkeypatch.setattr(ArrowBackedColumns, "__getitem__", asking)
    out = tmp_path / f"out.{ext}"
    assert invoke(*pull_args(endpoint, tmp_path, "--output", str(out))).exit_code == 0
    assert asked == []
    written = (pq.read_table(out).column("driver_id").to_pylist() if ext == "parquet" else
               [int(line.split(",")[0]) if ext == "csv" else json.loads(line)["driver_id"]
                for line in out.read_text().splitlines()[ext == "csv":]])
    assert written == IDS  # from the arrays


def test_a_plain_pull_describes_its_table_once(endpoint_url: str, plain_table: str,
                                              tmp_path: Path) -> None:
    """The plain layout is built from the table's DescribeTable, and the check before the
    read checks that same answer: one DescribeTable on the wire, not two."""
    entities = tmp_path / "users.csv"
    entities.write_text("user\nu1\nu9\n")
    out = tmp_path / "out.parquet"
    with FaultProxy(endpoint_url) as proxy:
        result = invoke("pull", "--layout", "plain", "--table", plain_table, "--features",
                        "plan", "--entities", str(entities), "--output", str(out),
                        "--endpoint-url", proxy.url, "--region", REGION)
        assert result.exit_code == 0, result.stderr
        assert proxy.counts["describe_requests"] == 1
    assert pq.read_table(out).column("plan").to_pylist() == ["p1", None]


def test_a_terminal_gets_a_progress_bar_in_keys(endpoint: EndpointProcess, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal (a real pty, 100 columns) the pull draws a bar that ends at the unique
    keys, counted before the read; elsewhere (every other test here) none."""
    from tqdm import tqdm

    # tqdm's write lock is process-shared (a semaphore) and class-wide: under mutmut, whose
    # forked mutants inherit it, one left held hangs every later bar. A lock of this test's
    # own, and no monitor thread.
    monkeypatch.setattr(tqdm, "_lock", threading.RLock(), raising=False)
    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    drawn: list[bytes] = []

    def read_terminal() -> None:  # as the pull draws: a full pty would block its writes
        with suppress(OSError):  # EIO once the pull's side is closed and all is read
            while chunk := os.read(master, 4096):
                drawn.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        with open(slave, "w") as terminal:
            monkeypatch.setattr(sys, "stderr", terminal)
            main.main(pull_args(endpoint, tmp_path, "--output", str(tmp_path / "o.parquet")),
                      standalone_mode=False)
        reader.join(timeout=30)
    finally:
        os.close(master)
    frames = b"".join(drawn).decode().split("\r")
    # IDS: 4 unique keys (the rate is keys/s, or s/keys past 4 s on a loaded machine)
    assert re.search(r"\b4/4 \[.*(keys/s|s/keys)\]", frames[-2]), frames


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
    summary = json.loads(invoke(*args, "--overwrite", "--json").stdout)
    assert summary["warnings"] == [result.stderr.removeprefix("featurepull: warning: ").strip()]


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


@pytest.mark.parametrize(("table", "message"), [
    ("nope", "featurepull: error: table cli.nope"),
    ("drivers", "row 2"),
])
def test_the_tables_error_comes_before_a_keys_though_both_are_checked_at_once(
        endpoint: EndpointProcess, tmp_path: Path, table: str, message: str) -> None:
    # The DescribeTable runs on a thread while the keys are built (pull._checking_table).
    entities = tmp_path / "too_large.csv"
    entities.write_text("driver_id\n5\n3000000000\n")
    out = tmp_path / "out.parquet"
    result = invoke(*pull_args(endpoint, tmp_path, "--output", str(out)), "--table", table,
                    "--entities", str(entities), "--join-key-types", "driver_id=int32")
    assert result.exit_code == 2
    assert message in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("mode", ["batch-get", "scan"])
def test_a_pull_whose_later_keys_are_hashed_while_it_reads_writes_the_same_file(
        endpoint: EndpointProcess, tmp_path: Path, mode: str) -> None:
    """With 4 requests of 20 keys in flight, the keys past the first 80 are hashed on a
    thread beside the read (featurepull.dynamo.keys_ahead), or before a scan joins them:
    the same file, byte for byte, as when the first requests take every key (100 of 50)."""
    ids = [(i * 7919) % 2_500 for i in range(2_500)] + [3, 1_999, 2_400]  # and repeats
    entities = tmp_path / "many.csv"
    entities.write_text("driver_id\n" + "".join(f"{i}\n" for i in ids))
    outputs = []
    for name, flow in (("plain", ["--max-read-workers", "100", "--batch-size", "50"]),
                       ("ahead", ["--max-read-workers", "4", "--batch-size", "20"])):
        out = tmp_path / f"{name}.parquet"
        args = pull_args(endpoint, tmp_path, "--output", str(out), "--read-mode", mode, *flow)
        args[args.index("--entities") + 1] = str(entities)
        assert invoke(*args).exit_code == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert pq.read_table(tmp_path / "ahead.parquet").column("driver_id").to_pylist() == ids
