"""Shards cut for the fleet (featurepull.tasks.fleet), in this process: the size rule, which
jobs it applies to, what an explicit jobs.shard_size means, and the pool records as Redis
holds them (a real redis-server). Real workers recording their pools:
tests/tasks/test_fleet_workers.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from featurepull.config import ConfigError, DynamoSettings, JobSettings, Settings, load_settings
from featurepull.local import RedisService
from featurepull.tasks.fleet import (
    RECORD_TTL_S,
    fleet_processes,
    fleet_shard_size,
    forget_pool,
    job_shard_size,
    record_pool,
)
from featurepull.tasks.store import connect

DYNAMO = DynamoSettings()


@pytest.fixture
def client(redis_server: RedisService) -> Iterator[redis.Redis]:
    yield connect(redis_server.url)


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(("rows", "processes", "size"), [
    (1_000_000, 2, 100_000),     # 125,000 for 4 a process, down to a multiple of 50,000
    (1_000_000, 1, 200_000),     # 250,000: at most the largest
    (1_000_000, 40, 50_000),     # 6,250: at least the smallest
    (5_000_000, 2, 200_000),
    (5_000_000, 10, 100_000),
    (399_999, 1, 50_000),        # 99,999 a shard: not yet two of the smallest
    (400_000, 1, 100_000),
    (10_000_000, 0, 50_000),     # no process recorded: as before
])
def test_shards_for_four_a_process_in_multiples_of_the_smallest(rows: int, processes: int,
                                                                size: int) -> None:
    assert fleet_shard_size(rows, processes, 50_000, 200_000) == size


def test_the_largest_need_not_be_a_multiple_of_the_smallest() -> None:
    assert fleet_shard_size(10_000_000, 1, 50_000, 120_000) == 100_000
    assert fleet_shard_size(10_000_000, 1, 30_000, 100_000) == 90_000


def test_an_explicit_shard_size_alone_is_every_shards_size() -> None:
    assert JobSettings().largest_shard == 200_000
    assert load_settings().jobs.largest_shard == 200_000
    assert JobSettings(shard_size=50_000).largest_shard == 50_000
    assert load_settings(overrides={"jobs": {"shard_size": 20_000}}).jobs.largest_shard == 20_000
    assert JobSettings(max_shard_size=150_000).largest_shard == 150_000
    assert JobSettings(shard_size=100, max_shard_size=1_000).largest_shard == 1_000
    # A copy made from a dump counts every field as set: shards of shard_size, as before.
    assert Settings(**Settings().model_dump()).jobs.largest_shard == 50_000


def test_an_explicit_shard_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREPULL_JOBS__SHARD_SIZE", "50000")
    assert load_settings().jobs.largest_shard == 50_000
    monkeypatch.setenv("FEATUREPULL_JOBS__MAX_SHARD_SIZE", "300000")
    assert load_settings().jobs.largest_shard == 300_000


def test_max_shard_size_below_shard_size_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"max_shard_size \(20000\) must not be below "
                                          r"shard_size \(50000\)"):
        load_settings(overrides={"jobs": {"max_shard_size": 20_000}})


def test_a_pool_record_is_counted_until_it_is_removed(client: redis.Redis, queue: str) -> None:
    assert fleet_processes(client, queue) == 0
    record_pool(client, "w1@host", [queue, "other"], 2)
    record_pool(client, "w2@host", [queue], 3)
    assert fleet_processes(client, queue) == 5
    assert fleet_processes(client, "other") == 2
    assert 0 < client.ttl(f"featurepull:fleet:{queue}:w1@host") <= RECORD_TTL_S
    record_pool(client, "w1@host", [queue, "other"], 4)  # recorded again: replaced
    assert fleet_processes(client, queue) == 7
    forget_pool(client, "w1@host", [queue, "other"])
    assert fleet_processes(client, queue) == 3
    assert fleet_processes(client, "other") == 0
    client.delete(f"featurepull:fleet:{queue}:w2@host", "featurepull:fleet:other")


def test_an_expired_record_is_not_counted_and_is_pruned(client: redis.Redis,
                                                        queue: str) -> None:
    record_pool(client, "dead@host", [queue], 8)
    record_pool(client, "live@host", [queue], 2)
    client.delete(f"featurepull:fleet:{queue}:dead@host")  # what its TTL does
    assert fleet_processes(client, queue) == 2
    record_pool(client, "live@host", [queue], 2)  # a live worker's next record prunes it
    assert client.smembers(f"featurepull:fleet:{queue}") == {b"live@host"}
    forget_pool(client, "live@host", [queue])


def test_which_jobs_are_cut_for_the_fleet(client: redis.Redis, queue: str) -> None:
    jobs = JobSettings(queue=queue)
    record_pool(client, "w@host", [queue], 2)
    try:
        assert job_shard_size(jobs, DYNAMO, 1_000_000, "/out/x.parquet", None, client) == (
            100_000, {"fleet_processes": 2})
        assert job_shard_size(jobs, DYNAMO, 1_000_000, "s3://b/x.csv", None, client)[0] == 100_000
        # One part or scorer call per shard: a dataset, rows kept in Redis, a scorer.
        assert job_shard_size(jobs, DYNAMO, 1_000_000, "/out/x/", None, client) == (50_000, {})
        assert job_shard_size(jobs, DYNAMO, 1_000_000, None, None, client) == (50_000, {})
        assert job_shard_size(jobs, DYNAMO, 1_000_000, "/out/x.parquet", "risk", client) == (
            50_000, {})
        # A read budget paces every shard: a bigger one could outlast the soft time limit.
        for paced in (DynamoSettings(max_rcu_per_s=500), DynamoSettings(
                table_budgets={"p.t": "50%"})):
            assert job_shard_size(jobs, paced, 1_000_000, "/out/x.parquet", None,
                                  client) == (50_000, {})
        # Too small for any fleet to want more than shard_size: Redis is not asked.
        assert job_shard_size(jobs, DYNAMO, 399_999, "/out/x.parquet", None, client) == (50_000, {})
        # An explicit shard_size alone.
        assert job_shard_size(JobSettings(queue=queue, shard_size=50_000), DYNAMO, 1_000_000,
                              "/out/x.parquet", None, client) == (50_000, {})
    finally:
        forget_pool(client, "w@host", [queue])
    # No worker recorded: shards of shard_size, and the job records that none was.
    assert job_shard_size(jobs, DYNAMO, 1_000_000, "/out/x.parquet", None, client) == (
        50_000, {"fleet_processes": 0})
