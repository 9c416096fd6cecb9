"""Run `featurepull pull` (and `submit`) on bad input and print what featurepull says.

Each case is a real command line against a local DynamoDB (moto server) and a private
redis-server; the table in docs/bad-input.md is this script's output:

    .venv/bin/python scripts/bad_input_catalogue.py --write docs/bad-input.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

PLAIN = "users"  # plain layout, keyed by user_id (S)
NUMERIC = "scores"  # plain layout, keyed by score_id (N)
FEAST_PROJECT, FEAST_TABLE = "demo", "driver_stats"  # feast layout, keyed by entity_id
FEATURES = ["age", "city"]
ODD_FEATURES = ["a.b", "my feature", "size"]  # dots, spaces, a DynamoDB reserved word
OUTPUT = "out.parquet"


@dataclass(frozen=True)
class Case:
    """One bad (or surprising but fine) input; ``build`` writes its files, returns args."""

    name: str
    build: Callable[[Path], list[str]]
    works: bool = False  # the input is fine: featurepull must read it (exit 0)
    command: str = "pull"
    preexisting_output: bool = False
    known_bug: str = ""  # what goes wrong today, for an input that should work
    output: str = OUTPUT  # the output's file name (its extension picks the format)


@dataclass(frozen=True)
class Outcome:
    case: Case
    exit_code: int
    message: str
    nothing_written: bool
    rows: int | None


def _write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def _parquet(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


def _plain(entities: str, features: Sequence[str] = FEATURES, table: str = PLAIN) -> list[str]:
    return ["--layout", "plain", "--table", table, "--features", ",".join(features),
            "--entities", entities]


def _good_csv(d: Path) -> str:
    return _write(d / "users.csv", "user_id\nu1\nu2\n")


def _toml(d: Path, text: str) -> str:
    return _write(d / "featurepull.toml", text)


def _allowed_outputs(d: Path, link: bool = False) -> str:
    """A config whose jobs may write only under d/allowed (with a symlink there back to d)."""
    (d / "allowed").mkdir()
    if link:
        (d / "allowed" / "link").symlink_to(d, target_is_directory=True)
    return _toml(d, f'[jobs]\nallowed_outputs = ["{d / "allowed"}"]\n')


def _feast(entities: str, features: Sequence[str] = ("score",)) -> list[str]:
    return ["--project", FEAST_PROJECT, "--table", FEAST_TABLE, "--features",
            ",".join(features), "--entities", entities]


def _registry_yaml(d: Path, registry: str) -> str:
    return _write(d / "feature_store.yaml", f"project: {FEAST_PROJECT}\nregistry: {registry}\n"
                  "online_store:\n  type: dynamodb\n  region: us-east-1\n")


CASES: list[Case] = [
    Case("malformed CSV (a row with more fields than the header)",
         lambda d: _plain(_write(d / "e.csv", "user_id\nu1\nu2,extra\n"))),
    Case("malformed Parquet (garbage bytes)",
         lambda d: _plain(_write(d / "e.parquet", b"PAR1 this is not parquet \x00\x01"))),
    Case("malformed JSONL (a line that is not JSON)",
         lambda d: _plain(_write(d / "e.jsonl", '{"user_id": "u1"}\n{"user_id": u2\n'))),
    Case("wrong column type (float join key, feast layout)",
         lambda d: ["--project", FEAST_PROJECT, "--table", FEAST_TABLE, "--features", "x",
                    "--join-keys", "driver_id", "--entities",
                    _parquet(d / "e.parquet", pa.table({"driver_id": [1.5, 2.0]}))]),
    Case("empty entity file (0 bytes)", lambda d: _plain(_write(d / "e.csv", ""))),
    Case("null key", lambda d: _plain(_write(d / "e.jsonl",
                                             '{"user_id": "u1"}\n{"user_id": null}\n'))),
    Case("NaN key (plain layout, N key)",
         lambda d: _plain(_parquet(d / "e.parquet",
                                   pa.table({"score_id": [1.0, math.nan]})), ["value"],
                          NUMERIC)),
    Case("non-ASCII keys (José, 東京, emoji)",
         lambda d: _plain(_write(d / "e.csv", "user_id\nJosé\n東京\n🙂\n")), works=True),
    Case("plain-layout item without the event_ts attribute (found, no timestamp)",
         lambda d: _plain(_write(d / "e.csv", "user_id\nno-ts\n")), works=True),
    Case("key over 2,048 bytes (plain layout)",
         lambda d: _plain(_write(d / "e.csv", "user_id\nu1\n" + "k" * 2_049 + "\n"))),
    Case("feature names with dots, spaces, reserved words (a.b, my feature, size)",
         lambda d: _plain(_good_csv(d), ODD_FEATURES), works=True),
    Case("more entities than jobs.max_entities (submit)",
         lambda d: ["--config", _toml(d, "[jobs]\nmax_entities = 1\n"), *_plain(_good_csv(d))],
         command="submit"),
    Case("Parquet file whose footer counts more rows than jobs.max_entities (submit; "
         "refused before decoding)",
         lambda d: ["--config", _toml(d, "[jobs]\nmax_entities = 1000\n"),
                    *_plain(_parquet(d / "e.parquet", pa.table(
                        {"user_id": pa.array(["u1"] * 1_000_000)})))],
         command="submit"),
    Case("entity file over jobs.max_entity_file_bytes (submit; refused before reading)",
         lambda d: ["--config", _toml(d, "[jobs]\nmax_entity_file_bytes = 10\n"),
                    *_plain(_good_csv(d))],
         command="submit"),
    Case("job request over jobs.max_request_bytes (submit, 300 features)",
         lambda d: ["--config", _toml(d, "[jobs]\nmax_request_bytes = 1024\n"),
                    *_plain(_good_csv(d), [f"feature_{i:03d}" for i in range(300)])],
         command="submit"),
    Case("missing config file",
         lambda d: ["--config", str(d / "missing.toml"), *_plain(_good_csv(d))]),
    Case("contradictory config (jobs.shard_soft_time_limit_s >= shard_time_limit_s)",
         lambda d: ["--config", _toml(d, "[jobs]\nshard_soft_time_limit_s = 100\n"
                                         "shard_time_limit_s = 50\n"), *_plain(_good_csv(d))]),
    Case("unreachable endpoint (a closed port)",
         lambda d: [*_plain(_good_csv(d)), "--endpoint-url", "http://127.0.0.1:9"]),
    Case("unknown table", lambda d: _plain(_good_csv(d), table="no_such_table")),
    Case("wrong key schema (feast layout on a table keyed by user_id)",
         lambda d: ["--project", "x", "--table-name-template", "{table_name}", "--table", PLAIN,
                    "--features", "age", "--join-keys", "user_id", "--entities",
                    _good_csv(d)]),
    Case("output exists (no --overwrite)", lambda d: _plain(_good_csv(d)),
         preexisting_output=True),
    Case("unwritable output (a directory that does not exist)",
         lambda d: [*_plain(_good_csv(d)), "--output", str(d / "no" / "such" / "dir.parquet")]),
    Case("--batch-size 101", lambda d: [*_plain(_good_csv(d)), "--batch-size", "101"]),
    Case("dynamodb.read_mode = \"scan-all\" in the config file",
         lambda d: ["--config", _toml(d, '[dynamodb]\nread_mode = "scan-all"\n'),
                    *_plain(_good_csv(d))]),
    Case("--read-mode scan on a job over jobs.max_scan_keys (submit; refused before a "
         "shard is enqueued)",
         lambda d: ["--config", _toml(d, "[jobs]\nmax_scan_keys = 1\n"),
                    *_plain(_good_csv(d)), "--read-mode", "scan"], command="submit"),
    Case("relative --output that exists in the submitter's directory (submit; refused "
         "before anything is enqueued)",
         lambda d: [*_plain(_good_csv(d)), "--output", OUTPUT, "--wait"], command="submit",
         preexisting_output=True),
    Case("submit --wait --timeout with no worker on the queue (the job is cancelled)",
         lambda d: ["--config", _toml(d, '[jobs]\nqueue = "nobody-listens"\n'),
                    *_plain(_good_csv(d)), "--wait", "--timeout", "6"], command="submit"),
    Case("unreachable Redis (a closed port; the password is not printed)",
         lambda d: [*_plain(_good_csv(d)), "--redis-url", "redis://:secret@127.0.0.1:9/0"],
         command="submit"),
    # Issue 18 (items 3, 4, 8, 9): input that used to read wrong or name no problem.
    Case("CSV join key mixing integers and other text (1, abc; feast layout)",
         lambda d: _feast(_write(d / "e.csv", "driver_id\n1\nabc\n"))),
    Case("non-ASCII Feast join-key name (fahrer_größe: recent and older Feast give it "
         "other ids)", lambda d: _feast(_write(d / "e.csv", "fahrer_größe\n1\n2\n"))),
    Case("CSV join key mixing 7 and 007 (zero-padded code or number?)",
         lambda d: _feast(_write(d / "e.csv", "driver_id\n7\n007\n"))),
    Case("CSV join key mixing integers with -0, 1.0 and a value past int64",
         lambda d: _feast(_write(d / "e.csv",
                                 "driver_id\n1\n-0\n1.0\n99999999999999999999\n"))),
    Case("--join-key-types driver_id=int64 on a CSV value 1_00 (int() would read 100)",
         lambda d: [*_feast(_write(d / "e.csv", "driver_id\n1\n1_00\n")),
                    "--join-key-types", "driver_id=int64"]),
    Case("extra CSV column without --join-keys, so no entity is found (a warning)",
         lambda d: _feast(_write(d / "e.csv", "driver_id,region\n1,eu\n2,us\n")),
         works=True),
    Case("Feast double NaN, Infinity, -Infinity to .jsonl (written as null)",
         lambda d: _feast(_write(d / "e.csv", "driver_id\n1\n2\n3\n"), ["score"]),
         works=True, output="out.jsonl"),
    Case("plain-layout event_ts that is not a date-time",
         lambda d: _plain(_write(d / "e.csv", "user_id\nbad-ts\n"))),
    Case("plain-layout event_ts past year 9999 in UTC (9999-12-31T23:00:00-05:00)",
         lambda d: _plain(_write(d / "e.csv", "user_id\nlate-ts\n"))),
    Case("Feast unix_timestamp feature out of range (year 31 million)",
         lambda d: _feast(_write(d / "e.csv", "driver_id\n1\n"), ["seen"])),
    Case("Feast zoned timestamp whose local time is past year 9999 (+05:00)",
         lambda d: _feast(_write(d / "e.csv", "driver_id\n1\n"), ["zoned"])),
    Case("30-digit DynamoDB number to Parquet",
         lambda d: _plain(_write(d / "e.csv", "user_id\nbig-number\n"), ["big"])),
    Case("plain N key beyond DynamoDB's range (1e126)",
         lambda d: _plain(_write(d / "e.csv", "score_id\n1\n1e126\n"), ["value"], NUMERIC)),
    Case("plain N key below DynamoDB's smallest magnitude (1e-131)",
         lambda d: _plain(_write(d / "e.csv", "score_id\n1e-131\n"), ["value"], NUMERIC)),
    Case("plain N key 1_00 (Decimal() would read 100)",
         lambda d: _plain(_write(d / "e.csv", "score_id\n1_00\n"), ["value"], NUMERIC)),
    Case("JSONL key holding an object",
         lambda d: _feast(_write(d / "e.jsonl", '{"driver_id": 1}\n{"driver_id": {"id": 2}}\n'))),
    Case("extra float column without --join-keys (JSONL)",
         lambda d: _feast(_write(d / "e.jsonl", '{"driver_id": 1, "weight": 0.5}\n'))),
    Case("blank line in a CSV entity file",
         lambda d: _plain(_write(d / "e.csv", "user_id\nu1\n\nu2\n"))),
    # Issue 14: Feast references resolved in the registry.
    Case("Feast references (view:feature) without --feature-store-yaml",
         lambda d: ["--features", "driver_hourly_stats:conv_rate", "--entities",
                    _write(d / "e.csv", "driver_id\n1\n")]),
    Case("Feast references with --table",
         lambda d: ["--feature-store-yaml", _registry_yaml(d, "data/registry.db"),
                    "--table", FEAST_TABLE, "--features", "driver_hourly_stats:conv_rate",
                    "--entities", _write(d / "e.csv", "driver_id\n1\n")]),
    Case("feature_store.yaml naming a SQL registry",
         lambda d: ["--feature-store-yaml", _registry_yaml(
             d, "{registry_type: sql, path: 'postgresql://user@db/feast'}"),
                    "--features", "driver_hourly_stats:conv_rate", "--entities",
                    _write(d / "e.csv", "driver_id\n1\n")]),
    Case("feature_store.yaml whose registry file is not a Feast registry",
         lambda d: ["--feature-store-yaml", _registry_yaml(d, _write(
             d / "registry.db", b"\xff\xff not a registry")),
                    "--features", "driver_hourly_stats:conv_rate", "--entities",
                    _write(d / "e.csv", "driver_id\n1\n")]),
    Case("feature_store.yaml with online_store.type as Feast's class path",
         lambda d: ["--feature-store-yaml", _write(d / "feature_store.yaml", (
             "project: demo\nprovider: aws\nonline_store:\n"
             "  type: feast.infra.online_stores.dynamodb.DynamoDBOnlineStore\n"
             "  region: us-east-1\n")), *_plain(_good_csv(d))], works=True),
    Case("a requested feature no found item holds (a typo: --features age,cty)",
         lambda d: _plain(_good_csv(d), ["age", "cty"])),
    Case("a requested feature no found item holds, with --allow-missing-features (read as "
         "null)",
         lambda d: [*_plain(_good_csv(d), ["age", "cty"]), "--allow-missing-features"],
         works=True),
    *[Case(f"--max-rcu-per-s {value}",
           lambda d, value=value: [*_plain(_good_csv(d)), f"--max-rcu-per-s={value}"])
      for value in ("0", "-5", "150%", "abc")],
    Case("--max-rcu-per-s 50% on an on-demand table without a maximum",
         lambda d: [*_plain(_good_csv(d)), "--max-rcu-per-s", "50%"]),
    Case("--max-rcu-per-s 50% on an on-demand table without a maximum (submit)",
         lambda d: [*_plain(_good_csv(d)), "--max-rcu-per-s", "50%"], command="submit"),
    # Issue 20: a job's output outside jobs.allowed_outputs (workers refuse the same in a
    # featurepull.submit_job message, with its entities and endpoint: tests/hardening/
    # test_confine_workers.py).
    Case("output outside jobs.allowed_outputs (submit)",
         lambda d: ["--config", _allowed_outputs(d), *_plain(_good_csv(d))], command="submit"),
    Case("output escaping jobs.allowed_outputs through a symlinked directory (submit)",
         lambda d: ["--config", _allowed_outputs(d, link=True), *_plain(_good_csv(d)),
                    "--output", str(d / "allowed" / "link" / OUTPUT)], command="submit"),
    Case("output outside jobs.allowed_outputs with `pull` (the caller's own process: not "
         "limited)",
         lambda d: ["--config", _allowed_outputs(d), *_plain(_good_csv(d))], works=True),
]


def create_tables(endpoint_url: str) -> None:
    """The catalogue's tables in a local DynamoDB."""
    ddb = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    for name, key, kind in ((PLAIN, "user_id", "S"), (NUMERIC, "score_id", "N"),
                            (f"{FEAST_PROJECT}.{FEAST_TABLE}", "entity_id", "S")):
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": key, "AttributeType": kind}])
    for user in ("u1", "u2", "José", "東京", "🙂"):
        ddb.put_item(TableName=PLAIN, Item={
            "user_id": {"S": user}, "age": {"N": "41"}, "city": {"S": "Lyon"},
            "event_ts": {"S": "2024-05-01T12:00:00+00:00"},
            "a.b": {"S": "dot"}, "my feature": {"N": "1"}, "size": {"S": "L"}})
    # An item without the event_ts attribute (written by something other than Feast).
    ddb.put_item(TableName=PLAIN, Item={"user_id": {"S": "no-ts"}, "age": {"N": "7"},
                                        "city": {"S": "Oslo"}})
    ddb.put_item(TableName=PLAIN, Item={"user_id": {"S": "bad-ts"}, "age": {"N": "7"},
                                        "event_ts": {"S": "yesterday"}})
    ddb.put_item(TableName=PLAIN, Item={"user_id": {"S": "late-ts"}, "age": {"N": "7"},
                                        "event_ts": {"S": "9999-12-31T23:00:00-05:00"}})
    ddb.put_item(TableName=PLAIN, Item={"user_id": {"S": "big-number"},
                                        "big": {"N": "123456789012345678901234567890"}})
    _put_feast_drivers(ddb)


def _put_feast_drivers(ddb: Any) -> None:
    """Drivers 1-3 in the Feast view: non-finite doubles, a timestamp past year 9999, and a
    zoned timestamp whose local time is past it."""
    from featurepull.dynamo.feast_keys import EntityKeyEncoder
    from featurepull.dynamo.feast_values import ValueProto

    encoder = EntityKeyEncoder({"driver_id": "int64"})
    for driver, score in ((1, math.nan), (2, math.inf), (3, -math.inf)):
        values = {"score": ValueProto(double_val=score),
                  "seen": ValueProto(unix_timestamp_val=10**15),
                  "zoned": ValueProto(zoned_timestamp_val={"unix_timestamp": 253_402_297_199,
                                                           "zone": "+05:00"})}
        ddb.put_item(TableName=f"{FEAST_PROJECT}.{FEAST_TABLE}", Item={
            "entity_id": {"S": encoder.entity_id([driver])},
            "event_ts": {"S": "2024-05-01 12:00:00+00:00"},
            "values": {"M": {name: {"B": value.SerializeToString()}
                             for name, value in values.items()}}})


def _message(stderr: str) -> str:
    """featurepull's message (all its lines), else the last line (a traceback's error)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith(("featurepull:", "Error:"))]
    if starts:
        return " ".join(lines[starts[-1]:])
    return lines[-1] if lines else ""


def run_case(case: Case, endpoint_url: str, redis_url: str, workdir: Path) -> Outcome:
    """Run one case in its own folder and report what featurepull did."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = case.build(workdir)
    output = workdir / case.output
    if case.preexisting_output:
        output.write_bytes(b"keep me")
    if "--output" not in args:
        args += ["--output", str(output)]
    if "--endpoint-url" not in args:
        args += ["--endpoint-url", endpoint_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATUREPULL_")}
    env.update({"FEATUREPULL_REDIS_URL": redis_url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "FEATUREPULL_DYNAMODB__REGION": "us-east-1",
                "FEATUREPULL_DYNAMODB__CONNECT_TIMEOUT": "2",
                "FEATUREPULL_DYNAMODB__RETRY_DEADLINE_S": "5"})
    proc = subprocess.run([sys.executable, "-m", "featurepull", case.command, *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=workdir)
    if case.preexisting_output:
        nothing_written = output.read_bytes() == b"keep me"
    else:
        nothing_written = not output.exists()
    leftovers = [p.name for p in workdir.iterdir()
                 if p.name.startswith(f".{case.output}.tmp")]
    nothing_written = nothing_written and not leftovers
    rows = _rows(output) if case.works and output.exists() else None
    message = _message(proc.stderr) if proc.returncode else f"(exit 0) {rows} rows written"
    if not proc.returncode and "featurepull: warning:" in proc.stderr:
        message += "; " + _message(proc.stderr)
    if rows and output.suffix == ".jsonl":
        message += ": " + output.read_text(encoding="utf-8").splitlines()[0]
    message = message.replace(f"{workdir}/", "")  # paths relative to the case's folder
    message = re.sub(r"\bjob [0-9a-f]{32}\b", "job JOB_ID", message)  # the same every run
    return Outcome(case, proc.returncode, message, nothing_written, rows)


def _rows(output: Path) -> int:
    if output.suffix == ".jsonl":
        return len(output.read_text(encoding="utf-8").splitlines())
    return int(pq.read_table(output).num_rows)


def run_cases(cases: Sequence[Case], endpoint_url: str, redis_url: str, root: Path,
              parallel: int = 4) -> list[Outcome]:
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda ic: run_case(ic[1], endpoint_url, redis_url,
                                                 root / f"case{ic[0]}"),
                             enumerate(cases)))


def markdown(outcomes: Sequence[Outcome]) -> str:
    rows = ["| input | what featurepull says | exit code | nothing written? |",
            "|---|---|---|---|"]
    for o in outcomes:
        message = o.message.replace("|", "\\|").replace("\n", " ")
        if o.case.known_bug and o.exit_code:
            written = f"**known bug**: {o.case.known_bug}"
        elif o.case.works:
            written = "n/a — works" + (f", {o.rows} rows" if o.rows is not None else "")
        else:
            written = "yes" if o.nothing_written else "**NO**"
        rows.append(f"| {o.case.name} | `{message}` | {o.exit_code} | {written} |")
    return "\n".join(rows) + "\n"


HEADER = """# Bad input: what featurepull says

Generated by `scripts/bad_input_catalogue.py` from real runs of `featurepull pull` (and
`submit` where it says so) against a local DynamoDB (moto) and a private redis-server.
Exit codes: 0 success, 1 the read or job failed (or Redis could not be reached), 2 bad input
or configuration (refused before anything is read or written). "n/a — works" marks inputs
that look odd but are valid.

"""


def main(argv: Sequence[str] | None = None) -> int:
    from featurepull.local import running_moto, running_redis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", help="also write the markdown page here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    opts = parser.parse_args(argv)
    with running_moto() as moto, running_redis() as redis_server, \
            TemporaryDirectory(prefix="featurepull-bad-input-") as tmp:
        create_tables(moto.url)
        outcomes = run_cases(CASES, moto.url, redis_server.url, Path(tmp))
    if opts.json:
        print(json.dumps([{"input": o.case.name, "exit_code": o.exit_code, "message": o.message,
                           "nothing_written": o.nothing_written} for o in outcomes], indent=2))
    else:
        print(markdown(outcomes), end="")
    if opts.write:
        Path(opts.write).write_text(HEADER + markdown(outcomes), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
