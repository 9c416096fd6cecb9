"""Session-wide real services: a local DynamoDB/S3 endpoint (moto server) and a private
redis-server, each a real process on a free port, stopped at the end of the session."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import boto3
import pytest

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.local import MotoService, RedisService, start_moto, start_redis
from featurepull.local import service_port as service_port  # tests import it from here
from tests.shared_services import FAST_DRIVERS as FAST_DRIVERS
from tests.shared_services import FAST_TABLE as FAST_TABLE
from tests.shared_services import shared

# moto accepts any credentials; these keep boto3 from looking for real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _name in list(os.environ):
    if _name.startswith("FEATUREPULL_"):
        del os.environ[_name]

REGION = "us-east-1"


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where a connection is refused for the length of the block: bound,
    never listening, so nothing else can start listening there meanwhile."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under mutmut (scripts/mutation.sh), which names a mutant's tests in no set order and
    stops at the first failure: the tests marked ``mutation_first`` (in-process, fast, and
    strong) first, then each file's tests together in file order, so a module's endpoint or
    moto server starts once, and only when no faster test has killed the mutant yet."""
    if "MUTANT_UNDER_TEST" not in os.environ:
        return
    items.sort(key=lambda item: (item.get_closest_marker("mutation_first") is None,
                                 str(item.path), item.location[1] or 0))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoService]:
    running = shared("moto")
    if running is not None:  # started once for many sessions (tests/shared_services.py)
        yield running
        return
    service = start_moto()  # on a service_port(), another if that one is taken meanwhile
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisService]:
    running = shared("redis")
    if running is not None:  # started once for many sessions (tests/shared_services.py)
        yield running
        return
    service = start_redis()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def fast_dynamo() -> Iterator[EndpointProcess]:
    """200,000 Feast-layout drivers behind a lean BatchGetItem endpoint, for the whole
    session (tests/tasks/conftest.py re-exports it for the modules that import it there)."""
    running = shared("fast_dynamo")
    if running is not None:  # started once for many sessions (tests/shared_services.py)
        yield running
        return
    with start_endpoint(drivers=FAST_DRIVERS, table=FAST_TABLE) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def cli_endpoint() -> Iterator[EndpointProcess]:
    """1,000 Feast-layout drivers in table ``cli.drivers``, for the in-process command-line
    and reader tests; one per session, as each start costs seconds and mutation runs start a session
    per mutant. Tests that count its ``/stats`` reset them first."""
    with start_endpoint(drivers=1_000, table="cli.drivers") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def endpoint_url(moto_server: MotoService) -> str:
    return moto_server.url


@pytest.fixture(scope="session")
def ddb(endpoint_url: str) -> Any:
    """A plain boto3 DynamoDB client on the test endpoint, for building tables."""
    return boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=REGION)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60,
               every_s: float = 0.05) -> Any:
    """Poll ``check`` every ``every_s`` until it returns something truthy, and return that;
    fail naming ``what`` was awaited once ``timeout`` seconds have passed (a deadline, not a
    sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(every_s)
    return value


def without_aws_settings(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` without what boto3 and botocore would read from it: AWS_* and BOTO*
    variables, proxies, REQUESTS_CA_BUNDLE (a test then sets the ones it means)."""
    return {name: value for name, value in environment.items()
            if not name.upper().startswith(("AWS_", "BOTO"))
            and not name.lower().endswith("_proxy") and name != "REQUESTS_CA_BUNDLE"}


def unique_name(prefix: str) -> str:
    """A table or project name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def moto_table(ddb: Any, prefix: str, keys: Sequence[tuple[str, str]],
               items: Iterable[Mapping[str, Any]] = ()) -> str:
    """A new on-demand table named ``prefix`` + a unique part, keyed by ``keys`` — (attribute,
    type) pairs: the hash key, then the range key if any — holding ``items`` (written 25 at
    a time, as BatchWriteItem takes them)."""
    name = unique_name(prefix)
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": attribute, "KeyType": kind}
                   for (attribute, _), kind in zip(keys, ("HASH", "RANGE"), strict=False)],
        AttributeDefinitions=[{"AttributeName": attribute, "AttributeType": kind}
                              for attribute, kind in keys])
    puts = [{"PutRequest": {"Item": dict(item)}} for item in items]
    for start in range(0, len(puts), 25):
        ddb.batch_write_item(RequestItems={name: puts[start:start + 25]})
    return name


@pytest.fixture(scope="module")
def plain_table(ddb: Any) -> str:
    """A plain table on moto: user (S) key, a plan, visits and two time attributes that
    disagree (the `pull` tests of --layout plain and --event-ts-attribute)."""
    return moto_table(ddb, "plainflags", [("user", "S")], [
        {"user": {"S": f"u{i}"}, "plan": {"S": f"p{i}"}, "visits": {"N": str(10 * i)},
         "event_ts": {"S": f"2026-01-0{i + 1}T00:00:00+00:00"},
         "updated_at": {"N": str(1_780_000_000 + i)}} for i in range(3)])


def dictionary_pages(path: str | os.PathLike[str]) -> dict[str, set[bool]]:
    """Whether each column's chunks in a Parquet file have a dictionary page (a set: one
    value when every row group agrees)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    pages: dict[str, set[bool]] = {}
    for group in map(meta.row_group, range(meta.num_row_groups)):
        for chunk in map(group.column, range(group.num_columns)):
            pages.setdefault(chunk.path_in_schema, set()).add(chunk.has_dictionary_page)
    return pages
