"""The retry policy as a unit: full-jitter backoff bounds, spread, reproducibility and the
deadline; and the ReadStats counters that summarize what a read (or a whole job) did."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys

import pytest

from featurepull.dynamo import Backoff, ReadStats
from featurepull.dynamo.retry import FailureTally
from featurepull.dynamo.stats import percentile

BACKOFF = Backoff(base_s=0.05, cap_s=5.0, deadline_s=30.0)
SAMPLES = 2_000


def bound(backoff: Backoff, attempt: int) -> float:
    """The documented upper bound of the delay before retry ``attempt``."""
    return min(backoff.cap_s, backoff.base_s * 2.0 ** (attempt - 1))


# ---------------------------------------------------------------------------------------
# Backoff.delay
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 41))
def test_delay_stays_within_zero_and_the_capped_exponential_bound(attempt: int) -> None:
    rng = random.Random(attempt)
    limit = bound(BACKOFF, attempt)
    delays = [BACKOFF.delay(attempt, rng) for _ in range(SAMPLES)]
    assert all(0.0 <= d <= limit for d in delays)


def test_bound_doubles_from_base_until_the_cap() -> None:
    # The largest of many samples approaches the bound: 0.05, 0.1, ... 3.2, then 5.0 (cap).
    rng = random.Random(1)
    highest = [max(BACKOFF.delay(n, rng) for _ in range(SAMPLES)) for n in range(1, 10)]
    expected = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert highest == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("attempt", [64, 1_100, 10**6, sys.maxsize])
def test_huge_attempt_numbers_do_not_overflow_and_stay_capped(attempt: int) -> None:
    rng = random.Random(0)
    delays = [BACKOFF.delay(attempt, rng) for _ in range(200)]
    assert all(math.isfinite(d) and 0.0 <= d <= BACKOFF.cap_s for d in delays)


@pytest.mark.parametrize("attempt", [0, -1, -(10**9)])
def test_attempt_below_one_is_treated_as_the_first_retry(attempt: int) -> None:
    rng = random.Random(0)
    assert all(0.0 <= BACKOFF.delay(attempt, rng) <= BACKOFF.base_s for _ in range(200))


@pytest.mark.parametrize("attempt", [1, 4, 12])
def test_full_jitter_uses_the_whole_range(attempt: int) -> None:
    """Full jitter, not equal jitter: delays near zero and near the bound both occur."""
    rng = random.Random(42)
    limit = bound(BACKOFF, attempt)
    delays = [BACKOFF.delay(attempt, rng) for _ in range(SAMPLES)]
    assert sum(d < 0.1 * limit for d in delays) > SAMPLES * 0.05
    assert sum(d > 0.9 * limit for d in delays) > SAMPLES * 0.05
    assert sum(delays) / SAMPLES == pytest.approx(limit / 2, rel=0.1)


def test_seeded_rng_gives_the_same_delays_and_another_seed_different_ones() -> None:
    def sequence(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [BACKOFF.delay(n, rng) for n in range(1, 41)]

    assert sequence(7) == sequence(7)
    assert sequence(7) != sequence(8)


# ---------------------------------------------------------------------------------------
# Backoff.expired
# ---------------------------------------------------------------------------------------


def test_expired_only_strictly_after_the_deadline() -> None:
    backoff = Backoff(base_s=0.05, cap_s=5.0, deadline_s=10.0)
    first = 1_000.0
    assert not backoff.expired(first, first)
    assert not backoff.expired(first, first + 9.999)
    assert not backoff.expired(first, first + 10.0)  # exactly at the deadline: still allowed
    assert backoff.expired(first, first + 10.001)
    assert backoff.expired(first, first + 1e9)


def test_backoff_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BACKOFF.cap_s = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# ReadStats
# ---------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank_and_zero_when_empty() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2.0


def test_latency_percentiles_sort_the_samples() -> None:
    stats = ReadStats(latencies_ms=[30.0, 10.0, 20.0, 40.0])
    assert (stats.latency_p50_ms, stats.latency_p99_ms) == (20.0, 40.0)
    assert stats.latencies_ms == [30.0, 10.0, 20.0, 40.0]  # left unsorted in place


def test_merge_adds_every_counter_and_joins_latencies() -> None:
    total = ReadStats(keys=10, unique_keys=8, found=6, missing=4, requests=1, retries=2,
                      throttles=1, consumed_rcu=0.5, seconds=1.0, latencies_ms=[5.0])
    shard = ReadStats(keys=5, unique_keys=5, found=5, missing=0, requests=2,
                      unprocessed_retries=3, throttles=2, server_errors=1, connection_errors=4,
                      retries=7, consumed_rcu=1.25, seconds=0.5, latencies_ms=[1.0, 9.0])
    total.merge(shard)
    assert total == ReadStats(
        keys=15, unique_keys=13, found=11, missing=4, requests=3, unprocessed_retries=3,
        throttles=3, server_errors=1, connection_errors=4, retries=9, consumed_rcu=1.75,
        seconds=1.5, latencies_ms=[5.0, 1.0, 9.0],
    )
    # The merged-in stats are untouched and share no list with the total.
    assert shard.latencies_ms == [1.0, 9.0]
    total.latencies_ms.append(100.0)
    assert shard.latencies_ms == [1.0, 9.0]


def test_merge_into_empty_stats_equals_the_other() -> None:
    shard = ReadStats(keys=3, found=2, missing=1, requests=1, latencies_ms=[2.0])
    total = ReadStats()
    total.merge(shard)
    assert total == shard


def test_merge_keeps_the_budget_and_the_widest_in_flight_range() -> None:
    total = ReadStats(budget_rcu_per_s=2000.0, budget_wait_s=1.5, concurrency_min=5,
                      concurrency_max=10)
    total.merge(ReadStats(budget_rcu_per_s=2000.0, budget_wait_s=0.5, concurrency_min=2,
                          concurrency_max=10))
    total.merge(ReadStats())  # a shard stored before budgets existed
    assert (total.budget_rcu_per_s, total.budget_wait_s, total.concurrency_min,
            total.concurrency_max) == (2000.0, 2.0, 2, 10)


def test_merge_names_the_read_mode_of_a_job_and_mixed_for_both() -> None:
    total = ReadStats()
    total.merge(ReadStats(read_mode="scan", pages=3))
    total.merge(ReadStats(read_mode="scan", pages=2))
    assert (total.read_mode, total.pages) == ("scan", 5)
    total.merge(ReadStats(read_mode="batch-get"))
    assert total.read_mode == "mixed"


def test_to_dict_is_json_ready_with_rounded_summary_fields() -> None:
    stats = ReadStats(keys=1_000, unique_keys=900, found=800, missing=200, requests=9,
                      consumed_rcu=12.34567, seconds=2.00049,
                      latencies_ms=[float(v) + 0.004 for v in range(1, 101)])
    out = stats.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert "latencies_ms" not in out
    assert out == {
        "keys": 1_000, "unique_keys": 900, "found": 800, "missing": 200, "requests": 9,
        "unprocessed_retries": 0, "unprocessed_requests": 0, "throttles": 0, "server_errors": 0, "connection_errors": 0,
        "retries": 0, "consumed_rcu": 12.346, "seconds": 2.0, "latency_p50_ms": 50.0,
        "latency_p99_ms": 99.0, "rows_per_s": 499.9, "rcu_per_s": 6.2,
        "budget_rcu_per_s": 0.0, "budget_wait_s": 0.0, "concurrency_min": 0,
        "concurrency_max": 0, "stale": 0, "pages": 0, "items_scanned": 0,
        "items_matched": 0, "read_mode": "",
    }


def test_rows_per_second_is_zero_when_no_time_was_measured() -> None:
    assert ReadStats(keys=10).rows_per_s == 0.0
    assert ReadStats(keys=10).to_dict()["rows_per_s"] == 0.0


def test_summary_line_names_the_counters() -> None:
    line = ReadStats(keys=4, found=3, missing=1, requests=1, throttles=2, seconds=2.0,
                     latencies_ms=[4.0]).summary_line()
    for part in ("rows=4", "found=3", "missing=1", "requests=1", "throttles=2", "p50=4.0ms",
                 "seconds=2.00", "rows/s=2"):
        assert part in line


# ---------------------------------------------------------------------------------------
# FailureTally: what a read that ran out of time says
# ---------------------------------------------------------------------------------------


def test_tally_names_the_kind_most_requests_failed_with_and_its_advice() -> None:
    tally = FailureTally()
    assert tally.dominant() is None
    for _ in range(3):
        tally.note("throttle", "ProvisionedThroughputExceededException")
    for detail in ["could not connect to h:1: refused"] * 4 + ["connection reset"]:
        tally.note("connection", detail)
    text = tally.explain()
    assert tally.dominant() == "connection"
    assert text.startswith("the endpoint could not be reached or its answers were lost (5 "
                           "requests failed on the connection; most often: could not "
                           "connect to h:1: refused)")
    assert "5 connection, 0 server, 3 throttle, 0 unprocessed" in text
    assert "--endpoint-url" in text and "read capacity" not in text


@pytest.mark.parametrize(("kind", "says", "advice"), [
    ("throttle", "DynamoDB kept throttling", "read capacity"),
    ("unprocessed", "DynamoDB kept leaving keys unprocessed", "read capacity"),
    ("server", "DynamoDB kept failing on its side", "AWS Health Dashboard"),
])
def test_tally_advice_fits_each_kind(kind: str, says: str, advice: str) -> None:
    tally = FailureTally()
    tally.note(kind, "InternalServerError" if kind == "server" else "")
    text = tally.explain()
    assert text.startswith(says) and advice in text and "--endpoint-url" not in text


def test_tally_example_is_the_most_frequent_detail_not_the_first() -> None:
    tally = FailureTally(ReadStats())
    for detail in ["connection reset"] + ["could not connect to h:1: refused"] * 2:
        tally.note("connection", detail)
    assert "most often: could not connect to h:1: refused)" in tally.explain()


def test_tally_without_details_says_so() -> None:
    tally = FailureTally(ReadStats())
    tally.note("throttle")
    assert tally.explain().startswith("DynamoDB kept throttling (1 requests throttled; most "
                                      "often: no detail). Failed requests by kind: 0 "
                                      "connection, 0 server, 1 throttle, 0 unprocessed. ")


def test_tally_counts_are_the_reads_own_stats() -> None:
    # One place for each count: what the tally says is what ReadStats (summaries, logs,
    # metrics) report, because it counts there.
    stats = ReadStats(throttles=2)
    tally = FailureTally(stats)
    tally.note("throttle", "ThrottlingException")
    tally.note("unprocessed")
    tally.note("connection", "connection reset")
    assert (stats.throttles, stats.unprocessed_requests, stats.connection_errors,
            stats.server_errors) == (3, 1, 1, 0)
    assert tally.counts == {"connection": 1, "server": 0, "throttle": 3, "unprocessed": 1}
    assert "1 connection, 0 server, 3 throttle, 1 unprocessed" in tally.explain()
