"""Event times at the edges of Python's datetime range (years 1 and 9999), and past them in
UTC (a DynamoDB text such as 9999-12-31T23:00:00-05:00 is year 10000 in UTC), through
`featurepull pull` and a job's steps in this process (tests/tasks/test_jobs_in_process.py),
and once through a prefork worker: each output holds a time at the edges; a time past them
in UTC is refused as its item is read (before any format), by `pull` and a job alike,
naming the item's row, the attribute and its value, and nothing is written (a Parquet file
would hold it, but Python and pandas could not read it back).

A year outside 1 to 9999 cannot be read as such: `datetime.fromisoformat` refuses
"0000-…" and "10000-…", and Unix seconds past that range are refused by
`timestamp_from_seconds` (an item decode error), so only an offset can carry a time there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from featurepull.cli import main
from featurepull.client import JobFailed, submit
from featurepull.config import Settings
from featurepull.dynamo.errors import ReadError
from featurepull.dynamo.layouts import parse_event_ts
from featurepull.local import RedisService
from featurepull.tasks import JobStore
from featurepull.tasks.create import create_job
from featurepull.tasks.finish import finish_job
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.shards import run_shard
from tests.conftest import REGION, moto_table
from tests.feast_writer import create_feast_table, entity_id, feast_item
from tests.tasks.conftest import fleet

EDGES = {"first": "0001-01-01T00:00:00+00:00", "last": "9999-12-31T23:59:59.999999+00:00",
         "late": "0001-01-01T06:00:00+05:00"}  # year 1 in UTC too
BEYOND = {"year0": "0001-01-01T00:00:00+05:00",  # 0000-12-31T19:00 in UTC
          "year10000": "9999-12-31T23:00:00-05:00"}  # 10000-01-01T04:00 in UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def edge_table(ddb: Any) -> str:
    """A plain-layout table: user (S) -> updated_at (the texts above), plan."""
    return moto_table(ddb, "timeedges", [("user", "S")], [
        {"user": {"S": user}, "updated_at": {"S": text}, "plan": {"S": f"p-{user}"}}
        for user, text in {**EDGES, **BEYOND}.items()])


def micros(text: str) -> int:
    """The UTC microseconds of a time text, as Parquet stores it (no datetime past 9999)."""
    return (parse_event_ts(text) - EPOCH) // timedelta(microseconds=1)


def entities(tmp_path: Path, users: list[str]) -> Path:
    path = tmp_path / "users.csv"
    path.write_text("user\n" + "".join(f"{user}\n" for user in users))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_pull_writes_each_time_with_its_own_offset(edge_table: str, endpoint_url: str,
                                                   tmp_path: Path, fmt: str) -> None:
    texts = EDGES
    out = tmp_path / f"out.{fmt}"
    result = pull(edge_table, endpoint_url, tmp_path, [*texts], out)
    assert result.exit_code == 0, result.stderr
    if fmt == "parquet":
        table = pq.read_table(out)
        assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
        assert table.column("event_timestamp").cast(pa.int64()).to_pylist() == [
            micros(text) for text in texts.values()]
        return
    # isoformat() of the value as read: the offset it was stored with.
    written = [parse_event_ts(text).isoformat() for text in texts.values()]
    assert written == [*EDGES.values()]
    if fmt == "csv":
        assert lines(out) == ["user,event_timestamp,plan",
                              *(f"{u},{t},p-{u}" for u, t in zip(texts, written, strict=True))]
    else:
        assert lines(out) == [
            f'{{"user":"{u}","event_timestamp":"{t}","plan":"p-{u}"}}'
            for u, t in zip(texts, written, strict=True)]


def pull(edge_table: str, endpoint_url: str, tmp_path: Path, users: list[str], out: Path
         ) -> Any:
    """`featurepull pull` of `users` from the plain-layout edge table."""
    return CliRunner().invoke(main, [
        "pull", "--layout", "plain", "--table", edge_table, "--features", "plan",
        "--event-ts-attribute", "updated_at", "--entities", str(entities(tmp_path, users)),
        "--output", str(out), "--endpoint-url", endpoint_url, "--region", REGION],
        catch_exceptions=False)


def refusal(user: str, row: int) -> str:
    """What the read says of the item of `user`, entity row `row`, whose time is past the
    years 1 to 9999 in UTC."""
    return (f"the item of key {user} (entity row {row}): attribute 'updated_at' holds "
            f"'{BEYOND[user]}', a time outside the years 1 to 9999 in UTC: an output holding "
            "it could not be read back by Python or pandas; fix the value in the table, or "
            "pass --event-ts-attribute '' to read without one")


def run_job(settings: Settings, store: JobStore, edge_table: str, endpoint_url: str,
            tmp_path: Path, users: list[str], out: Path) -> dict[str, Any] | None:
    """A plain-layout job for `users`, its shards read and its output published here."""
    request = JobRequest(table=edge_table, layout="plain", features=["plan"],
                         event_ts_attribute="updated_at",
                         entities=str(entities(tmp_path, users)), output=str(out),
                         dynamodb={"endpoint_url": endpoint_url})
    meta = create_job(request, settings, store)
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
    return finish_job(meta.job_id, settings, store)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_job_writes_the_edges_in_utc(settings: Settings, store: JobStore, edge_table: str,
                                      endpoint_url: str, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    summary = run_job(settings, store, edge_table, endpoint_url, tmp_path, [*EDGES], out)
    assert summary is not None and summary["rows_written"] == len(EDGES)
    utc = ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59.999999+00:00",
           "0001-01-01T01:00:00+00:00"]
    if fmt == "parquet":
        assert pq.read_table(out).column("event_timestamp").cast(pa.int64()).to_pylist() == [
            micros(text) for text in EDGES.values()]
    elif fmt == "csv":
        assert lines(out)[1:] == [f"{u},{t},p-{u}" for u, t in zip(EDGES, utc, strict=True)]
    else:
        assert [line.split('"event_timestamp":')[1].split(",")[0] for line in lines(out)] == [
            f'"{t}"' for t in utc]


@pytest.mark.parametrize("user", list(BEYOND))
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])  # refused as read: before any format
def test_pull_and_a_job_refuse_a_utc_year_outside_1_to_9999(
        settings: Settings, store: JobStore, edge_table: str, endpoint_url: str,
        tmp_path: Path, fmt: str, user: str) -> None:
    """Before: `pull` wrote the local text to CSV and JSONL, a job refused it there (it
    writes UTC), and both wrote year 0 or 10000 to Parquet, which Arrow holds but
    to_pylist and pandas' datetime64[ns] cannot read."""
    out = tmp_path / f"out.{fmt}"
    users = ["first", "last", user]
    result = pull(edge_table, endpoint_url, tmp_path, users, out)
    assert result.exit_code == 1
    assert refusal(user, 3) in result.stderr
    assert not out.exists()
    with pytest.raises(ReadError) as refused:
        run_job(settings, store, edge_table, endpoint_url, tmp_path, users, out)
    assert refusal(user, 3) in str(refused.value)
    assert not out.exists()


FEAST_TIMES = {"ok": "9999-12-31 23:59:59+00:00", "past": "9999-12-31 23:00:00-05:00"}


@pytest.fixture(scope="module")
def feast_edges(ddb: Any) -> str:
    """A Feast-layout table ("edges" of project "timeedges"): user -> event_ts, plan."""
    name = "timeedges.edges"
    create_feast_table(ddb, name)
    for user, text in FEAST_TIMES.items():
        item = feast_item({"user": ("string", user)}, EPOCH, {"plan": ("string_val", user)})
        ddb.put_item(TableName=name, Item={**item, "event_ts": {"S": text}})
    return name


def test_a_feast_event_time_past_9999_in_utc_is_refused(
        feast_edges: str, settings: Settings, store: JobStore, endpoint_url: str,
        tmp_path: Path) -> None:
    """The Feast layout decodes an answer's event times as a column (layouts.event_times):
    its year-9999 text 5 hours west of UTC is refused there too, by `pull` and a job."""
    out = tmp_path / "out.jsonl"
    users = entities(tmp_path, ["ok", "past"])
    key = entity_id({"user": ("string", "past")})  # a Feast item is named by its entity_id
    said = (f"the item of key {key} (entity row 2): attribute 'event_ts' holds "
            f"'{FEAST_TIMES['past']}', a time outside the years 1 to 9999 in UTC")
    result = CliRunner().invoke(main, [
        "pull", "--project", "timeedges", "--table", "edges", "--features", "plan",
        "--entities", str(users), "--output", str(out), "--endpoint-url", endpoint_url,
        "--region", REGION], catch_exceptions=False)
    assert result.exit_code == 1
    assert said in result.stderr
    assert not out.exists()
    request = JobRequest(project="timeedges", table="edges", features=["plan"],
                         entities=str(users), output=str(out),
                         dynamodb={"endpoint_url": endpoint_url})
    meta = create_job(request, settings, store)
    with pytest.raises(ReadError) as refused:
        for shard in range(meta.shards):
            run_shard(meta.job_id, shard, settings, store)
    assert said in str(refused.value)
    assert not out.exists()


@pytest.mark.slow  # starts a worker
def test_through_a_worker_the_job_fails_naming_the_row(
        redis_server: RedisService, edge_table: str, endpoint_url: str, tmp_path: Path) -> None:
    users = entities(tmp_path, ["last", "year10000"])
    with fleet(redis_server, endpoint_url) as running:
        running.start_worker(concurrency=1)
        for fmt in ("jsonl", "parquet"):
            out = tmp_path / f"out.{fmt}"
            job = submit(edge_table, ["plan"], str(users), str(out), layout="plain",
                         event_ts_attribute="updated_at", settings=running.settings())
            with pytest.raises(JobFailed) as refused:
                job.wait(timeout=120, progress=False)
            assert refusal("year10000", 2) in str(refused.value)
            assert not out.exists()
