"""A Feast-layout table of 20,000 drivers, written once per session by the independent
writer in tests/feast_writer.py, and the expected row of any driver id."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from featurepull.config import DynamoSettings
from tests.conftest import REGION, unique_name
from tests.feast_writer import create_feast_table, write_feast_rows

# Reserved word, dotted name, and a space: each must survive the projection expression.
FEATURES = ["conv.rate", "size", "trips today", "name", "ratings", "last_seen"]
PRESENT = 20_000
BASE_TS = datetime(2026, 1, 1, tzinfo=UTC)


def driver_features(driver: int) -> dict[str, tuple[str, object]]:
    """The stored features of one driver, a pure function of its id."""
    return {
        "conv.rate": ("double_val", driver / 7.0),
        "size": ("int64_val", driver * 3 - 5_000),
        "trips today": ("int32_val", driver % 97),
        "name": ("string_val", f"driver-{driver}-é"),
        "ratings": ("float_list_val", [1.5, driver % 5 + 0.25]),
        "last_seen": ("unix_timestamp_val", 1_700_000_000 + driver),
    }


def driver_event_ts(driver: int) -> datetime:
    return BASE_TS + timedelta(seconds=driver, microseconds=driver % 1000)


@dataclass(frozen=True)
class FeastTable:
    project: str
    view: str
    endpoint_url: str

    @property
    def name(self) -> str:
        return f"{self.project}.{self.view}"

    def settings(self, **overrides: Any) -> DynamoSettings:
        values: dict[str, Any] = {"region": REGION, "endpoint_url": self.endpoint_url,
                                  "retry_base_delay_s": 0.005, "retry_max_delay_s": 0.1}
        values.update(overrides)
        return DynamoSettings(**values)


@pytest.fixture(scope="session")
def drivers_table(ddb: Any, endpoint_url: str) -> FeastTable:
    table = FeastTable(unique_name("proj"), "driver_stats", endpoint_url)
    create_feast_table(ddb, table.name)
    rows = [({"driver_id": ("int64", d)}, driver_event_ts(d), driver_features(d))
            for d in range(PRESENT)]
    chunks = [rows[i:i + 1000] for i in range(0, len(rows), 1000)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda chunk: write_feast_rows(ddb, table.name, chunk), chunks))
    return table
