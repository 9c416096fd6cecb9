"""Jobs through real prefork workers, observed on the wire: a throttle holds back new
requests (the throttled keys go again before any new one), a secret in a failing shard's error is masked wherever the error is kept, more
than ten shards finishing out of order are written in shard order, and a plain-layout job
keeps its event time attribute. One worker instance serves every test; each job points
at its own endpoint (a job may choose its DynamoDB endpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import EndpointProcess, SyntheticTable, start_endpoint
from featurepull.client import JobFailed, submit
from featurepull.config import Settings
from featurepull.dynamo import decode_value
from featurepull.dynamo.layouts import parse_event_ts
from featurepull.local import RedisService
from tests.conftest import moto_table, wait_until
from tests.faultproxy import FaultPlan, FaultProxy
from tests.tasks.conftest import DRIVERS, Fleet, fleet

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds
FEATURES = ["conv_rate", "city"]
SECRET = "Planted0Secret9"
# Retries wait U(0, 0.3 s): a reader that holds back new requests after a throttle sends
# nothing for that long, far longer than it takes to send a request once a slot is free.
RETRY_DELAY_S = "0.3"
SLOTS = 4  # max_read_workers of the throttle test


@pytest.fixture(scope="module")
def workers(redis_server: RedisService, fast_dynamo: EndpointProcess) -> Iterator[Fleet]:
    with fleet(redis_server, fast_dynamo.url) as running:
        running.env["FEATUREPULL_DYNAMODB__RETRY_BASE_DELAY_S"] = RETRY_DELAY_S
        running.env["FEATUREPULL_DYNAMODB__RETRY_MAX_DELAY_S"] = RETRY_DELAY_S
        # A fixed in-flight limit: in the throttle test only a throttle frees a slot.
        running.env["FEATUREPULL_DYNAMODB__ADAPTIVE_CONCURRENCY"] = "false"
        running.start_worker(concurrency=2)
        yield running


def with_shard_size(settings: Settings, shard_size: int) -> Settings:
    return settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"shard_size": shard_size})})


def write_ids(path: Path, ids: list[int]) -> Path:
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


def expected_rows(ids: list[int]) -> list[dict[str, Any]]:
    table = SyntheticTable(0)
    rows = []
    for driver in ids:
        if driver >= DRIVERS:
            rows.append({"driver_id": driver, "event_timestamp": None,
                         **dict.fromkeys(FEATURES)})
            continue
        stored = table.expected_features(driver)
        rows.append({"driver_id": driver,
                     "event_timestamp": parse_event_ts(table.event_ts(driver)),
                     **{name: decode_value(stored[name]) for name in FEATURES}})
    return rows


def test_a_throttle_holds_back_new_requests(workers: Fleet, fast_dynamo: EndpointProcess,
                                            tmp_path: Path) -> None:
    # The proxy holds every answer until the test decides, so what the worker sends after a
    # throttle is what it chose to send, at any machine load. Four requests wait; three are
    # throttled, each freeing a slot. A reader that holds back new requests sends nothing
    # until its back-off is over, and then the throttled keys (due by then) before any new
    # key; one that does not fills the freed slots with new keys at once (it passes only if
    # all three back-offs, drawn from [0, 0.3 s], are shorter than the moment between a
    # throttle and the next send).
    ids = list(range(0, 2_000, 2))  # 10 requests of 100 keys
    with FaultProxy(fast_dynamo.url, FaultPlan(hold=True)) as proxy:
        out = tmp_path / "out.parquet"
        job = submit("driver_stats", FEATURES, str(write_ids(tmp_path / "e.parquet", ids)),
                     str(out), settings=with_shard_size(workers.settings(), 10_000),
                     dynamodb={"endpoint_url": proxy.url, "max_read_workers": SLOTS,
                               "retry_deadline_s": 60, "read_mode": "batch-get"})
        first = proxy.wait_held(SLOTS, timeout=120)
        throttled = proxy.throttle_held(SLOTS - 1)
        then = proxy.wait_held(SLOTS, timeout=120)  # the one still held, then the next three
        proxy.release()
        status = job.wait(timeout=120, progress=False)
        counts = proxy.counts
    assert len(set().union(*first)) == SLOTS * 100
    assert then[0] == first[-1]
    assert sorted(map(sorted, then[1:])) == sorted(map(sorted, throttled))
    assert (status.summary or {})["read"]["throttles"] == counts["throttled"] == SLOTS - 1
    assert pq.read_table(out).to_pylist() == expected_rows(ids)


def test_more_than_ten_shards_finishing_out_of_order_are_written_in_order(
        workers: Fleet, fast_dynamo: EndpointProcess, tmp_path: Path) -> None:
    # 13 shards of 100 keys, one request each; a third of the requests are slowed down, so
    # shards finish out of order. Text order (0, 1, 10, 11, 12, 2, ...) would show at once.
    ids = [(i * 7919) % DRIVERS for i in range(1_250)] + [DRIVERS + i for i in range(50)]
    plan = FaultPlan(spike_rate=0.35, spike_s=0.25, seed=4, first_hits=1)
    with FaultProxy(fast_dynamo.url, plan) as proxy:
        out = tmp_path / "out.parquet"
        job = submit("driver_stats", FEATURES, str(write_ids(tmp_path / "e.parquet", ids)),
                     str(out), settings=with_shard_size(workers.settings(), 100),
                     dynamodb={"endpoint_url": proxy.url})
        status = job.wait(timeout=120, progress=False)
        assert proxy.counts["spikes"] > 0
    assert status.shards == 13
    finished = [line["shard"] for line in map(json_line, workers.log_text().splitlines())
                if line.get("event") == "shard_done" and line.get("job_id") == job.id]
    assert sorted(finished) == list(range(13))
    assert finished != sorted(finished)  # they did finish out of order
    assert pq.read_table(out).to_pylist() == expected_rows(ids)


def json_line(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def test_a_secret_in_a_failing_shards_error_is_masked(workers: Fleet, tmp_path: Path) -> None:
    # The job's endpoint URL carries a password; the shard's error names the endpoint.
    with start_endpoint(drivers=1_000, table="demo.driver_stats",
                        throttle_rate=1.0) as throttling:
        url = throttling.url.replace("http://", f"http://featurepull:{SECRET}@")
        job = submit("driver_stats", FEATURES,
                     str(write_ids(tmp_path / "e.parquet", list(range(300)))),
                     settings=workers.settings(),
                     dynamodb={"endpoint_url": url, "retry_deadline_s": 0.5})
        with pytest.raises(JobFailed) as failed:
            job.wait(timeout=120, progress=False)
    error = job.status().error or ""
    assert "300 of 300 keys of table demo.driver_stats" in error
    assert "featurepull:***@127.0.0.1" in error
    assert SECRET not in error and SECRET not in str(failed.value)
    shown = subprocess.run([sys.executable, "-m", "featurepull", "status", job.id,
                            "--redis-url", workers.redis_url],
                           capture_output=True, text=True, timeout=60)
    assert "failed" in shown.stdout and "featurepull:***@" in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr
    as_json = subprocess.run([sys.executable, "-m", "featurepull", "status", job.id, "--json",
                              "--redis-url", workers.redis_url],
                             capture_output=True, text=True, timeout=60)
    assert json.loads(as_json.stdout)["error"] == error
    # Nor in what Celery keeps of the failed task (its result, in the same Redis), which it
    # stores once the task has ended — after the job was marked failed.
    redis = workers.redis()

    def failures() -> list[bytes]:
        results = [redis.get(key) or b"" for key in redis.scan_iter("celery-task-meta-*")]
        return [r for r in results if b'"FAILURE"' in r]

    wait_until(failures, "FAILURE result", 60)
    assert not [r for r in failures() if SECRET.encode() in r]


@pytest.fixture(scope="module")
def plain_table(ddb: Any) -> str:
    return moto_table(ddb, "plainjob", [("user", "S")], [
        {"user": {"S": f"u{i}"}, "plan": {"S": f"p{i}"},
         "event_ts": {"S": "2020-01-01T00:00:00+00:00"},
         "updated_at": {"N": str(1_780_000_000 + i)}} for i in range(4)])


def test_a_plain_layout_job_keeps_its_event_time_attribute(workers: Fleet, endpoint_url: str,
                                                           plain_table: str,
                                                           tmp_path: Path) -> None:
    entities = tmp_path / "users.jsonl"
    users = ["u3", "ghost", "u0", "u3", "u1"] * 50  # 3 shards of at most 100
    entities.write_text("".join(json.dumps({"user": u}) + "\n" for u in users))
    out = tmp_path / "out.jsonl"
    job = submit(plain_table, ["plan"], str(entities), str(out), layout="plain",
                 event_ts_attribute="updated_at",
                 settings=with_shard_size(workers.settings(), 100),
                 dynamodb={"endpoint_url": endpoint_url})
    assert job.wait(timeout=120, progress=False).shards == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    stamps = {f"u{i}": datetime.fromtimestamp(1_780_000_000 + i, UTC) for i in range(4)}
    assert [(r["user"], r["plan"]) for r in rows] == [
        (u, None if u == "ghost" else f"p{u[1]}") for u in users]
    assert [r["event_timestamp"] and datetime.fromisoformat(r["event_timestamp"])
            for r in rows] == [stamps.get(u) for u in users]
