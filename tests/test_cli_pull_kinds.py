"""`featurepull pull` of a Feast-layout table holding one feature of every Feast 0.67 value
kind (written by the independent tests/feast_writer.py, pinned to Feast's own encoding in
tests/dynamo/test_feast_values_kinds.py): every kind arrives in the output with its value,
none silently null; a value that cannot be decoded fails the run naming feature and kind."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.conftest import unique_name
from tests.feast_kinds import SAMPLES
from tests.feast_writer import create_feast_table, write_feast_rows
from tests.test_cli_pull import leftovers, run_pull

KINDS = sorted(SAMPLES)
WRITTEN_AT = datetime(2026, 3, 1, tzinfo=UTC)
# Feast ZonedTimestamps (Unix seconds, zone) a datetime holds in UTC but not in their zone:
# 9999-12-31 22:59:59 UTC is in year 10000 at +05:00, 0001-01-01 01:00 UTC in year 0 at -05:00.
BEYOND_DATETIME = {4: (253_402_297_199, "+05:00"), 5: (-62_135_593_200, "-05:00")}
BEYOND_SHOWN = {4: "9999-12-31 22:59:59+00:00", 5: "0001-01-01 01:00:00+00:00"}


@pytest.fixture(scope="module")
def project(ddb: Any) -> str:
    """Drivers 1 and 2 hold every kind; driver 3 only a zoned timestamp in an unknown zone;
    drivers 4 and 5 (BEYOND_DATETIME) only one whose local time no datetime holds."""
    name = unique_name("kinds")
    create_feast_table(ddb, f"{name}.every_kind")
    every = {kind: (kind, SAMPLES[kind].writer) for kind in KINDS}
    write_feast_rows(ddb, f"{name}.every_kind", [
        ({"driver_id": ("int64", 1)}, WRITTEN_AT, every),
        ({"driver_id": ("int64", 2)}, WRITTEN_AT, every),
        ({"driver_id": ("int64", 3)}, WRITTEN_AT,
         {"zoned_timestamp_val": ("zoned_timestamp_val", (5, "Mars/Olympus_Mons"))}),
        *[({"driver_id": ("int64", driver)}, WRITTEN_AT,
           {"zoned_timestamp_val": ("zoned_timestamp_val", stamp)})
          for driver, stamp in BEYOND_DATETIME.items()],
    ])
    return name


def as_json(value: Any) -> Any:
    """What the JSONL sink promises to write: bytes as base64, datetimes as ISO 8601."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


def as_column(value: Any) -> Any:
    """The value as its Parquet column holds it, which is what text outputs write: maps in
    a list typed as one struct have every key of the list's maps (null where one lacks it);
    a value no Arrow type holds (a list mixing kinds) as it is."""
    try:
        return pa.array([value]).to_pylist()[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return value


def test_every_kind_is_pulled_with_its_value(endpoint_url: str, project: str,
                                             tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n2\n1\n")
    out = tmp_path / "features.jsonl"
    run_pull(endpoint_url, "--project", project, "--table", "every_kind", "--features",
             ",".join(KINDS), "--entities", str(entities), "--output", str(out),
             check_exit=0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["driver_id"] for row in rows] == [2, 1]
    for row in rows:
        for kind in KINDS:
            assert row[kind] == as_json(as_column(SAMPLES[kind].python)), kind
            assert row[kind] is not None or SAMPLES[kind].python is None, kind


def test_an_undecodable_value_fails_naming_feature_and_kind(endpoint_url: str, project: str,
                                                             tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n1\n3\n")
    out = tmp_path / "features.jsonl"
    proc = run_pull(endpoint_url, "--project", project, "--table", "every_kind",
                    "--features", "zoned_timestamp_val,uuid_val", "--entities", str(entities),
                    "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "feature 'zoned_timestamp_val'" in proc.stderr
    assert "zoned_timestamp_val has zone 'Mars/Olympus_Mons'" in proc.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("driver", sorted(BEYOND_DATETIME))
def test_a_zoned_time_beyond_the_years_a_datetime_holds_fails_naming_it(
        endpoint_url: str, project: str, tmp_path: Path, driver: int) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text(f"driver_id\n1\n{driver}\n")
    out = tmp_path / "features.parquet"
    proc = run_pull(endpoint_url, "--project", project, "--table", "every_kind",
                    "--features", "zoned_timestamp_val", "--entities", str(entities),
                    "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "(entity row 2): feature 'zoned_timestamp_val': zoned_timestamp_val " \
        f"{BEYOND_SHOWN[driver]} in zone {BEYOND_DATETIME[driver][1]!r} is a local time " \
        "outside the years 1 to 9999" in proc.stderr
    assert leftovers(tmp_path) == []
