"""Read budgets: the value forms, resolving a percentage against DescribeTable, the local
bucket's arithmetic (on a clock the test moves), the learned cost of a key, and AIMD."""

from __future__ import annotations

import pytest

from featurepull.config import ConfigError, load_settings
from featurepull.config.budget import parse_budget
from featurepull.dynamo.concurrency import Aimd
from featurepull.dynamo.pacing import (
    BudgetError,
    LocalBucket,
    ReadCost,
    effective_budget,
    table_read_capacity,
)

PROVISIONED = {"BillingModeSummary": {"BillingMode": "PROVISIONED"},
               "ProvisionedThroughput": {"ReadCapacityUnits": 4000, "WriteCapacityUnits": 5}}
ON_DEMAND = {"BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
             "ProvisionedThroughput": {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0}}
ON_DEMAND_MAX = {**ON_DEMAND, "OnDemandThroughput": {"MaxReadRequestUnits": 10_000}}


@pytest.mark.parametrize(("given", "parsed"), [
    (2000, 2000.0), ("2000", 2000.0), ("0.5", 0.5), ("50%", "50%"), (" 12.5% ", "12.5%"),
    ("100%", "100%"), (None, None), ("", None)])
def test_budget_forms(given: object, parsed: object) -> None:
    assert parse_budget(given) == parsed


@pytest.mark.parametrize("given", [0, "0", -5, "-5", "150%", "0%", "-1%", "abc", "nan", "inf",
                                   "%", True])
def test_bad_budgets_name_what_is_allowed(given: object) -> None:
    with pytest.raises(ValueError, match=r"RCU per second above 0 .* at most 100"):
        parse_budget(given)


def test_a_bad_budget_in_the_environment_names_the_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__MAX_RCU_PER_S", "150%")
    with pytest.raises(ConfigError, match=r"dynamodb\.max_rcu_per_s .*150%"):
        load_settings()


def test_a_bad_ceiling_names_its_table() -> None:
    with pytest.raises(ConfigError, match=r"table 'prod\.features': must be"):
        load_settings(overrides={"dynamodb": {"table_budgets": {"prod.features": "abc"}}})


def test_capacity_from_describe_table() -> None:
    assert table_read_capacity(PROVISIONED) == 4000
    assert table_read_capacity(ON_DEMAND_MAX) == 10_000
    assert table_read_capacity(ON_DEMAND) is None
    assert table_read_capacity({**ON_DEMAND, "OnDemandThroughput":
                                {"MaxReadRequestUnits": -1}}) is None


def test_job_budget_and_ceiling_combine_as_the_smaller() -> None:
    assert effective_budget("50%", None, "t", PROVISIONED) == 2000
    assert effective_budget(None, "25%", "t", PROVISIONED) == 1000
    assert effective_budget("50%", "25%", "t", PROVISIONED) == 1000
    assert effective_budget(500.0, "25%", "t", PROVISIONED) == 500
    assert effective_budget("10%", None, "t", ON_DEMAND_MAX) == 1000
    assert effective_budget(None, None, "t", ON_DEMAND) is None
    assert effective_budget(300.0, None, "t", ON_DEMAND) == 300


def test_a_percentage_of_an_on_demand_table_without_a_maximum_asks_for_a_number() -> None:
    with pytest.raises(BudgetError, match=r"dynamodb\.max_rcu_per_s=50%: table t is on-demand "
                                          r"with no maximum .* give a number of RCU per second"):
        effective_budget("50%", None, "t", ON_DEMAND)
    with pytest.raises(BudgetError, match=r"table_budgets\['t'\]=10%"):
        effective_budget(100.0, "10%", "t", ON_DEMAND)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drain(bucket: LocalBucket, clock: Clock, seconds: float, units: float) -> float:
    """Take ``units`` at a time for ``seconds`` of the test's clock, waiting as told."""
    taken, end = 0.0, clock.now + seconds
    while clock.now < end:
        wait = bucket.reserve(units)
        if wait > 0:
            clock.now += wait
        else:
            taken += units
    return taken


def test_local_bucket_keeps_its_rate() -> None:
    clock = Clock()
    bucket = LocalBucket(2000, burst_s=0.1, clock=clock)
    taken = _drain(bucket, clock, 10.0, 50)
    # 10 s at 2,000/s, plus at most the bucket's depth (0.1 s).
    assert 20_000 <= taken <= 20_000 + 200


def test_a_request_larger_than_the_burst_waits_for_a_full_bucket() -> None:
    clock = Clock()
    bucket = LocalBucket(100, burst_s=0.05, clock=clock)  # depth: 5 units, or one request
    taken = _drain(bucket, clock, 10.0, 50)
    assert taken <= 100 * 10 + 50  # never more than the rate plus one request


def test_settling_gives_back_or_charges_the_difference() -> None:
    clock = Clock()
    bucket = LocalBucket(100, burst_s=0.0, clock=clock)
    assert bucket.reserve(50) == 0.0
    assert bucket.reserve(50) == pytest.approx(0.5)  # 0.5 s of bucket time is taken
    bucket.settle(50, 0)  # the request was refused: nothing was charged
    assert bucket.reserve(50) == 0.0
    bucket.settle(50, 150)  # items over 4 KB: charged three times the estimate
    assert bucket.reserve(1) == pytest.approx(1.5)
    clock.now += 100  # idle: the bucket is full again, and never fuller
    bucket.settle(50, 0)
    assert bucket.reserve(50) == 0.0
    assert bucket.reserve(50) == pytest.approx(0.5)


def test_read_cost_learns_larger_items_at_once_and_decays_slowly() -> None:
    cost = ReadCost(consistent=False)
    assert cost.estimate(100) == 50.0
    cost.learn(100, 150.0)  # 1.5 RCU a key: items of 8-12 KB
    assert cost.estimate(100) == 150.0
    cost.learn(100, 50.0)
    assert 50.0 < cost.estimate(100) < 150.0
    for _ in range(100):
        cost.learn(100, 10.0)  # never below DynamoDB's minimum
    assert cost.estimate(100) == 50.0
    assert ReadCost(consistent=True).estimate(100) == 100.0


def test_aimd_halves_once_per_burst_and_adds_one_after_a_clean_run() -> None:
    window = Aimd(10)
    window.throttled(sent_at=1.0, now=2.0)
    assert window.limit == 5
    window.throttled(sent_at=1.5, now=2.1)  # in flight before the cut: same signal
    assert window.limit == 5
    window.throttled(sent_at=2.5, now=3.0)
    window.throttled(sent_at=3.5, now=4.0)
    window.throttled(sent_at=4.5, now=5.0)
    assert window.limit == 1 and window.low == 1  # floor 1
    for _ in range(1 + 2 + 3):
        window.clean()
    assert window.limit == 4
    for _ in range(100):
        window.clean()
    assert window.limit == 10 and window.high == 10  # never above max_read_workers


def test_aimd_off_keeps_the_limit() -> None:
    window = Aimd(10, adaptive=False)
    window.throttled(sent_at=1.0, now=2.0)
    assert window.limit == 10 and window.low == 10


def test_a_schedule_or_job_request_with_a_bad_budget_is_refused_when_loaded() -> None:
    schedule = {"name": "nightly", "every_s": 3600, "table": "t", "features": ["a"],
                "entities": "e.parquet", "output": "out.parquet"}
    settings = load_settings(overrides={"schedules": [
        {**schedule, "dynamodb": {"max_rcu_per_s": "25%"}}]})
    assert settings.schedules[0].dynamodb == {"max_rcu_per_s": "25%"}
    with pytest.raises(ConfigError, match=r"schedules\.0\.dynamodb.*max_rcu_per_s must be a "
                                          r"number of RCU per second above 0.*'150%'"):
        load_settings(overrides={"schedules": [{**schedule,
                                                "dynamodb": {"max_rcu_per_s": "150%"}}]})
