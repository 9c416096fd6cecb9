"""A throttle holds back new requests, observed at the endpoint with no clock: the fault proxy
holds every answer until the test decides, so what the reader sends after a throttle is
whatever it chose to send, however fast or loaded the machine is."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from featurepull.bench.endpoint import EndpointProcess
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout
from tests.conftest import REGION
from tests.faultproxy import FaultPlan, FaultProxy

LAYOUT = FeastLayout({"driver_id": "int64"})
TABLE = "cli.drivers"  # cli_endpoint's 1,000 drivers
FEATURES = ["conv_rate", "city"]
SLOTS = 4  # max_read_workers, fixed (no AIMD): a throttle frees a slot and nothing else does
THROTTLED = 3


def test_after_a_throttle_the_throttled_keys_go_before_any_new_key(
        cli_endpoint: EndpointProcess) -> None:
    # Four requests wait at the proxy; three are throttled. Each throttle frees one slot. A
    # reader that holds back new requests sends nothing until its back-off is over, and then
    # the throttled keys (due by then) before any key it never sent; one that does not hold
    # back fills the freed slots at once with new keys. Back-offs are up to 0.3 s, drawn
    # from a seeded generator (0.19, 0.22 and 0.24 s: far above the microseconds between a
    # throttle and the next send), so a reader that does not hold back cannot pass by luck.
    keys = LAYOUT.keys_for({"driver_id": list(range(1_000))})  # 10 requests of 100
    clean = BatchReader(TABLE, LAYOUT, DynamoSettings(
        region=REGION, endpoint_url=cli_endpoint.url)).read(keys, FEATURES)
    with FaultProxy(cli_endpoint.url, FaultPlan(hold=True)) as proxy, \
            ThreadPoolExecutor(1) as pool:
        settings = DynamoSettings(
            region=REGION, endpoint_url=proxy.url, max_read_workers=SLOTS,
            adaptive_concurrency=False, retry_base_delay_s=0.3, retry_max_delay_s=0.3,
            retry_deadline_s=60)
        reading = pool.submit(BatchReader(TABLE, LAYOUT, settings, seed=5).read, keys,
                              FEATURES)
        first = proxy.wait_held(SLOTS)
        throttled = proxy.throttle_held(THROTTLED)
        then = proxy.wait_held(SLOTS)  # the one still held, then what came after the throttles
        proxy.release()
        result = reading.result(timeout=60)
    assert len(set().union(*first)) == SLOTS * 100
    assert then[0] == first[-1]
    assert sorted(map(sorted, then[1:])) == sorted(map(sorted, throttled))
    assert result.rows == clean.rows
    assert result.stats.throttles == THROTTLED
