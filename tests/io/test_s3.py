"""s3:// entity files and outputs against a real S3 endpoint (moto's server mode)."""

from __future__ import annotations

import gc
import os
import re
import tempfile
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.config import S3Settings
from featurepull.io import (
    EntityFileError,
    OutputError,
    _s3,
    check_destination,
    open_sink,
    read_entities,
    rows_to_table,
    write_rows,
)
from featurepull.io._destinations import STAGING_DIR, OwnerMark, marked_by
from featurepull.io._formats import S3Location
from featurepull.io.rows import CHUNK_ROWS
from featurepull.local import start_moto
from tests.conftest import REGION, service_port, unique_name
from tests.io.conftest import FileSizeLimit

TS = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
KEYS: dict[str, list[Any]] = {"driver_id": [1001, 1002, 1001]}
ROWS: list[tuple[Any, ...] | None] = [(TS, 0.5, "a", [1, 2]), None, (TS, 0.5, "a", [1, 2])]
FEATURES = ["rate", "name", "tags"]
FORMATS = ["parquet", "csv", "jsonl"]


@pytest.fixture(scope="module")
def s3(endpoint_url: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)


@pytest.fixture(scope="module")
def settings(endpoint_url: str) -> S3Settings:
    return S3Settings(endpoint_url=endpoint_url, region=REGION)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_name("featurepull-")
    s3.create_bucket(Bucket=name)
    return name


def keys_in(s3: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def raises(error: type[Exception], *fragments: str) -> Any:
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in fragments)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


# --- entity files -------------------------------------------------------------------------

ENTITY_FILES = {
    "parquet": None,  # written with pyarrow below
    "csv": b"driver_id,city\n1003,Paris\n007,Lyon\n",
    "jsonl": b'{"driver_id": "1003", "city": "Paris"}\n{"driver_id": "007", "city": "Lyon"}\n',
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_entities_round_trip_through_s3(
    s3: Any, bucket: str, settings: S3Settings, tmp_path: Path, fmt: str
) -> None:
    local = tmp_path / f"entities.{fmt}"
    content = ENTITY_FILES[fmt]
    if content is None:
        pq.write_table(pa.table({"driver_id": ["1003", "007"], "city": ["Paris", "Lyon"]}), local)
    else:
        local.write_bytes(content)
    s3.upload_file(str(local), bucket, f"in/entities.{fmt}")
    uri = f"s3://{bucket}/in/entities.{fmt}"
    table = read_entities(uri, required=["driver_id"], s3=settings)
    assert table.source == uri
    assert table.columns == read_entities(str(local)).columns
    assert table.columns["driver_id"] == ["1003", "007"]
    # In CSV, 1003 is a plain integer and 007 is not: a column for --join-key-types to settle.
    key_type = "mixed" if fmt == "csv" else "string"
    assert table.types == {"driver_id": key_type, "city": "string"}


def test_entity_file_errors_name_the_s3_url(s3: Any, bucket: str, settings: S3Settings) -> None:
    s3.put_object(Bucket=bucket, Key="bad.csv", Body=b"id\n1,2\n")
    with raises(EntityFileError, f"s3://{bucket}/bad.csv: line 2 has 2 fields"):
        read_entities(f"s3://{bucket}/bad.csv", s3=settings)
    s3.put_object(Bucket=bucket, Key="empty.jsonl", Body=b"")
    with raises(EntityFileError, f"s3://{bucket}/empty.jsonl is empty"):
        read_entities(f"s3://{bucket}/empty.jsonl", s3=settings)
    s3.put_object(Bucket=bucket, Key="e.csv", Body=b"id\n1\n")
    with raises(EntityFileError, "required column(s) 'driver_id' not found"):
        read_entities(f"s3://{bucket}/e.csv", required=["driver_id"], s3=settings)


def test_missing_bucket_and_key_say_what_to_check(bucket: str, settings: S3Settings) -> None:
    missing = unique_name("featurepull-missing-")
    with raises(EntityFileError, f"s3://{missing}/e.csv", f"bucket {missing!r} does not exist",
                settings.endpoint_url or "", "check the bucket name"):
        read_entities(f"s3://{missing}/e.csv", s3=settings)
    with raises(EntityFileError, f"s3://{bucket}/no/such.parquet", "no such object",
                "check the key"):
        read_entities(f"s3://{bucket}/no/such.parquet", s3=settings)


def test_a_process_keeps_the_clients_of_its_latest_settings_only(
        s3: Any, bucket: str, endpoint_url: str) -> None:
    # One client per process and (endpoint, region), the CLIENTS_KEPT most recently used
    # kept: one dropped is garbage once its holder lets go; asked for again, it is new
    # and works.
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    where = S3Location(bucket, "k")
    regions = [f"eu-kept-{n}" for n in range(_s3.CLIENTS_KEPT + 1)]
    every = [S3Settings(endpoint_url=endpoint_url, region=region) for region in regions]
    held = _s3._client(every[0])
    for settings in every:
        assert _s3.get_bytes(where, settings) == b"kept"
    assert len(_s3._clients) == _s3.CLIENTS_KEPT
    assert (os.getpid(), endpoint_url, regions[0]) not in _s3._clients
    dropped = weakref.ref(held)
    del held
    gc.collect()
    assert dropped() is None
    assert _s3.get_bytes(where, every[0]) == b"kept"  # built again
    assert (os.getpid(), endpoint_url, regions[1]) not in _s3._clients  # dropped for it


@pytest.mark.parametrize("uri", ["s3://bucket-only", "s3://bucket-only/", "s3:///e.csv"])
def test_s3_url_without_bucket_or_key(uri: str) -> None:
    with raises(EntityFileError, uri, "needs a bucket and a key"):
        read_entities(uri)
    with raises(OutputError, uri, "needs a bucket and a key"):
        write_rows(uri, {"id": [1]}, [None], ["f"])


def test_unreachable_endpoint_names_it(bucket: str) -> None:
    nowhere = S3Settings(endpoint_url="http://127.0.0.1:9", region=REGION)
    with raises(EntityFileError, "cannot reach S3", "http://127.0.0.1:9", "check the endpoint"):
        read_entities(f"s3://{bucket}/e.csv", s3=nowhere)
    with raises(OutputError, "cannot reach S3", "http://127.0.0.1:9"):
        check_destination(f"s3://{bucket}/out.csv", s3=nowhere)


@pytest.fixture(scope="module")
def denying_endpoint() -> Iterator[str]:
    """A second moto server that checks credentials, and knows none of ours."""
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # read by the server process at start
    try:
        service = start_moto(port=service_port())
    finally:
        del os.environ["INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        yield service.url
    finally:
        service.stop()


def test_access_denied_says_what_to_check(denying_endpoint: str) -> None:
    denied = S3Settings(endpoint_url=denying_endpoint, region=REGION)
    with raises(EntityFileError, "s3://locked/e.parquet: access denied", "check the AWS credentials",
                "s3:GetObject"):
        read_entities("s3://locked/e.parquet", s3=denied)
    with raises(OutputError, "s3://locked/out.parquet: access denied", "s3:ListBucket"):
        write_rows("s3://locked/out.parquet", {"id": [1]}, [None], ["f"], s3=denied)


# --- outputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_rows_to_s3_matches_the_local_file(
    s3: Any, bucket: str, settings: S3Settings, tmp_path: Path, fmt: str
) -> None:
    uri = f"s3://{bucket}/out/features.{fmt}"
    assert write_rows(uri, KEYS, ROWS, FEATURES, s3=settings) == 3
    local = tmp_path / f"features.{fmt}"
    write_rows(str(local), KEYS, ROWS, FEATURES)
    body = s3.get_object(Bucket=bucket, Key=f"out/features.{fmt}")["Body"].read()
    if fmt == "parquet":
        downloaded = tmp_path / "downloaded.parquet"
        downloaded.write_bytes(body)
        assert pq.read_table(downloaded).equals(pq.read_table(local))
    else:
        assert body == local.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_open_sink_to_s3_uploads_on_exit(
    s3: Any, bucket: str, settings: S3Settings, tmp_path: Path, fmt: str
) -> None:
    table = rows_to_table(KEYS, ROWS, FEATURES)
    uri = f"s3://{bucket}/sink.{fmt}"
    with open_sink(uri, table.schema, s3=settings) as sink:
        sink.write(table.slice(0, 2))
        sink.write(table.slice(2))
        assert keys_in(s3, bucket) == []  # nothing is visible before the block completes
    assert sink.rows_written == 3
    assert keys_in(s3, bucket) == [f"sink.{fmt}"]
    downloaded = tmp_path / f"downloaded.{fmt}"
    downloaded.write_bytes(s3.get_object(Bucket=bucket, Key=f"sink.{fmt}")["Body"].read())
    if fmt == "parquet":
        assert pq.read_table(downloaded).equals(table.combine_chunks())
    else:
        local = tmp_path / f"local.{fmt}"
        write_rows(str(local), KEYS, ROWS, FEATURES)
        assert downloaded.read_bytes() == local.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_existing_object_is_refused_unless_overwrite(
    s3: Any, bucket: str, settings: S3Settings, fmt: str
) -> None:
    key = f"out.{fmt}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"keep me")
    uri = f"s3://{bucket}/{key}"
    with raises(OutputError, f"{uri} exists; pass --overwrite to replace it"):
        write_rows(uri, KEYS, ROWS, FEATURES, s3=settings)
    with raises(OutputError, f"{uri} exists"), open_sink(uri, pa.schema([]), s3=settings):
        pytest.fail("the block must not run")
    with raises(OutputError, f"{uri} exists"):
        check_destination(uri, False, settings)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"keep me"
    check_destination(uri, True, settings)
    write_rows(uri, KEYS, ROWS, FEATURES, overwrite=True, s3=settings)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() != b"keep me"


def test_object_created_while_writing_is_not_replaced(
    s3: Any, bucket: str, settings: S3Settings
) -> None:
    uri = f"s3://{bucket}/race.csv"
    table = rows_to_table(KEYS, ROWS, FEATURES)
    with raises(OutputError, f"{uri} exists"), open_sink(uri, table.schema, s3=settings) as sink:
        sink.write(table)
        s3.put_object(Bucket=bucket, Key="race.csv", Body=b"the other job's output")
    assert s3.get_object(Bucket=bucket, Key="race.csv")["Body"].read() == b"the other job's output"


def test_missing_bucket_is_refused_before_writing(settings: S3Settings) -> None:
    missing = unique_name("featurepull-missing-")
    uri = f"s3://{missing}/out.parquet"
    with raises(OutputError, uri, f"bucket {missing!r} does not exist", "create the bucket"):
        write_rows(uri, KEYS, ROWS, FEATURES, s3=settings)
    with raises(OutputError, f"bucket {missing!r} does not exist"), open_sink(
        uri, pa.schema([]), s3=settings
    ):
        pytest.fail("the block must not run")
    with raises(OutputError, f"bucket {missing!r} does not exist"):
        check_destination(uri, True, settings)


def test_a_failing_write_uploads_nothing(s3: Any, bucket: str, settings: S3Settings) -> None:
    total = CHUNK_ROWS + 10
    rows: list[tuple[Any, ...] | None] = [(TS, i) for i in range(total)]
    rows[-1] = (TS, "oops")  # noticed only while converting the second chunk, mid-write
    uri = f"s3://{bucket}/mixed.parquet"
    with raises(OutputError, uri, "feature column 'n'", f"str (row {total})"):
        write_rows(uri, {"id": list(range(total))}, rows, ["n"], s3=settings)
    # A shard whose column has another type than the output's: the stream fails mid-way.
    first = rows_to_table({"id": [1]}, [(TS, "a")], ["n"])
    second = rows_to_table({"id": [2]}, [(TS, 2)], ["n"])
    uri = f"s3://{bucket}/mixed.csv"
    with raises(OutputError, uri, "column 'n' is int64 in this table"), open_sink(
        uri, first.schema, s3=settings
    ) as sink:
        sink.write(first)
        sink.write(second)
    assert keys_in(s3, bucket) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_error_inside_the_sink_uploads_nothing(
    s3: Any, bucket: str, settings: S3Settings, fmt: str
) -> None:
    table = rows_to_table(KEYS, ROWS, FEATURES)
    with pytest.raises(RuntimeError, match="shard lost"), open_sink(
        f"s3://{bucket}/partial.{fmt}", table.schema, s3=settings
    ) as sink:
        sink.write(table)
        raise RuntimeError("shard lost")
    assert keys_in(s3, bucket) == []


def test_a_write_the_disk_refuses_names_the_temporary_directory(
    s3: Any, bucket: str, settings: S3Settings, file_size_limit: FileSizeLimit
) -> None:
    """An s3:// output is staged in the temporary directory: an OS error while writing it
    (a full disk; here a file size limit) names that directory, and nothing is uploaded;
    written a column at a time or row by row (an event time not in UTC)."""
    uri = f"s3://{bucket}/big.csv"
    for stamp in (TS, TS.astimezone(timezone(timedelta(hours=2)))):
        rows: list[tuple[Any, ...] | None] = [(stamp, "x" * 600)] * 2_000
        with file_size_limit(64 * 1024), pytest.raises(OutputError) as raised:
            write_rows(uri, {"id": list(range(2_000))}, rows, ["name"], s3=settings)
        assert str(raised.value) == (
            f"{uri}: cannot write the output (File too large); check that "
            f"{tempfile.gettempdir()} is writable and has free space")
        assert keys_in(s3, bucket) == []


def test_an_s3_dataset_prefix_holding_files_needs_overwrite(
    s3: Any, bucket: str, settings: S3Settings
) -> None:
    """An s3:// dataset output (a prefix ending in /) is refused when objects are under it,
    but an earlier run's staging, unless `overwrite`; the refusal names it and the fix."""
    path = f"s3://{bucket}/ds/"
    check_destination(path, s3=settings)  # nothing under it
    s3.put_object(Bucket=bucket, Key=f"ds/{STAGING_DIR}/part-0.parquet", Body=b"x")
    check_destination(path, s3=settings)  # only an earlier run's staging
    s3.put_object(Bucket=bucket, Key="ds/part-0.parquet", Body=b"x")
    with pytest.raises(OutputError) as refused:
        check_destination(path, s3=settings)
    assert str(refused.value) == (
        f"{path} already holds files; pass --overwrite to replace its dataset "
        "(part-*.parquet, _manifest.json, _SUCCESS), or name an empty or new directory")
    check_destination(path, True, settings)


def test_access_denied_to_a_dataset_or_an_owner_check_says_what_to_check(
    denying_endpoint: str
) -> None:
    denied = S3Settings(endpoint_url=denying_endpoint, region=REGION)
    with raises(OutputError, "s3://locked/ds/: access denied", "s3:ListBucket"):
        check_destination("s3://locked/ds/", s3=denied)
    with raises(OutputError, "s3://locked/out.csv: access denied", "s3:GetObject"):
        marked_by("s3://locked/out.csv", OwnerMark("job-1"), denied)
