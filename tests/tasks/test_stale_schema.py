"""A job carries its table's key schema as its submitter checked it, so its shards describe
nothing; a table recreated with other keys between the submit and a shard still fails the
read, naming the table and what to do, never reading wrong or silently empty rows. Real moto
(which answers keys of another type with nothing, and keys of another name with a bare
"Validation Exception"), real redis-server, the fault proxy counting DescribeTable requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.config import Settings
from featurepull.dynamo.errors import TableError
from featurepull.tasks import JobStore
from featurepull.tasks.create import create_job
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.shards import reset_process_state, run_shard
from tests.conftest import moto_table
from tests.faultproxy import FaultProxy

USERS = ["u0", "u1", "u2", "nobody"]


@pytest.fixture
def proxy(endpoint_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(endpoint_url) as running:
        yield running


def users_table(ddb: Any) -> str:
    return moto_table(ddb, "carried", [("user", "S")], [
        {"user": {"S": f"u{i}"}, "plan": {"S": f"p{i}"}} for i in range(3)])


def submitted(table: str, settings: Settings, store: JobStore, proxy: FaultProxy,
              tmp_path: Path) -> str:
    entities = tmp_path / "users.parquet"
    pq.write_table(pa.table({"user": USERS}), entities)
    request = JobRequest(table=table, layout="plain", features=["plan"],
                         event_ts_attribute="", entities=str(entities),
                         dynamodb={"endpoint_url": proxy.url})
    meta = create_job(request, settings, store)
    assert meta.shards == 1
    return meta.job_id


def recreate(ddb: Any, table: str, key: str, kind: str) -> None:
    ddb.delete_table(TableName=table)
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": key, "AttributeType": kind}])
    ddb.put_item(TableName=table, Item={key: {kind: "1"}, "plan": {"S": "new"}})


def test_a_shard_reads_the_table_its_submitter_described_without_describing_it(
        ddb: Any, settings: Settings, store: JobStore, proxy: FaultProxy,
        tmp_path: Path) -> None:
    table = users_table(ddb)
    job_id = submitted(table, settings, store, proxy, tmp_path)
    assert proxy.counts["describe_requests"] == 1  # the submitter's
    reset_process_state()  # as a pool process after its fork
    try:
        assert run_shard(job_id, 0, settings, store) is True
        assert proxy.counts["describe_requests"] == 1
        assert proxy.counts["batch_requests"] == 1
        assert [(r["user"], r["plan"]) for r in store.shard_rows(job_id, 0).to_pylist()] == [
            ("u0", "p0"), ("u1", "p1"), ("u2", "p2"), ("nobody", None)]
    finally:
        reset_process_state()


@pytest.mark.parametrize(("key", "kind", "keyed"), [
    ("user", "N", "user HASH (N)"),  # moto answers the S keys with nothing at all
    ("id", "S", "id HASH (S)"),  # moto refuses them: "Validation Exception"
])
def test_a_table_recreated_with_other_keys_after_the_submit_fails_the_shard_naming_it(
        ddb: Any, settings: Settings, store: JobStore, proxy: FaultProxy, tmp_path: Path,
        key: str, kind: str, keyed: str) -> None:
    table = users_table(ddb)
    job_id = submitted(table, settings, store, proxy, tmp_path)
    recreate(ddb, table, key, kind)
    reset_process_state()
    try:
        with pytest.raises(TableError) as raised:
            run_shard(job_id, 0, settings, store)
        assert str(raised.value) == (
            f"table {table} is keyed by {keyed}, not [('user', 'S')]; its submitter found it "
            f"keyed as the job reads it (table {table} (region us-east-1, endpoint "
            f"{proxy.url}) now): recreated since, or the submitter's region or endpoint is "
            "not the workers'? Submit the job again to read the table as it is now")
        # The read's one request, then the table described: nothing stored for the shard.
        assert (proxy.counts["batch_requests"], proxy.counts["describe_requests"]) == (1, 2)
        assert store.done_count(job_id) == 0
    finally:
        reset_process_state()
