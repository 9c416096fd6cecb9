"""Submission refuses bad input before anything reaches Redis or the queue; messages stay
small; Redis trouble and unknown job ids give clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job, submit
from featurepull.config import load_settings
from featurepull.dynamo import EntityKeyError, TableError
from featurepull.io import EntityFileError, OutputError
from featurepull.local import RedisService
from featurepull.tasks import JobStoreError, UnknownJob
from tests.conftest import refused_port
from tests.tasks.conftest import Fleet, fleet, queued_messages


def write_ids(path: Path, ids: list[Any], arrow_type: Any = None) -> Path:
    pq.write_table(pa.table({"driver_id": pa.array(ids, arrow_type)}), path)
    return path


def nothing_stored(workers: Fleet) -> bool:
    client = workers.redis()
    return client.llen(workers.queue) == 0 and not list(client.scan_iter("featurepull:job:*"))


BAD = {
    "unknown table": ({"table": "no_such_view"}, TableError, "does not exist"),
    "join key column missing": ({"join_keys": ["user_id"]}, EntityKeyError, "no column 'user_id'"),
    "output exists": ({"output": "EXISTING"}, OutputError, "exists; pass --overwrite"),
    "unknown feature type option": ({"join_key_types": {"driver_id": "float"}}, EntityKeyError,
                                    "Feast join keys must be one of"),
    "bad output extension": ({"output": "out.xlsx"}, OutputError, "unsupported file extension"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_requests_are_refused_before_anything_is_enqueued(
    redis_server: RedisService, fast_dynamo: EndpointProcess, tmp_path: Path, case: str
) -> None:
    changes, error, phrase = BAD[case]
    entities = write_ids(tmp_path / "ids.parquet", [1, 2, 3], pa.int64())
    existing = tmp_path / "existing.parquet"
    existing.write_bytes(b"keep me")
    args: dict[str, Any] = {"table": "driver_stats", "output": str(tmp_path / "out.parquet")}
    args.update(changes)
    if args["output"] == "EXISTING":
        args["output"] = str(existing)
    elif args["output"] == "out.xlsx":
        args["output"] = str(tmp_path / "out.xlsx")
    with fleet(redis_server, fast_dynamo.url) as workers:
        with pytest.raises(error, match=phrase):
            submit(args.pop("table"), list(FEATURES), str(entities), args.pop("output"),
                   settings=workers.settings(), **args)
        assert nothing_stored(workers)
    assert existing.read_bytes() == b"keep me"


# A request wrong in its entity file and in its table: the table is described on a thread
# while the file is typed (featurepull.dynamo.plan.DescribedAhead), and what the file or the
# layout's checks find still wins, as when the table was described after them.
BOTH_WRONG = {
    "blank line": ("driver_id\n1\n\n2\n", {}, EntityFileError, "line 3 is blank"),
    "join key column missing": ("driver_id\n1\n2\n", {"join_keys": ["user_id"]},
                                EntityKeyError, "no column 'user_id'"),
    "mixed join key": ("driver_id\n1\nx\n", {}, EntityKeyError, "driver_id"),
}


@pytest.mark.parametrize("case", list(BOTH_WRONG), ids=list(BOTH_WRONG))
def test_a_bad_entity_file_wins_over_a_missing_table(
    redis_server: RedisService, fast_dynamo: EndpointProcess, tmp_path: Path, case: str
) -> None:
    text, changes, error, phrase = BOTH_WRONG[case]
    entities = tmp_path / "ids.csv"
    entities.write_text(text)
    with fleet(redis_server, fast_dynamo.url) as workers:
        with pytest.raises(error, match=phrase):
            submit("no_such_view", list(FEATURES), str(entities), str(tmp_path / "out.parquet"),
                   settings=workers.settings(), **changes)
        assert nothing_stored(workers)


@pytest.mark.parametrize(("ids", "arrow_type", "error", "phrase"), [
    ([1, None, 3], pa.int64(), EntityKeyError, "entity row 2, column .driver_id.: null key value"),
    ([1.5, 2.5], pa.float64(), EntityKeyError, "has type float"),
])
def test_bad_entity_values_are_refused_at_submit(
    redis_server: RedisService, fast_dynamo: EndpointProcess, tmp_path: Path, ids: list[Any],
    arrow_type: Any, error: type[Exception], phrase: str
) -> None:
    entities = write_ids(tmp_path / "ids.parquet", ids, arrow_type)
    with fleet(redis_server, fast_dynamo.url) as workers:
        with pytest.raises(error, match=phrase):
            submit("driver_stats", list(FEATURES), str(entities), None,
                   settings=workers.settings())
        assert nothing_stored(workers)


def test_job_larger_than_the_limit_is_refused(redis_server: RedisService,
                                              fast_dynamo: EndpointProcess,
                                              tmp_path: Path) -> None:
    entities = write_ids(tmp_path / "ids.parquet", list(range(50)), pa.int64())
    with fleet(redis_server, fast_dynamo.url, max_entities=10) as workers:
        with pytest.raises(EntityFileError, match="at most 10 per job"):
            submit("driver_stats", list(FEATURES), str(entities), None,
                   settings=workers.settings())
        assert nothing_stored(workers)


def test_redis_key_entities_are_named_by_their_key_in_errors(
        redis_server: RedisService, fast_dynamo: EndpointProcess, tmp_path: Path) -> None:
    entities = write_ids(tmp_path / "ids.parquet", list(range(50)), pa.int64())
    with fleet(redis_server, fast_dynamo.url, max_entities=10) as workers:
        workers.redis().set("inputs:ids", entities.read_bytes())
        with pytest.raises(EntityFileError) as refused:
            submit("driver_stats", list(FEATURES), "redis-key:inputs:ids", None,
                   settings=workers.settings())
        assert str(refused.value).startswith("redis-key:inputs:ids has 50 entities; this "
                                             "deployment accepts at most 10 per job")
        workers.redis().set("inputs:ids", b"not parquet")
        with pytest.raises(EntityFileError, match=r"^redis-key:inputs:ids: cannot read it "
                                                  "as Parquet"):
            submit("driver_stats", list(FEATURES), "redis-key:inputs:ids", None,
                   settings=workers.settings())
        workers.redis().delete("inputs:ids")
        assert nothing_stored(workers)


def test_messages_carry_ids_not_entities(redis_server: RedisService,
                                         fast_dynamo: EndpointProcess, tmp_path: Path) -> None:
    # No worker runs: the messages stay on the queue where we can weigh them.
    entities = write_ids(tmp_path / "ids.parquet", list(range(120_000)), pa.int64())
    with fleet(redis_server, fast_dynamo.url, shard_size=10_000) as workers:
        job = submit("driver_stats", list(FEATURES), str(entities), None,
                     settings=workers.settings())
        queued = queued_messages(workers.redis(), workers.queue)
        assert sorted((task, args) for task, args, _, _ in queued) == [
            ("featurepull.read_shard", [job.id, shard]) for shard in range(12)]
        assert max(len(raw) for *_, raw in queued) < 4_096  # far under the 1 MB ceiling
        assert all(json.loads(raw)["content-type"] == "application/json" for *_, raw in queued)
        assert job.status().state == "queued"


def test_unreachable_redis_fails_fast_with_a_clear_error(fast_dynamo: EndpointProcess,
                                                         tmp_path: Path) -> None:
    entities = write_ids(tmp_path / "ids.parquet", [1], pa.int64())
    with refused_port() as port:
        settings = load_settings(overrides={"redis_url": f"redis://:hunter2@127.0.0.1:{port}/0",
                                            "dynamodb": {"endpoint_url": fast_dynamo.url,
                                                         "region": "us-east-1"}})
        started = time.monotonic()
        with pytest.raises(JobStoreError) as failure:
            submit("driver_stats", list(FEATURES), str(entities), None, settings=settings)
    assert time.monotonic() - started < 10
    assert "cannot reach Redis at redis://:***@127.0.0.1" in str(failure.value)
    assert "hunter2" not in str(failure.value)


def test_unknown_job_id_says_so(redis_server: RedisService) -> None:
    settings = load_settings(overrides={"redis_url": redis_server.url})
    with pytest.raises(UnknownJob, match="no job 'nope'"):
        Job("nope", settings)
    proc = subprocess.run([sys.executable, "-m", "featurepull", "status", "nope",
                           "--redis-url", redis_server.url],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no job 'nope' in Redis" in proc.stderr


def test_wait_polls_more_often_once_every_shard_is_done() -> None:
    # Only the finisher is left then: its end is what a `submit --wait` waits for.
    from featurepull.client import FINISHING_POLL_S, JobStatus, poll_interval
    from featurepull.tasks.store import JobState

    def status(state: JobState, shards: int, done: int) -> JobStatus:
        return JobStatus("j", state, shards, done, 10, 0, None, None)

    assert poll_interval(status(JobState.QUEUED, 0, 0), 0.1) == 0.1  # not stored yet
    assert poll_interval(status(JobState.RUNNING, 3, 2), 0.1) == 0.1
    assert poll_interval(status(JobState.FINISHING, 3, 3), 0.1) == FINISHING_POLL_S < 0.1
    assert poll_interval(status(JobState.RUNNING, 3, 3), 0.01) == 0.01  # never longer
