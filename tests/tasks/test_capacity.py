"""The fleet's shared buckets in a real redis-server: a table's and a budget's, on Redis's
clock; settlements ride along with the next take; nothing outlives an idle bucket; a small
budget holds a larger one on the same table back by its units only."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from featurepull.local import RedisService
from featurepull.tasks.capacity import PREFIX, RedisBucket
from tests.conftest import wait_until

# The waits are on Redis's clock, and the time since a take passes on both clocks: a wait is
# checked against the time measured here (a slow moment shortens it, and the bound), never
# against a fixed figure. The script rounds to microseconds.
EPSILON_S = 0.001


@pytest.fixture
def client(redis_server: RedisService) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def test_takes_until_the_burst_is_spent_then_says_how_long_to_wait(
        client: redis.Redis) -> None:
    table = f"t-{uuid.uuid4().hex[:6]}"
    bucket = RedisBucket(client, table, rate=100.0, burst_s=0.1)
    started = time.monotonic()
    assert bucket.reserve(50) == 0.0  # the bucket starts full (one request deep)
    wait = bucket.reserve(50)  # 0.5 s of bucket time is taken, less the time gone since
    assert 0.5 - (time.monotonic() - started) - EPSILON_S <= wait <= 0.5
    # Another process on the same table sees the same bucket.
    other = RedisBucket(client, table, rate=100.0, burst_s=0.1).reserve(50)
    assert other >= 0.5 - (time.monotonic() - started) - EPSILON_S


def test_a_settlement_goes_with_the_next_take(client: redis.Redis) -> None:
    bucket = RedisBucket(client, f"t-{uuid.uuid4().hex[:6]}", rate=100.0, burst_s=0.0)
    assert bucket.reserve(50) == 0.0
    bucket.settle(50, 0)  # refused by DynamoDB: nothing was charged
    started = time.monotonic()
    assert bucket.reserve(50) == 0.0  # the 50 came back before this take
    bucket.settle(50, 200)  # charged four times the estimate: 0.5 + 1.5 s of bucket time
    assert bucket.reserve(1) >= 2.0 - (time.monotonic() - started) - EPSILON_S


def test_an_idle_bucket_expires_so_a_dead_reader_leaks_nothing(client: redis.Redis) -> None:
    table = f"t-{uuid.uuid4().hex[:6]}"
    bucket = RedisBucket(client, table, rate=1000.0, burst_s=0.1)
    bucket.reserve(100)  # as a worker SIGKILLed right after its take would leave it
    ttl_ms = client.pttl(f"{PREFIX}{table}")
    assert 0 < ttl_ms <= 1_200 + 1_000
    wait_until(lambda: not client.exists(f"{PREFIX}{table}"), "expiry of the bucket's key", 30)
    assert bucket.reserve(100) == 0.0  # a full bucket again


def test_flush_sends_what_is_still_owed(client: redis.Redis) -> None:
    table = f"t-{uuid.uuid4().hex[:6]}"
    bucket = RedisBucket(client, table, rate=100.0, burst_s=0.0)
    started = time.monotonic()
    bucket.reserve(10)
    bucket.settle(10, 110)  # 1 s of bucket time owed, on top of the 0.1 s taken
    bucket.flush()
    waited = RedisBucket(client, table, rate=100.0, burst_s=0.0).reserve(1)
    assert waited >= 1.1 - (time.monotonic() - started) - EPSILON_S


def test_a_small_budget_holds_a_large_one_on_the_same_table_back_by_its_units_only(
        client: redis.Redis) -> None:
    # A 10 RCU/s job's 50-unit request is 5 s of its own budget; it once cost the table's
    # one bucket those 5 s, and a 2,000 RCU/s job beside it read nothing meanwhile.
    table = f"t-{uuid.uuid4().hex[:6]}"
    large = RedisBucket(client, table, rate=2000.0, burst_s=0.05)
    small = RedisBucket(client, table, rate=10.0, burst_s=0.05)
    assert large.reserve(50) == 0.0
    started = time.monotonic()
    assert small.reserve(50) == 0.0
    # 150 units in all, past 2,000 RCU/s's 0.05 s (100 units) of depth by the small one's 50:
    # the large one waits what 50 units take at its rate, not at the small one's.
    assert 0.0 <= large.reserve(50) <= 50 / 2000
    # Each within its own budget: the small one's next request waits its 5 s.
    assert small.reserve(50) >= 5.0 - (time.monotonic() - started) - EPSILON_S
    # Together within the larger budget: a job of 100 RCU/s takes 0.5 s of a fresh table,
    # and one of 20 RCU/s, whose own bucket is full, waits what is left of them.
    table = f"t-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    assert RedisBucket(client, table, rate=100.0, burst_s=0.05).reserve(50) == 0.0
    wait = RedisBucket(client, table, rate=20.0, burst_s=0.05).reserve(50)
    assert 0.5 - (time.monotonic() - started) - EPSILON_S <= wait <= 0.5
