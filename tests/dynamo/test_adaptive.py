"""Adaptive concurrency against a table that runs out of capacity (the bench endpoint's
provisioned mode): throttling cuts the requests in flight, and the rows are still exact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from featurepull.bench.endpoint import EndpointProcess, expected_features, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from featurepull.dynamo.feast_values import decode_value
from tests.conftest import REGION

LAYOUT = FeastLayout({"driver_id": "int64"})
TABLE = "aimd.driver_stats"
DRIVERS = 3_000


@pytest.fixture(scope="module")
def small_table() -> Iterator[EndpointProcess]:
    """1,500 RCU/s with 0.2 s of burst: 3,000 keys (1,500 RCU) take about a second."""
    with start_endpoint(drivers=DRIVERS, table=TABLE, provisioned_rcu=1_500,
                        burst_s=0.2) as running:
        yield running


@pytest.mark.parametrize("adaptive", [True, False])
def test_throttling_cuts_the_requests_in_flight(small_table: EndpointProcess,
                                                adaptive: bool) -> None:
    settings = DynamoSettings(region=REGION, endpoint_url=small_table.url, max_read_workers=8,
                              retry_base_delay_s=0.01, retry_max_delay_s=0.2,
                              adaptive_concurrency=adaptive)
    reader = BatchReader(TABLE, LAYOUT, settings)
    result = reader.read(LAYOUT.keys_for({"driver_id": list(range(DRIVERS))}), ["city"])
    stats = result.stats
    assert stats.unprocessed_retries + stats.throttles > 0  # the table ran out
    assert stats.concurrency_max == 8
    if adaptive:
        assert 1 <= stats.concurrency_min < 8
    else:
        assert stats.concurrency_min == 8
    assert stats.budget_rcu_per_s == 0 and stats.budget_wait_s == 0
    assert [row[1] if row else None for row in result.rows] == [
        decode_value(expected_features(d)["city"]) for d in range(DRIVERS)]
