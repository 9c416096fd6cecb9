"""`featurepull submit` as a user runs it, through real prefork workers started by
`featurepull worker`: every flag reaches the workers and changes what they do — on the wire
(counted by the lean endpoint) or in the output — exactly as the same flags do for `pull`."""

from __future__ import annotations

import io
import json
import math
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.cli import main
from featurepull.client import workers_on_queue
from featurepull.io import _csv_stream
from featurepull.local import MotoService, RedisService
from tests.conftest import (
    REGION,
    dictionary_pages,
    moto_table,
    refused_port,
    unique_name,
    wait_until,
)
from tests.faultproxy import FaultPlan, FaultProxy
from tests.feast_writer import create_feast_table, write_feast_rows
from tests.tasks.conftest import Fleet, fleet

DRIVERS = 2_000
# 1,990 drivers the endpoint holds and 10 it does not: 2,000 distinct keys, 20 requests of 100.
IDS = [*range(DRIVERS - 1, 9, -1), *range(DRIVERS, DRIVERS + 10)]
KEYS = len(set(IDS))
FEATURES = "conv_rate,city"
LATENCY_MS = 20  # long enough for requests to overlap at the endpoint
MOTO_IDS = [*range(20), 99]  # 99 is in no moto table
PLAIN_USERS = [f"u{n}" for n in range(10)]
TS_EPOCH = 1_700_000_000
REGISTRY = [{"name": "linear", "path": "tests.tasks.scorers_for_tests:linear"}]


@dataclass
class Services:
    """What every test of this module shares: one worker (1 process) on endpoint A."""

    a: EndpointProcess  # the workers' own endpoint (seed 0)
    b: EndpointProcess  # same table name, other values (seed 1)
    throttling: FaultProxy  # in front of A, throttles every BatchGetItem
    moto: MotoService
    workers: Fleet
    folder: Path
    feast_name: str  # view in moto as demo.X (decoy), P.X and tpl_X
    project: str
    plain: str  # plain-layout table in moto
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """The submitter's environment: the workers' settings."""
        return {k: v for k, v in self.workers.env.items() if k.startswith("FEATUREPULL_")}

    def ids_csv(self) -> str:
        path = self.folder / "ids.csv"
        if not path.exists():
            path.write_text("driver_id\n" + "\n".join(map(str, IDS)) + "\n")
        return str(path)

    def moto_csv(self) -> str:
        path = self.folder / "moto_ids.csv"
        if not path.exists():
            path.write_text("driver_id\n" + "\n".join(map(str, MOTO_IDS)) + "\n")
        return str(path)

    def file(self, name: str, text: str) -> str:
        path = self.folder / name
        path.write_text(text)
        return str(path)


def _feast_rows(source: str) -> list[Any]:
    ts = datetime(2026, 3, 1, tzinfo=UTC)
    return [({"driver_id": ("int64", d)}, ts, {"src": ("string_val", f"{source}:{d}")})
            for d in range(20)]


def _moto_tables(ddb: Any, name: str, project: str, plain: str) -> None:
    for table, source in ((f"demo.{name}", "decoy"), (f"{project}.{name}", "project"),
                          (f"tpl_{name}", "template")):
        create_feast_table(ddb, table)
        write_feast_rows(ddb, table, _feast_rows(source))
    ddb.create_table(TableName=plain, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"}])
    for n, user in enumerate(PLAIN_USERS):
        ddb.put_item(TableName=plain, Item={
            "user_id": {"S": user}, "age": {"N": str(20 + n)}, "city": {"S": f"c{n}"},
            "event_ts": {"S": "2026-01-02T03:04:05+00:00"}, "ts": {"N": str(TS_EPOCH + n)}})


@pytest.fixture(scope="module")
def services(redis_server: RedisService, moto_server: MotoService, ddb: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    name, project, plain = unique_name("drv"), unique_name("p"), unique_name("users")
    _moto_tables(ddb, name, project, plain)
    bucket = unique_name("fp-submit-")
    boto3.client("s3", endpoint_url=moto_server.url, region_name=REGION).create_bucket(
        Bucket=bucket)
    with start_endpoint(drivers=DRIVERS, seed=0, latency_ms=LATENCY_MS) as a, \
            start_endpoint(drivers=DRIVERS, seed=1) as b, \
            FaultProxy(a.url, FaultPlan(throttle_rate=1.0)) as throttling, \
            fleet(redis_server, a.url) as workers:
        workers.env.update({
            "FEATUREPULL_S3__ENDPOINT_URL": moto_server.url,
            "FEATUREPULL_S3__REGION": REGION,
            "FEATUREPULL_SCORERS": json.dumps(REGISTRY),
            # A flag the job drops shows up as this (not the flag's 1 s), not as a hang.
            "FEATUREPULL_DYNAMODB__RETRY_DEADLINE_S": "30",
        })
        workers.start_worker(concurrency=1, cli=True)
        yield Services(a, b, throttling, moto_server, workers,
                       tmp_path_factory.mktemp("submit"), name, project, plain, bucket)


def cli(services: Services, *args: str) -> Result:
    """One featurepull command, in this process, with the workers' environment."""
    return CliRunner().invoke(main, list(args), env=services.env, catch_exceptions=False)


@dataclass
class Run:
    """A pull or submit and what it did: its result, the rows, the endpoints' counters."""

    result: Result
    rows: list[dict[str, Any]] | None
    a: dict[str, Any]
    b: dict[str, Any]


def run_read(services: Services, command: str, args: list[str], output: Path) -> Run:
    services.a.reset_stats()
    services.b.reset_stats()
    extra = ["--wait", "--json"] if command == "submit" else ["--json"]
    result = cli(services, command, *args, "--output", str(output), *extra)
    rows = pq.read_table(output).to_pylist() if output.exists() else None
    return Run(result, rows, services.a.stats(), services.b.stats())


def sources(run: Run) -> set[str]:
    """Which moto table the rows came from."""
    return {row["src"].split(":")[0] for row in run.rows or [] if row["src"]}


@dataclass(frozen=True)
class FlagCase:
    """A flag, what it changes (observed after a run), and what it must change it to.
    ``without`` is the same read without the flag: it must be observed otherwise."""

    args: Callable[[Services], list[str]]
    seen: Callable[[Run], object]
    expected: object
    without: Callable[[Services], list[str]] | None = None


def _lean(s: Services) -> list[str]:
    return ["--table", "driver_stats", "--features", FEATURES, "--entities", s.ids_csv()]


def _moto(s: Services) -> list[str]:
    return ["--endpoint-url", s.moto.url, "--table", s.feast_name, "--features", "src",
            "--entities", s.moto_csv()]


def _toml(s: Services, name: str, text: str) -> list[str]:
    return ["--config", s.file(name, text)]


FLAG_CASES = {
    "endpoint-url": FlagCase(
        lambda s: [*_lean(s), "--endpoint-url", s.b.url],
        lambda r: (r.a["batch_get_item"], r.b["batch_get_item"]), (0, KEYS // 100), _lean),
    "batch-size": FlagCase(lambda s: [*_lean(s), "--batch-size", "10"],
                           lambda r: r.a["batch_get_item"], KEYS // 10, _lean),
    "consistent-reads": FlagCase(
        lambda s: [*_lean(s), "--consistent-reads"],
        lambda r: (r.a["consistent_reads"], r.a["batch_get_item"]), (KEYS // 100,) * 2, _lean),
    "consistent-reads from --config": FlagCase(
        lambda s: [*_lean(s), *_toml(s, "strong.toml", "[dynamodb]\nconsistent_reads = true\n")],
        lambda r: r.a["consistent_reads"], KEYS // 100, _lean),
    "eventual-reads over --config": FlagCase(
        lambda s: [*_lean(s), *_toml(s, "strong.toml", "[dynamodb]\nconsistent_reads = true\n"),
                   "--eventual-reads"],
        lambda r: r.a["consistent_reads"], 0,
        lambda s: [*_lean(s), *_toml(s, "strong.toml",
                                     "[dynamodb]\nconsistent_reads = true\n")]),
    "max-read-workers": FlagCase(lambda s: [*_lean(s), "--max-read-workers", "2"],
                                 lambda r: r.a["max_in_flight"], 2, _lean),
    "region": FlagCase(lambda s: [*_lean(s), "--region", "eu-west-3"],
                       lambda r: sorted(r.a["regions"]), ["eu-west-3"], _lean),
    "retry-deadline": FlagCase(
        lambda s: [*_lean(s), "--endpoint-url", s.throttling.url, "--retry-deadline", "1"],
        lambda r: (r.result.exit_code, "retry_deadline_s=1)" in r.result.stderr), (1, True)),
    "project": FlagCase(lambda s: [*_moto(s), "--project", s.project], sources, {"project"},
                        _moto),
    "table-name-template": FlagCase(
        lambda s: [*_moto(s), "--table-name-template", "tpl_{table_name}"], sources,
        {"template"}, _moto),
    "feature-store-yaml": FlagCase(
        lambda s: ["--feature-store-yaml", s.file("feature_store.yaml", (
            f"project: {s.project}\nonline_store:\n  type: dynamodb\n  region: {REGION}\n"
            f"  endpoint_url: {s.moto.url}\n")), "--table", s.feast_name, "--features", "src",
            "--entities", s.moto_csv()],
        sources, {"project"}, _moto),
}


@pytest.mark.parametrize("name", list(FLAG_CASES))
def test_submit_reads_as_pull_does_with_each_flag(services: Services, name: str,
                                                  tmp_path: Path) -> None:
    case = FLAG_CASES[name]
    pulled = run_read(services, "pull", case.args(services), tmp_path / "pulled.parquet")
    submitted = run_read(services, "submit", case.args(services),
                         tmp_path / "submitted.parquet")
    assert case.seen(pulled) == case.expected, pulled.result.output
    assert case.seen(submitted) == case.expected, submitted.result.output
    assert submitted.result.exit_code == pulled.result.exit_code
    assert submitted.rows == pulled.rows
    if pulled.result.exit_code == 0:
        assert pulled.rows and any(row["event_timestamp"] for row in pulled.rows)
        summary = json.loads(submitted.result.stdout)
        assert (summary["rows_written"], summary["shards"]) == (len(pulled.rows), 1)
    if case.without is not None:  # the flag made the difference
        default = run_read(services, "pull", case.without(services), tmp_path / "d.parquet")
        assert default.result.exit_code == 0, default.result.output
        assert case.seen(default) != case.expected


def test_json_shard_size_and_status(services: Services, tmp_path: Path) -> None:
    out = tmp_path / "sharded.parquet"
    queued = cli(services, "submit", *_lean(services), "--output", str(out),
                 "--shard-size", "600", "--json")
    assert queued.exit_code == 0, queued.output
    job = json.loads(queued.stdout)
    assert (job["shards"], job["rows"]) == (math.ceil(len(IDS) / 600), len(IDS))
    plain = cli(services, "status", job["job_id"])
    assert plain.exit_code == 0 and plain.stdout.startswith(f"job {job['job_id']}: ")
    final = _wait_until_ended(services, job["job_id"])
    assert final["state"] == "succeeded" and final["shards_done"] == 4
    assert final["summary"]["output"] == str(out)
    plain = cli(services, "status", job["job_id"])
    assert plain.stdout.splitlines()[0] == (
        f"job {job['job_id']}: succeeded, 4/4 shards, {len(IDS):,}/{len(IDS):,} rows read")
    assert f"succeeded: {len(IDS):,} rows in 4 shards to {out}" in plain.stdout
    pulled = run_read(services, "pull", _lean(services), tmp_path / "pulled.parquet")
    assert pq.read_table(out).to_pylist() == pulled.rows
    assert [row["driver_id"] for row in pulled.rows or []] == IDS


@pytest.mark.parametrize("scored", [False, True], ids=["features", "scores"])
def test_pull_and_submit_write_the_key_column_without_a_dictionary(
        services: Services, tmp_path: Path, scored: bool) -> None:
    # The entity key column (distinct ids) is plain in a pull's output and in a job's,
    # whose shards' parts the finisher copies; the features keep their dictionaries. The
    # two files hold the same table, schema and metadata included.
    flags = [*_lean(services), *(["--features", "conv_rate,acc_rate", "--scorer", "linear",
                                  "--with-features"] if scored else [])]
    pulled, submitted = tmp_path / "pulled.parquet", tmp_path / "submitted.parquet"
    assert cli(services, "pull", *flags, "--output", str(pulled)).exit_code == 0
    done = cli(services, "submit", *flags, "--shard-size", "600", "--output", str(submitted),
               "--wait", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["shards"] == 4
    for path in (pulled, submitted):
        pages = dictionary_pages(path)
        assert (pages["driver_id"], pages["event_timestamp"], pages["conv_rate"]) == (
            {False}, {True}, {True})
    assert pq.read_table(submitted).equals(pq.read_table(pulled), check_metadata=True)


def _wait_until_ended(services: Services, job_id: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        shown = cli(services, "status", job_id, "--json")
        assert shown.exit_code == 0, shown.output
        status: dict[str, Any] = json.loads(shown.stdout)
        return status if status["state"] in ("succeeded", "failed", "cancelled") else None

    final: dict[str, Any] = wait_until(ended, f"end of job {job_id}", timeout)
    return final


@pytest.mark.parametrize("with_features", [False, True], ids=["scores", "with-features"])
def test_scorer(services: Services, tmp_path: Path, with_features: bool) -> None:
    flags = [*_lean(services), "--features", "conv_rate,acc_rate", "--scorer", "linear",
             *(["--with-features"] if with_features else [])]
    pulled = run_read(services, "pull", flags, tmp_path / "pulled.parquet")
    submitted = run_read(services, "submit", flags, tmp_path / "submitted.parquet")
    assert submitted.result.exit_code == 0, submitted.result.output
    assert submitted.rows == pulled.rows and submitted.rows
    features = ["event_timestamp", "conv_rate", "acc_rate"] if with_features else []
    assert list(submitted.rows[0]) == ["driver_id", *features, "score", "seen"]
    assert [row["seen"] for row in submitted.rows] == [d < DRIVERS for d in IDS]


def test_overwrite(services: Services, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"keep me")
    queue = services.workers.redis()
    refused = cli(services, "submit", *_lean(services), "--output", str(out), "--wait")
    assert refused.exit_code == 2
    assert f"featurepull: error: {out} exists; pass --overwrite" in refused.stderr
    assert out.read_bytes() == b"keep me" and queue.llen(services.workers.queue) == 0
    replaced = cli(services, "submit", *_lean(services), "--output", str(out), "--wait",
                   "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert [row["driver_id"] for row in pq.read_table(out).to_pylist()] == IDS


def _plain(s: Services, entities: str) -> list[str]:
    return ["--endpoint-url", s.moto.url, "--layout", "plain", "--table", s.plain,
            "--features", "age,city", "--entities", entities]


def _users_csv(s: Services) -> str:
    return s.file("users.csv", "user_id\n" + "\n".join([*reversed(PLAIN_USERS), "u99"]) + "\n")


@pytest.mark.parametrize(("flag", "timestamps"), [
    ([], [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)] * 10),
    (["--event-ts-attribute", "ts"],
     [datetime.fromtimestamp(TS_EPOCH + n, UTC) for n in reversed(range(10))]),
    (["--event-ts-attribute", ""], [None] * 10),
], ids=["event_ts", "ts", "none"])
def test_plain_layout_event_ts_attribute(services: Services, tmp_path: Path, flag: list[str],
                                         timestamps: list[datetime | None]) -> None:
    args = [*_plain(services, _users_csv(services)), *flag]
    pulled = run_read(services, "pull", args, tmp_path / "pulled.parquet")
    submitted = run_read(services, "submit", args, tmp_path / "submitted.parquet")
    assert submitted.result.exit_code == 0, submitted.result.output
    assert submitted.rows == pulled.rows and submitted.rows
    assert [row["event_timestamp"] for row in submitted.rows] == [*timestamps, None]
    assert [row["age"] for row in submitted.rows] == [*range(29, 19, -1), None]


def test_plain_layout_from_s3_to_s3(services: Services, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=services.moto.url, region_name=REGION)
    s3.upload_file(_users_csv(services), services.bucket, "in/users.csv")
    entities, output = f"s3://{services.bucket}/in/users.csv", f"s3://{services.bucket}/out.parquet"
    args = [*_plain(services, entities), "--output", output]
    submitted = cli(services, "submit", *args, "--wait", "--json")
    assert submitted.exit_code == 0, submitted.output
    assert json.loads(submitted.stdout)["output"] == output
    body = s3.get_object(Bucket=services.bucket, Key="out.parquet")["Body"].read()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    pulled = run_read(services, "pull", _plain(services, entities), tmp_path / "p.parquet")
    assert rows == pulled.rows
    assert [row["user_id"] for row in rows] == [*reversed(PLAIN_USERS), "u99"]


def test_a_dataset_to_s3_reads_back_in_order(services: Services, tmp_path: Path) -> None:
    # --output naming an s3:// prefix (ending in /): a Parquet dataset, parts in input order.
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    entities = _users_csv(services)
    output = f"s3://{services.bucket}/dataset/"
    args = [*_plain(services, entities), "--output", output, "--shard-size", "100"]
    submitted = cli(services, "submit", *args, "--wait", "--json")
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.stdout)["job_id"]
    filesystem = pafs.S3FileSystem(endpoint_override=services.moto.url, region=REGION,
                                   access_key="testing", secret_key="testing")
    marker = filesystem.open_input_stream(f"{services.bucket}/dataset/_SUCCESS").read()
    assert marker.decode() == job_id
    rows = ds.dataset(f"{services.bucket}/dataset/", format="parquet",
                      filesystem=filesystem).to_table().to_pylist()
    pulled = run_read(services, "pull", _plain(services, entities), tmp_path / "p.parquet")
    assert rows == pulled.rows and rows


@pytest.mark.parametrize(("csv", "flags", "found"), [
    ("driver_id,note\n3,a\n99,b\n7,c\n", [], [False, False, False]),
    ("driver_id,note\n3,a\n99,b\n7,c\n", ["--join-keys", "driver_id"], [True, False, True]),
    ("driver_id\n003\n099\n007\n", [], [False, False, False]),
    ("driver_id\n003\n099\n007\n", ["--join-key-types", "driver_id=int64"],
     [True, False, True]),
], ids=["two columns", "join-keys", "zero-padded", "join-key-types"])
def test_join_keys_and_types(services: Services, tmp_path: Path, csv: str, flags: list[str],
                             found: list[bool]) -> None:
    args = ["--endpoint-url", services.moto.url, "--project", services.project, "--table",
            services.feast_name, "--features", "src", "--entities",
            services.file("keys.csv", csv), *flags]
    pulled = run_read(services, "pull", args, tmp_path / "pulled.parquet")
    submitted = run_read(services, "submit", args, tmp_path / "submitted.parquet")
    assert submitted.result.exit_code == 0, submitted.result.output
    assert submitted.rows == pulled.rows and submitted.rows
    assert [row["src"] is not None for row in submitted.rows] == found


def test_a_bad_row_past_the_first_block_exits_2_as_pull_does_and_publishes_nothing(
        services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of 4 KiB: the first ~800 ids are typed and their shards sent to the worker
    # before "abc" on line 2,002 makes the join key mixed. The job those shards went to is
    # failed; the submit refuses the file with the whole-file message, exit 2, as pull does.
    monkeypatch.setattr(_csv_stream, "_BLOCK_BYTES", 4096)  # a tuning constant
    entities = services.file("late.csv", "driver_id\n" + "".join(
        f"{value}\n" for value in [*IDS, "abc"]))
    args = ["--table", "driver_stats", "--features", FEATURES, "--entities", entities]
    out = tmp_path / "never.parquet"
    jobs = _job_ids(services)
    submitted = cli(services, "submit", *args, "--output", str(out), "--shard-size", "100",
                    "--wait")
    pulled = cli(services, "pull", *args, "--output", str(tmp_path / "pulled.parquet"))
    assert (submitted.exit_code, pulled.exit_code) == (2, 2)
    assert "mixes integers" in pulled.stderr
    assert submitted.stderr.splitlines()[-1] == pulled.stderr.splitlines()[-1]
    [job_id] = _job_ids(services) - jobs
    status = json.loads(cli(services, "status", job_id, "--json").stdout)
    assert status["state"] == "failed"
    # The job's record holds the message the submit printed, not the stream's.
    refused = submitted.stderr.splitlines()[-1].removeprefix("featurepull: error: ")
    stopped = re.fullmatch(r"submit stopped after \d+ of 21 shards were sent: (.*)",
                           status["error"])
    assert stopped and stopped[1] == refused, status["error"]
    assert "mixes integers" in refused
    # The one worker process takes messages in order: once a later job is done, so is every
    # shard of the failed one (skipped, or what it staged removed).
    later = cli(services, "submit", *_lean(services), "--output", str(tmp_path / "later.csv"),
                "--wait")
    assert later.exit_code == 0, later.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["later.csv"]


def _job_ids(services: Services) -> set[str]:
    prefix, suffix = "featurepull:job:", ":meta"
    return {key.decode()[len(prefix):-len(suffix)]
            for key in services.workers.redis().scan_iter(match=f"{prefix}*{suffix}")}


def test_cancel_stops_later_shards_before_they_read(services: Services, tmp_path: Path) -> None:
    # 1 worker process, 20 shards of 100 keys, 10 requests of 10 keys per shard one at a time:
    # every shard takes ~0.2 s, so the cancel lands while most shards are still queued.
    slow = [*_lean(services), "--shard-size", "100", "--batch-size", "10",
            "--max-read-workers", "1"]
    services.a.reset_stats()
    queued = cli(services, "submit", *slow, "--json")
    job_id = json.loads(queued.stdout)["job_id"]
    store = services.workers.redis()
    wait_until(lambda: store.scard(f"featurepull:job:{job_id}:done") >= 2, "2 shards done", 30)
    cancelled = cli(services, "cancel", job_id)
    assert cancelled.stdout.strip() == f"featurepull: job {job_id} cancelled"
    # A job submitted after it runs once every message before it was taken (FIFO, one
    # process, prefetch 1): then the cancelled job's shards have all been skipped or run.
    # It reads endpoint B, so A's counters hold the cancelled job's requests alone.
    after = cli(services, "submit", *_lean(services), "--endpoint-url", services.b.url,
                "--output", str(tmp_path / "after.parquet"), "--wait")
    assert after.exit_code == 0, after.output
    status = json.loads(cli(services, "status", job_id, "--json").stdout)
    assert status["state"] == "cancelled" and status["shards"] == 20
    assert 2 <= status["shards_done"] < 20
    # The endpoint was asked for the keys of the shards that finished and, at most, of the
    # one running when the cancel came: no shard that started later sent a request.
    assert services.a.stats()["keys"] <= (status["shards_done"] + 1) * 100


def test_cleanup_removes_the_jobs_keys(services: Services) -> None:
    kept = cli(services, "submit", *_lean(services), "--wait")
    assert kept.exit_code == 0, kept.output
    job_id = kept.stderr.split("job ", 1)[1].split(":", 1)[0]
    store = services.workers.redis()
    assert list(store.scan_iter(f"featurepull:job:{job_id}:rows:*"))  # rows kept in Redis
    removed = cli(services, "cleanup", job_id)
    assert removed.exit_code == 0 and removed.stdout.startswith("featurepull: removed ")
    assert not list(store.scan_iter(f"*{job_id}*"))
    gone = cli(services, "status", job_id)
    assert gone.exit_code == 2 and f"no job '{job_id}' in Redis" in gone.stderr


def test_the_worker_command_consumes_the_configured_queue(services: Services) -> None:
    # Started as `featurepull worker` without -Q: it took the queue from its settings
    # (FEATUREPULL_JOBS__QUEUE); the module's jobs succeeding shows it runs them.
    # Each ask waits 1 s for replies; a worker on a busy machine may answer a later one.
    for _ in range(10):
        consumers = workers_on_queue(services.workers.settings())
        if consumers:
            break
    assert consumers is not None and len(consumers) == 1
    assert consumers[0].startswith("w0-")


def _worker_cwd(services: Services) -> Path:
    return Path(f"/proc/{services.workers.workers[0].pid}/cwd").resolve()


def test_relative_paths_are_the_submitters(services: Services, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _worker_cwd(services) != tmp_path  # the worker resolves paths elsewhere
    Path("ids.csv").write_text(Path(services.ids_csv()).read_text())
    done = cli(services, "submit", "--table", "driver_stats", "--features", FEATURES,
               "--entities", "ids.csv", "--output", "out.parquet", "--wait", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["output"] == str(tmp_path / "out.parquet")
    assert [row["driver_id"] for row in pq.read_table("out.parquet").to_pylist()] == IDS
    assert not (_worker_cwd(services) / "out.parquet").exists()


def test_an_existing_relative_output_is_refused_at_submit(
        services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("out.csv").write_text("keep me")
    store = services.workers.redis()
    jobs_before = len(list(store.scan_iter("featurepull:job:*:meta")))
    refused = cli(services, "submit", *_lean(services), "--output", "out.csv", "--wait")
    assert refused.exit_code == 2
    assert refused.stderr == (f"featurepull: error: {tmp_path / 'out.csv'} exists; pass "
                              "--overwrite to replace it\n")
    assert Path("out.csv").read_text() == "keep me"
    assert len(list(store.scan_iter("featurepull:job:*:meta"))) == jobs_before
    assert store.llen(services.workers.queue) == 0


def _idle_fleet(redis_server: RedisService, services: Services) -> Fleet:
    """A queue no worker consumes yet, in a Redis db the module's fleet does not use (no
    two living fleets share a db)."""
    idle = Fleet(redis_server, services.a.url)
    assert idle.db != services.workers.db
    return idle


def _idle_env(idle: Fleet) -> dict[str, str]:
    return {k: v for k, v in idle.env.items() if k.startswith("FEATUREPULL_")}


@pytest.mark.slow
def test_wait_without_a_worker_says_so_and_gives_up_at_the_timeout(
        redis_server: RedisService, services: Services) -> None:
    idle = _idle_fleet(redis_server, services)
    waited = CliRunner().invoke(main, ["submit", *_lean(services), "--wait", "--timeout", "7"],
                                env=_idle_env(idle), catch_exceptions=False)
    assert waited.exit_code == 1, waited.output
    job_id = waited.stderr.split("job ", 1)[1].split(":", 1)[0]
    assert (f"featurepull: job {job_id} is still queued after 5s and no worker consumes queue "
            f"'{idle.queue}' on redis://127.0.0.1:{redis_server.port}/{idle.db}: start one "
            "with `featurepull worker`, with the same FEATUREPULL_REDIS_URL and jobs.queue "
            f"(FEATUREPULL_JOBS__QUEUE={idle.queue}); still waiting") in waited.stderr
    assert waited.stderr.endswith(
        f"featurepull: failed: job {job_id} still queued after 7s (0/1 shards done; no worker "
        f"consumes queue '{idle.queue}'); cancelled it (shards not started are skipped)\n")
    status = CliRunner().invoke(main, ["status", job_id, "--json"], env=_idle_env(idle))
    assert json.loads(status.stdout)["state"] == "cancelled"
    idle.stop()  # empties its db: the queued shard and the job's keys


@pytest.mark.slow
def test_wait_goes_on_when_a_worker_starts_later(redis_server: RedisService,
                                                 services: Services, tmp_path: Path) -> None:
    idle = _idle_fleet(redis_server, services)
    out = tmp_path / "late.parquet"
    submitting = subprocess.Popen(
        [sys.executable, "-m", "featurepull", "submit", *_lean(services), "--output", str(out),
         "--wait", "--json"], env={**os.environ, **_idle_env(idle)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert submitting.stderr is not None
        seen, deadline = "", time.monotonic() + 60
        with selectors.DefaultSelector() as selector:
            selector.register(submitting.stderr, selectors.EVENT_READ)
            while "no worker consumes queue" not in seen and time.monotonic() < deadline:
                if selector.select(timeout=1):
                    seen += submitting.stderr.readline()
        assert f"no worker consumes queue '{idle.queue}'" in seen
        idle.start_worker(concurrency=1)
        stdout, stderr = submitting.communicate(timeout=60)
    finally:
        if submitting.poll() is None:
            submitting.kill()
        idle.stop()
    assert submitting.returncode == 0, seen + stderr
    assert json.loads(stdout)["rows_written"] == len(IDS)
    assert [row["driver_id"] for row in pq.read_table(out).to_pylist()] == IDS


@pytest.mark.parametrize("command", ["submit", "status"])
def test_unreachable_redis_is_a_run_failure(tmp_path: Path, command: str) -> None:
    args = (["submit", "--table", "driver_stats", "--features", FEATURES, "--entities",
             str(tmp_path / "ids.csv")] if command == "submit" else ["status", "some-job"])
    with refused_port() as port:
        url = f"redis://:hunter2@127.0.0.1:{port}/0"
        failed = CliRunner().invoke(main, [*args, "--redis-url", url], catch_exceptions=False)
    assert failed.exit_code == 1
    assert failed.stderr.startswith(
        f"featurepull: failed: cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (")
    assert "hunter2" not in failed.output


# Numbers as DynamoDB holds them (N text) in a plain-layout table, one item per user; with
# shards of 100 rows the first shard's "mixed" values are all integral (an int64 part) and
# the second's are not (a double part), so the finisher widens one part as `pull` types the
# whole column; the third holds a missing key. Real DynamoDB refuses NaN and Infinity in an N attribute and keeps no -0;
# those are Feast doubles (below).
NUMBERS = {
    "mixed": ["1", "2", "-3", "-0", "1.5", "0.1", "1.5E+17", "1E-7", "-2.25E-30",
              "123456789.123456789123456789"],
    "big": [str(2**53 + 1), str(2**63 - 1), str(-(2**63)), "12345678901234567", "0", "-1",
            "9007199254740992", "1E+18", "42", str(2**62)],
    "digits": ["0.12345678901234567890123456789012345678",
               "3.1415926535897932384626433832795028841", "-0.000001234567890123456789",
               "1E-129", "1E+100", "0.5", "2.5E-5",
               "1.000000000000000000000000000000000001", "77.7", "6.02214076E+23"],
}
# Feast doubles: what a DynamoDB number cannot hold, and the float texts' edges.
DOUBLES = [-0.0, math.nan, math.inf, -math.inf, 1.0, 1e16, 1e-5, 5e-324, 0.1,
           1.7976931348623157e308, 9.999999999999999e15, 1e-4, 2.5e-7, 123456.789, -1e22,
           2.2250738585072014e-308]


@pytest.fixture(scope="module")
def number_tables(services: Services, ddb: Any) -> tuple[list[str], list[str]]:
    """Flags reading the plain numbers table and the Feast doubles view (both in moto)."""
    users = [f"n{n:02d}" for n in range(len(NUMBERS["mixed"]))]
    plain = moto_table(ddb, "nums", [("user_id", "S")], [
        {"user_id": {"S": user}, **{name: {"N": values[n]} for name, values in NUMBERS.items()}}
        for n, user in enumerate(users)])
    doubles = unique_name("dbl")
    create_feast_table(ddb, f"{services.project}.{doubles}")
    ts = datetime(2026, 3, 1, tzinfo=UTC)
    write_feast_rows(ddb, f"{services.project}.{doubles}",
                     [({"driver_id": ("int64", d)}, ts, {"x": ("double_val", value)})
                      for d, value in enumerate(DOUBLES)])
    common = ["--endpoint-url", services.moto.url, "--shard-size", "100"]
    user_rows = _in_three_shards(users, integral=4)
    driver_rows = _in_three_shards(list(map(str, range(len(DOUBLES)))), integral=5)
    return ([*common, "--layout", "plain", "--table", plain, "--features", ",".join(NUMBERS),
             "--entities", services.file("nums.csv", "\n".join(["user_id", *user_rows, ""]))],
            [*common, "--project", services.project, "--table", doubles, "--features", "x",
             "--entities", services.file("dbl.csv", "\n".join(["driver_id", *driver_rows,
                                                                   "99", ""]))])


def _in_three_shards(ids: list[str], integral: int) -> list[str]:
    """100 rows of the first `integral` ids, 100 of all ids in turn (in order first),
    then a missing one and the first: three shards of 100."""
    return [*(ids[n % integral] for n in range(100)), *(ids[n % len(ids)] for n in range(100)),
            "n99" if ids[0].startswith("n") else "99", ids[0]]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("table", ["plain numbers", "feast doubles"])
def test_pull_and_submit_write_the_same_text_bytes(services: Services, tmp_path: Path,
                                                   number_tables: tuple[list[str], list[str]],
                                                   fmt: str, table: str) -> None:
    args = number_tables[0] if table == "plain numbers" else number_tables[1]
    pulled, submitted = tmp_path / f"pulled.{fmt}", tmp_path / f"submitted.{fmt}"
    pull_args = [arg for arg in args if arg not in ("--shard-size", "100")]
    assert cli(services, "pull", *pull_args, "--output", str(pulled)).exit_code == 0
    done = cli(services, "submit", *args, "--output", str(submitted), "--wait", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["shards"] == 3
    assert submitted.read_bytes() == pulled.read_bytes()
    # The text follows the column's type, as the Parquet output's: an int among floats is
    # written as the float it is in a double column; an int64 column keeps every digit.
    text = pulled.read_text()
    if table == "plain numbers":
        if fmt == "csv":
            parquet = tmp_path / "pulled.parquet"
            assert cli(services, "pull", *pull_args, "--output", str(parquet)).exit_code == 0
            assert [str(pq.read_schema(parquet).field(name).type) for name in NUMBERS] == [
                "double", "int64", "double"]
        rows = ([line.split(",") for line in text.splitlines()[1:]] if fmt == "csv" else
                [list(map(str, json.loads(line, parse_float=str, parse_int=str).values()))
                 for line in text.splitlines()])
        assert [row[2] for row in rows[100:108]] == [
            "1.0", "2.0", "-3.0", "0.0", "1.5", "0.1", "1.5e+17", "1e-07"]
        assert [row[3] for row in rows[100:104]] == [str(2**53 + 1), str(2**63 - 1),
                                                     str(-(2**63)), "12345678901234567"]
        # More digits than a double holds: the double's shortest text, in both paths.
        assert [row[4] for row in rows[100:110]] == [repr(float(number)) for number in
                                                     NUMBERS["digits"]]
    else:
        values = [line.rsplit(",", 1)[1] if fmt == "csv" else line.rsplit(":", 1)[1][:-1]
                  for line in text.splitlines()[1 if fmt == "csv" else 0:]]
        assert values[100:100 + len(DOUBLES)] == [
            repr(value) if fmt == "csv" or math.isfinite(value) else "null"
            for value in DOUBLES]


def test_an_int_a_double_would_change_beside_floats(services: Services, ddb: Any,
                                                    tmp_path: Path) -> None:
    # No Parquet column holds 2**53 + 1 and 1.5: pull writes each value as it is, a job
    # (whose shards stage Parquet) fails naming the column; neither rounds the int.
    table = moto_table(ddb, "wide", [("user_id", "S")], [
        {"user_id": {"S": "a"}, "v": {"N": str(2**53 + 1)}},
        {"user_id": {"S": "b"}, "v": {"N": "1.5"}}, {"user_id": {"S": "c"}, "v": {"N": "1"}}])
    args = ["--endpoint-url", services.moto.url, "--layout", "plain", "--table", table,
            "--features", "v", "--entities", services.file("wide.csv", "user_id\na\nb\nc\n")]
    pulled = cli(services, "pull", *args, "--output", str(tmp_path / "p.csv"))
    assert pulled.exit_code == 0, pulled.output
    assert [line.rsplit(",", 1)[1] for line in
            (tmp_path / "p.csv").read_text().splitlines()] == ["v", str(2**53 + 1), "1.5", "1"]
    submitted = cli(services, "submit", *args, "--output", str(tmp_path / "s.csv"), "--wait")
    assert submitted.exit_code != 0 and not (tmp_path / "s.csv").exists()
    assert "feature column 'v'" in submitted.stderr and str(2**53 + 1) in submitted.stderr
