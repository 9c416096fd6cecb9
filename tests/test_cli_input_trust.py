"""`featurepull pull` on input that used to give wrong or silently empty results with exit 0,
or errors that did not name the problem (issue 18, items 3, 4, 8 and 9): a real process
against a real HTTP DynamoDB (moto)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.csv as pcsv
import pytest

from tests.conftest import unique_name
from tests.feast_writer import create_feast_table, entity_id, write_feast_rows
from tests.test_cli_pull import leftovers, run_pull

TS = datetime(2026, 3, 1, tzinfo=UTC)
# Feast doubles a strict JSON parser cannot take as they are.
NON_FINITE = {1: math.nan, 2: math.inf, 3: -math.inf}
FAR_FUTURE = 10**15  # Unix seconds: year ~31.7 million
BIG = 123456789012345678901234567890  # 30 digits: a DynamoDB number, not an int64


@pytest.fixture(scope="module")
def project(ddb: Any) -> str:
    """A Feast view `drivers` (ids 1-40, int64 key) and plain tables keyed by N and S."""
    name = unique_name("trust")
    create_feast_table(ddb, f"{name}.drivers")
    rows = []
    for driver in range(1, 41):
        features = {"score": ("double_val", NON_FINITE.get(driver, driver / 4)),
                    "tier": ("string_val", f"t{driver % 3}"),
                    "seen": ("unix_timestamp_val", FAR_FUTURE if driver == 5 else 1_700_000_000)}
        rows.append(({"driver_id": ("int64", driver)}, TS, features))
    write_feast_rows(ddb, f"{name}.drivers", rows)
    ddb.create_table(TableName=f"{name}.nums", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "N"}])
    ddb.put_item(TableName=f"{name}.nums", Item={
        "k": {"N": "1"}, "event_ts": {"S": "yesterday"}, "big": {"N": str(BIG)}})
    ddb.put_item(TableName=f"{name}.nums", Item={"k": {"N": "100"}, "big": {"N": "7"}})
    return name


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def pull(endpoint: str, project: str, tmp_path: Path, entities: str, *args: str,
         suffix: str = ".csv", output: str = "out.csv") -> Any:
    path = tmp_path / f"entities{suffix}"
    path.write_text(entities)
    return run_pull(endpoint, "--project", project, "--table", "drivers", "--features",
                    "score,tier", "--entities", str(path), "--output", str(tmp_path / output),
                    *args)


def refused(proc: Any, tmp_path: Path, *phrases: str) -> None:
    assert proc.returncode == 2, proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr, (phrase, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path) == []


# --- 3. CSV key inference --------------------------------------------------------------


@pytest.mark.parametrize("other", ["abc", "99999999999999999999", "1.0", "-0", "007", "1_00"])
def test_csv_key_column_mixing_integers_and_text_is_refused(
        endpoint_url: str, project: str, tmp_path: Path, other: str) -> None:
    # Typed string, driver 1 would be hashed as the text "1": found=0, exit 0.
    proc = pull(endpoint_url, project, tmp_path, f"driver_id\n1\n{other}\n")
    refused(proc, tmp_path, "entities.csv: column 'driver_id' mixes integers (line 2: '1') "
            f"and other text (line 3: {other!r})", "--join-key-types driver_id=int64",
            "driver_id=string")


def test_declared_key_type_settles_a_mixed_column(endpoint_url: str, project: str,
                                                  tmp_path: Path) -> None:
    proc = pull(endpoint_url, project, tmp_path, "driver_id\n1\n007\n", "--join-key-types",
                "driver_id=int64", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["found"] == 2  # 007 read as driver 7
    # int() takes "1_00" as 100; an int64 join key written so is refused with its row.
    (tmp_path / "out.csv").unlink()
    proc = pull(endpoint_url, project, tmp_path, "driver_id\n1\n1_00\n", "--join-key-types",
                "driver_id=int64")
    refused(proc, tmp_path, "entity row 2, column 'driver_id': '1_00' is not an integer")


def test_nothing_found_warns_naming_the_key_columns_and_types(
        endpoint_url: str, project: str, tmp_path: Path) -> None:
    # An extra column without --join-keys becomes a join key: no entity matches.
    entities = "driver_id,region\n1,eu\n2,us\n"
    proc = pull(endpoint_url, project, tmp_path, entities, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["found"] == 0
    warning = ("featurepull: warning: 0 of 2 entities were found in table "
               f"{project}.drivers; their keys were built from the join keys driver_id "
               "(int64), region (string)")
    assert warning in proc.stderr
    assert "--join-keys" in proc.stderr
    assert summary["warnings"] == [proc.stderr.split("featurepull: warning: ")[1].strip()]
    proc = pull(endpoint_url, project, tmp_path, entities, "--join-keys", "driver_id",
                "--json", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["found"] == 2
    assert "warning" not in proc.stderr


# --- 4. non-finite doubles in text outputs ------------------------------------------------


def test_jsonl_output_of_nan_and_infinity_is_strict_json(endpoint_url: str, project: str,
                                                          tmp_path: Path) -> None:
    proc = pull(endpoint_url, project, tmp_path, "driver_id\n1\n2\n3\n4\n", output="out.jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=_no_constants) for line in lines]
    assert [r["score"] for r in records] == [None, None, None, 1.0]
    assert [r["tier"] for r in records] == ["t1", "t2", "t0", "t1"]


def test_csv_output_of_nan_and_infinity_reads_back_as_floats(
        endpoint_url: str, project: str, tmp_path: Path) -> None:
    proc = pull(endpoint_url, project, tmp_path, "driver_id\n1\n2\n3\n4\n")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out.csv").read_text().splitlines()
    fields = [line.split(",")[2] for line in text[1:]]
    assert fields == ["nan", "inf", "-inf", "1.0"]
    assert math.isnan(float(fields[0])) and list(map(float, fields[1:])) == [
        math.inf, -math.inf, 1.0]
    # pyarrow reads the column as doubles ("nan" is among its default null spellings).
    scores = pcsv.read_csv(tmp_path / "out.csv").column("score")
    assert str(scores.type) == "double"
    assert scores.to_pylist() == [None, math.inf, -math.inf, 1.0]


# --- 8. errors that name the problem ------------------------------------------------------


def test_plain_event_ts_that_is_not_a_date_names_attribute_key_and_fix(
        endpoint_url: str, project: str, tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("k\n100\n1\n")
    args = ["--layout", "plain", "--table", f"{project}.nums", "--features", "big",
            "--entities", str(entities), "--output", str(tmp_path / "out.jsonl")]
    proc = run_pull(endpoint_url, *args)
    assert proc.returncode == 1, proc.stderr
    assert (f"table {project}.nums" in proc.stderr
            and "the item of key 1 (entity row 2): attribute 'event_ts' holds 'yesterday', "
            "which is not a date-time" in proc.stderr)
    assert "--event-ts-attribute ''" in proc.stderr
    assert leftovers(tmp_path) == []
    proc = run_pull(endpoint_url, *args, "--event-ts-attribute", "")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows == [{"k": 100, "event_timestamp": None, "big": 7},
                    {"k": 1, "event_timestamp": None, "big": BIG}]


def test_unix_timestamp_out_of_range_names_feature_and_key(
        endpoint_url: str, project: str, tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n4\n5\n")
    proc = run_pull(endpoint_url, "--project", project, "--table", "drivers", "--features",
                    "tier,seen", "--entities", str(entities), "--output",
                    str(tmp_path / "out.csv"))
    assert proc.returncode == 1, proc.stderr
    key = entity_id({"driver_id": ("int64", 5)})
    assert (f"the item of key {key} (entity row 2): feature 'seen': Unix timestamp "
            f"{FAR_FUTURE} (seconds) is outside the dates" in proc.stderr), proc.stderr
    assert "leave the feature out of --features" in proc.stderr
    assert leftovers(tmp_path) == []


def test_integer_beyond_64_bits_to_parquet_names_column_value_and_fix(
        endpoint_url: str, project: str, tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("k\n1\n")
    proc = run_pull(endpoint_url, "--layout", "plain", "--table", f"{project}.nums",
                    "--features", "big", "--event-ts-attribute", "", "--entities",
                    str(entities), "--output", str(tmp_path / "out.parquet"))
    refused(proc, tmp_path, f"out.parquet: feature column 'big' holds {BIG} (row 1), an "
            "integer too large for 64 bits", "write .jsonl or .csv")


@pytest.mark.parametrize("value,problem", [
    ("1e126", "outside DynamoDB's number range"),
    ("-1E+126", "outside DynamoDB's number range"),
    ("1e-131", "outside DynamoDB's number range"),
    ("1_00", "'1_00' is not a number as DynamoDB writes one"),
])
def test_plain_number_key_outside_dynamodb_numbers_is_refused_with_its_row(
        endpoint_url: str, project: str, tmp_path: Path, value: str, problem: str) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text(f"k\n1\n{value}\n")
    proc = run_pull(endpoint_url, "--layout", "plain", "--table", f"{project}.nums",
                    "--features", "big", "--event-ts-attribute", "", "--entities",
                    str(entities), "--output", str(tmp_path / "out.csv"))
    refused(proc, tmp_path, "entities.csv, entity row 2, column 'k'", problem)


def test_smallest_and_largest_dynamodb_numbers_are_keys(endpoint_url: str, project: str,
                                                        tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("k\n1e-130\n-9.9999999999999999999999999999999999999E+125\n0\n")
    proc = run_pull(endpoint_url, "--layout", "plain", "--table", f"{project}.nums",
                    "--features", "big", "--event-ts-attribute", "", "--entities",
                    str(entities), "--output", str(tmp_path / "out.csv"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["missing"] == 3


def test_jsonl_key_holding_an_object_names_line_and_column(
        endpoint_url: str, project: str, tmp_path: Path) -> None:
    proc = pull(endpoint_url, project, tmp_path, '{"driver_id": 1}\n{"driver_id": {"id": 2}}\n',
                suffix=".jsonl")
    refused(proc, tmp_path, "entities.jsonl: no column can hold entity keys ('driver_id' "
            "holds a JSON object on line 2)")
    proc = pull(endpoint_url, project, tmp_path, '{"driver_id": {"id": 2}, "n": 1}\n',
                "--join-keys", "driver_id", suffix=".jsonl")
    refused(proc, tmp_path, "entities.jsonl: column 'driver_id' holds a JSON object on line 1, "
            "so it cannot be a join key")


def test_extra_float_column_is_offered_join_keys_not_key_types(
        endpoint_url: str, project: str, tmp_path: Path) -> None:
    proc = pull(endpoint_url, project, tmp_path, '{"driver_id": 1, "weight": 0.5}\n',
                suffix=".jsonl")
    refused(proc, tmp_path, "column 'weight' holds floats, which no Feast join key can hold",
            "--join-keys driver_id")
    assert "--join-key-types" not in proc.stderr
    # Named as a join key, the column's type is what is wrong: then the hint is the type.
    proc = pull(endpoint_url, project, tmp_path, '{"driver_id": 1.0}\n', suffix=".jsonl")
    refused(proc, tmp_path, "--join-key-types driver_id=int64")


# --- 9. minor -----------------------------------------------------------------------------


def test_blank_csv_line_is_refused_not_dropped(endpoint_url: str, project: str,
                                               tmp_path: Path) -> None:
    proc = pull(endpoint_url, project, tmp_path, "driver_id\n1\n\n2\n")
    refused(proc, tmp_path, "entities.csv: line 3 is blank", "delete the blank line")


def test_feast_class_path_as_online_store_type_is_accepted(
        endpoint_url: str, project: str, tmp_path: Path) -> None:
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text(f"project: {project}\nregistry: data/registry.db\nprovider: aws\n"
                    "online_store:\n"
                    "  type: feast.infra.online_stores.dynamodb.DynamoDBOnlineStore\n"
                    "  region: us-east-1\n")
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n7\n")
    proc = run_pull(endpoint_url, "--feature-store-yaml", str(yaml), "--table", "drivers",
                    "--features", "tier", "--entities", str(entities), "--output",
                    str(tmp_path / "out.jsonl"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out.jsonl").read_text())["tier"] == "t1"
