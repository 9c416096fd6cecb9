"""A key schema a job carries (``featurepull.dynamo.plan.carried_keys``): its shape checked,
and a BatchReader that takes it as checked (no DescribeTable) against the scripted stand-in
of tests/dynamo/test_transport.py, in this process: the read, a percentage budget (which
still needs the table's description), and a table keyed otherwise since (refused, or found
empty) named with what to do."""

from __future__ import annotations

import re
from typing import Any

import pytest

from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from featurepull.dynamo.errors import PermanentReadError, RequestError, TableError
from featurepull.dynamo.plan import CHECKED_KEYS, carried_keys, checked_keys
from tests.conftest import REGION
from tests.dynamo.test_transport import (  # noqa: F401
    TABLE,
    ScriptedEndpoint,
    expected_row,
    scripted,
    scripted_reader,
)

pytestmark = pytest.mark.mutation_first

LAYOUT = FeastLayout({"driver_id": "int64"})
DESCRIBE = "DynamoDB_20120810.DescribeTable"
BATCH_GET = "DynamoDB_20120810.BatchGetItem"
FEAST_KEYS = {"KeySchema": [{"AttributeName": "entity_id", "KeyType": "HASH"}],
              "AttributeDefinitions": [{"AttributeName": "entity_id", "AttributeType": "S"}]}


def fix(server: ScriptedEndpoint) -> str:
    """What a read under a carried schema adds to the error of a table keyed otherwise."""
    return (f"; its submitter found it keyed as the job reads it (table {TABLE} (region "
            f"{REGION}, endpoint {server.url}) now): recreated since, or the submitter's "
            "region or endpoint is not the workers'? Submit the job again to read the table "
            "as it is now")


def targets(server: ScriptedEndpoint) -> list[str]:
    return [headers["X-Amz-Target"] for headers, _ in server.requests]


def carrying(server: ScriptedEndpoint, **overrides: Any) -> BatchReader:
    values: dict[str, Any] = {"region": REGION, "endpoint_url": server.url,
                              "max_read_workers": 1, **overrides}
    return BatchReader(TABLE, LAYOUT, DynamoSettings(**values), seed=1, carried=FEAST_KEYS)


def test_a_reader_takes_the_carried_key_schema_without_describing_the_table(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    reader = carrying(scripted)
    for ids in ([1, 2, 301], [3]):
        result = reader.read(LAYOUT.keys_for({"driver_id": ids}), ["city"])
        assert result.rows == [(row[0], row[4]) if row else None
                               for row in map(expected_row, ids)]
    assert targets(scripted) == [BATCH_GET, BATCH_GET]
    assert reader.description == FEAST_KEYS


def test_a_carried_schema_the_layout_does_not_fit_is_refused_without_a_request(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    user = {"KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "user_id", "AttributeType": "S"}]}
    reader = BatchReader(TABLE, LAYOUT, DynamoSettings(region=REGION, endpoint_url=scripted.url),
                         carried=user)
    with pytest.raises(TableError, match=rf"^table {re.escape(TABLE)} is keyed by user_id"):
        reader.read(LAYOUT.keys_for({"driver_id": [1]}), ["city"])
    assert targets(scripted) == []


@pytest.mark.parametrize(("job", "ceiling"), [("50%", None), (None, "50%"), (10.0, "50%")])
def test_a_percentage_budget_describes_the_table_for_its_capacity(
        scripted: ScriptedEndpoint, job: float | str | None,  # noqa: F811
        ceiling: str | None) -> None:
    scripted.describe = "provisioned"  # 80 RCU/s
    reader = carrying(scripted, max_rcu_per_s=job,
                      table_budgets={TABLE: ceiling} if ceiling else {})
    result = reader.read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
    assert result.stats.budget_rcu_per_s == (10.0 if job == 10.0 else 40.0)
    assert targets(scripted) == [DESCRIBE, BATCH_GET]


def test_a_number_budget_needs_no_description(scripted: ScriptedEndpoint) -> None:  # noqa: F811
    result = carrying(scripted, max_rcu_per_s=25.0).read(
        LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
    assert result.stats.budget_rcu_per_s == 25.0
    assert targets(scripted) == [BATCH_GET]


def test_keys_refused_by_a_table_keyed_otherwise_since_name_it_and_the_fix(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    scripted.describe = "keyed-by-user"  # recreated after the job was planned
    scripted.script = ["bad-key"]  # as DynamoDB refuses keys of another schema
    with pytest.raises(TableError) as raised:
        carrying(scripted).read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
    assert str(raised.value) == (
        f"table {TABLE} is keyed by user_id HASH (S), but the feast layout needs entity_id "
        "HASH (S) as Feast's DynamoDB online store writes it; read this table with --layout "
        f"plain{fix(scripted)}")
    assert targets(scripted) == [BATCH_GET, DESCRIBE]


def test_a_refusal_of_a_table_keyed_as_carried_is_the_reads_own(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    scripted.script = ["bad-key"]
    reader = carrying(scripted)
    with pytest.raises(PermanentReadError, match="does not match the schema"):
        reader.read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
    assert targets(scripted) == [BATCH_GET, DESCRIBE]


def test_a_read_that_finds_nothing_looks_at_the_table_once(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # An emulator (moto) answers keys of another type with nothing: a read under a carried
    # schema that finds nothing describes the table before it is taken.
    reader = carrying(scripted)
    for _ in range(2):
        result = reader.read(LAYOUT.keys_for({"driver_id": [301, 302]}), ["city"])
        assert result.rows == [None, None]
    assert targets(scripted) == [BATCH_GET, DESCRIBE, BATCH_GET]  # it held: once
    scripted.requests.clear()
    scripted.describe = "keyed-by-user"
    with pytest.raises(TableError, match=re.escape(fix(scripted)) + "$"):
        carrying(scripted).read(LAYOUT.keys_for({"driver_id": [301]}), ["city"])
    assert targets(scripted) == [BATCH_GET, DESCRIBE]


def test_checked_keys_keeps_the_key_schema_and_its_attributes_only() -> None:
    description = {
        "TableName": TABLE, "ItemCount": 5, "TableSizeBytes": 900,
        "KeySchema": [{"AttributeName": "user", "KeyType": "HASH"},
                      {"AttributeName": "day", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "city", "AttributeType": "S"},
                                 {"AttributeName": "day", "AttributeType": "N"},
                                 {"AttributeName": "user", "AttributeType": "S"}],
        "GlobalSecondaryIndexes": [{"IndexName": "by_city"}]}
    keys = checked_keys(description)
    assert keys == {"KeySchema": description["KeySchema"],
                    "AttributeDefinitions": [{"AttributeName": "day", "AttributeType": "N"},
                                             {"AttributeName": "user", "AttributeType": "S"}]}
    assert carried_keys({CHECKED_KEYS: {TABLE: keys}}, TABLE) == keys


def test_a_spec_without_a_schema_for_the_table_carries_none() -> None:
    assert carried_keys({}, TABLE) is None
    assert carried_keys({CHECKED_KEYS: None}, TABLE) is None
    assert carried_keys({CHECKED_KEYS: {"other": FEAST_KEYS}}, TABLE) is None
    assert carried_keys({CHECKED_KEYS: {"other": FEAST_KEYS, TABLE: FEAST_KEYS}},
                        TABLE) == FEAST_KEYS


def _hash(name: Any = "entity_id", kind: Any = "HASH") -> dict[str, Any]:
    return {"AttributeName": name, "KeyType": kind}


def _type(name: Any = "entity_id", kind: Any = "S") -> dict[str, Any]:
    return {"AttributeName": name, "AttributeType": kind}


@pytest.mark.parametrize(("carried", "why"), [
    ([FEAST_KEYS], "checked_keys is not an object of table names"),
    ({1: FEAST_KEYS}, "checked_keys is not an object of table names"),
    ({TABLE: "entity_id"}, "it is not an object of KeySchema and AttributeDefinitions"),
    ({TABLE: {**FEAST_KEYS, "TableSizeBytes": 0}},
     "it is not an object of KeySchema and AttributeDefinitions"),
    ({TABLE: {"KeySchema": FEAST_KEYS["KeySchema"]}},
     "it is not an object of KeySchema and AttributeDefinitions"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": []}}, "its KeySchema is not a list of 1 or 2"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [_hash()] * 3}}, "its KeySchema is not a list of 1"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": {"entity_id": "HASH"}}}, "its KeySchema is not a"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": ["entity_id"]}},
     "an attribute is not an object of AttributeName and KeyType"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [{**_hash(), "Extra": 1}]}},
     "an attribute is not an object of AttributeName and KeyType"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [_hash(kind="SORT")]}},
     "an attribute's name or KeyType is not one DynamoDB has"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [_hash(name="")]}},
     "an attribute's name or KeyType is not one DynamoDB has"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [_hash(name="x" * 256)]}},
     "an attribute's name or KeyType is not one DynamoDB has"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [_hash(name=["entity_id"])]}},
     "an attribute's name or KeyType is not one DynamoDB has"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [_hash(kind="RANGE")]}},
     "its KeySchema is not a HASH key, then maybe a RANGE key"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [_hash(), _hash()]}},
     "its KeySchema is not a HASH key, then maybe a RANGE key"),
    ({TABLE: {**FEAST_KEYS, "KeySchema": [_hash(), _hash(kind="RANGE")],
              "AttributeDefinitions": [_type(), _type()]}},
     "its AttributeDefinitions are not its key attributes, once each"),
    ({TABLE: {**FEAST_KEYS, "AttributeDefinitions": [_type(kind="SS")]}},
     "an attribute's name or AttributeType is not one DynamoDB has"),
    ({TABLE: {**FEAST_KEYS, "AttributeDefinitions": [_type(name="user")]}},
     "its AttributeDefinitions are not its key attributes, once each"),
    ({TABLE: {**FEAST_KEYS, "AttributeDefinitions": [_type(), _type(name="day")]}},
     "its AttributeDefinitions are not its key attributes, once each"),
])
def test_a_malformed_carried_schema_is_refused_naming_the_table(carried: Any,
                                                                 why: str) -> None:
    with pytest.raises(RequestError) as raised:
        carried_keys({CHECKED_KEYS: carried}, TABLE)
    assert str(raised.value).startswith(
        f"the job's record carries a malformed key schema for table {TABLE} "
        f"(checked_keys: {why}")
    assert str(raised.value).endswith(
        "); it was not stored by featurepull's submit: submit the job again, or leave the "
        "field out to have the table described")


def test_a_carried_composite_schema_is_taken_as_given() -> None:
    keys = {"KeySchema": [_hash("user"), _hash("day", "RANGE")],
            "AttributeDefinitions": [_type("day", "N"), _type("user", "B")]}
    assert carried_keys({CHECKED_KEYS: {TABLE: keys}}, TABLE) == keys
