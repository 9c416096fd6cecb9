"""Submitting a job costs the same memory, in the submitting process and in Redis, whatever
the job's size; each shard is queued as soon as it is stored; and a job queued behind other
work is not taken for stalled. Real redis-server, real endpoint, real files, real Celery
messages on the broker (no worker: what is on the queue is what is checked)."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.cli import main
from featurepull.client import Job
from featurepull.config import Settings
from featurepull.dynamo.errors import EntityKeyError
from featurepull.io import (
    OutputError,
    StagedOutput,
    _csv_stream,
    _jsonl_entities,
    _parquet_entities,
)
from featurepull.io.parts import SUCCESS
from featurepull.local import RedisService
from featurepull.tasks import JobStore
from featurepull.tasks.create import create_job
from featurepull.tasks.finish import finish_job
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.sending import shard_sender
from featurepull.tasks.shard_keys import ShardKeysMissing
from featurepull.tasks.shards import run_shard
from featurepull.tasks.store import ACTIVE_JOBS, PREFIX, JobMeta, connect
from featurepull.tasks.watchdog import broker_keys, resend_stalled
from featurepull.worker.producer import producer_app
from tests.conftest import wait_until
from tests.damage import tear_first_page
from tests.tasks.conftest import local_job_settings, queued_messages

SHARD = 500


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=100, table="demo.driver_stats") as running:
        yield running


@pytest.fixture
def settings(redis_server: RedisService, endpoint: EndpointProcess,
             request: pytest.FixtureRequest) -> Settings:
    settings = local_job_settings(redis_server.url, endpoint.url, shard_size=SHARD)
    settings.jobs = settings.jobs.model_copy(update={
        "queue": f"bounded-{request.node.name[:40]}", "visibility_timeout_s": 60,
        "shard_time_limit_s": 30, "shard_soft_time_limit_s": 20})
    return settings


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # A tuning constant, not behaviour: a few thousand rows then span many batches.
    monkeypatch.setattr(_csv_stream, "_BLOCK_BYTES", 4096)
    monkeypatch.setattr(_parquet_entities, "_BATCH_ROWS", 5_000)
    monkeypatch.setattr(_jsonl_entities, "_CHUNK_BYTES", 16_384)


@pytest.fixture
def store(settings: Settings) -> JobStore:
    return JobStore(connect(settings.redis_url), settings.jobs.ttl_s,
                    settings.jobs.visibility_timeout_s)


def write_ids(path: Path, count: int, row_group: int = 10_000) -> Path:
    ids = pa.array([(i * 7919) % 1_000_003 for i in range(count)], pa.int64())
    pq.write_table(pa.table({"driver_id": ids}), path, row_group_size=row_group)
    return path


def job_request(entities: Path, output: Path | None) -> JobRequest:
    return JobRequest(table="driver_stats", features=["city"], entities=str(entities),
                      output=None if output is None else str(output))


def job_bytes(store: JobStore, job_id: str) -> dict[str, int]:
    """Every Redis key of the job and the memory Redis says it takes (every field counted:
    by default MEMORY USAGE estimates a large hash from 5 fields it samples at random)."""
    return {key.decode()[len(PREFIX) + len(job_id) + 1:]:
            int(store.redis.memory_usage(key, samples=0))
            for key in store.redis.scan_iter(match=f"{PREFIX}{job_id}:*")}


def python_peak(settings: Settings, store: JobStore, entities: Path, output: Path) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        create_job(job_request(entities, output), settings, store)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def write_jsonl_ids(path: Path, count: int) -> Path:
    path.write_text("".join(f'{{"driver_id": {(i * 7919) % 1_000_003}, "note": "n{i}"}}\n'
                            for i in range(count)))
    return path


@pytest.mark.parametrize(("write", "rows"), [(write_ids, 60_000), (write_jsonl_ids, 5_000)],
                         ids=["parquet", "jsonl"])
def test_a_submit_holds_the_same_memory_at_four_times_the_rows(
        settings: Settings, store: JobStore, tmp_path: Path,
        write: Callable[[Path, int], Path], rows: int) -> None:
    # Parquet: pyarrow's ParquetFile pre-buffers by default: one iter_batches over the file
    # then keeps every row group's column chunk until it ends (through a Python file
    # object, as Python bytes), so the submitter grew with the file (~4 bytes per int64
    # key). JSONL: the file was read whole, every value a Python object.
    suffix = ".parquet" if write is write_ids else ".jsonl"
    small = write(tmp_path / f"small{suffix}", rows)
    large = write(tmp_path / f"large{suffix}", 4 * rows)
    python_peak(settings, store, small, tmp_path / "warm.parquet")  # imports, table check
    small_peak = python_peak(settings, store, small, tmp_path / "small-out.parquet")
    large_peak = python_peak(settings, store, large, tmp_path / "large-out.parquet")
    # Measured: Parquet ~1.38 MB either way, 2.9 MB for the large file pre-buffered;
    # JSONL ~1.27 MB either way; read whole, 1.6 MB and 3.1 MB.
    assert large_peak - small_peak < 600_000, (small_peak, large_peak)


def test_redis_holds_a_fixed_amount_per_job_with_an_output(settings: Settings,
                                                           store: JobStore,
                                                           tmp_path: Path) -> None:
    sizes = {}
    for count in (2_000, 20_000):
        entities = write_ids(tmp_path / f"{count}.parquet", count)
        output = tmp_path / f"out-{count}.parquet"
        meta = create_job(job_request(entities, output), settings, store)
        held = job_bytes(store, meta.job_id)
        assert sorted(held) == ["alive", "meta"]  # no key per shard, none per entity
        sizes[count] = sum(held.values())
        staged = StagedOutput(str(output), meta.job_id, meta.shards)
        assert all(staged.read_keys(n) is not None for n in range(meta.shards))
        assert pa.concat_tables(staged.read_keys(n) for n in range(meta.shards)).equals(
            pq.read_table(entities))
    assert sizes[20_000] - sizes[2_000] < 64, sizes  # the shard count's digits, no more


def test_a_shard_is_read_from_its_staged_keys_and_they_go_with_the_job(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    entities = write_ids(tmp_path / "e.parquet", 1_200)
    output = tmp_path / "out.parquet"
    meta = create_job(job_request(entities, output), settings, store)
    staging = Path(StagedOutput(str(output), meta.job_id, meta.shards).staging)
    assert sorted(p.name for p in staging.iterdir()) == [
        "keys-00000.parquet", "keys-00001.parquet", "keys-00002.parquet"]
    assert [run_shard(meta.job_id, n, settings, store) for n in range(3)] == [
        False, False, True]
    assert run_shard(meta.job_id, 1, settings, store) is True  # a redelivered copy: skipped
    assert store.attempts(meta.job_id) == {0: 1, 1: 1, 2: 1}
    store.cancel(meta.job_id)
    from featurepull.tasks.output import discard_staged_output

    discard_staged_output(meta.job_id, settings, store)
    assert not staging.exists()


def test_a_shard_whose_staged_keys_are_lost_or_torn_fails_its_job(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    # Keys files are not fsynced: a machine that dies can lose one, or leave it torn.
    entities = write_ids(tmp_path / "e.parquet", 3 * SHARD)
    meta = create_job(job_request(entities, tmp_path / "out.parquet"), settings, store)
    staged = StagedOutput(str(tmp_path / "out.parquet"), meta.job_id, meta.shards)
    torn = Path(staged.staging, staged.keys_name(0))
    tear_first_page(torn)
    with pytest.raises(ShardKeysMissing, match=(
            r"^the entity keys of shard 0 in .*out\.parquet's staging area cannot be read "
            r"\(.*checksum.*\): a crash of the machine holding them can tear them \(they "
            r"are not fsynced\); submit the job again$")):
        run_shard(meta.job_id, 0, settings, store)
    truncated = Path(staged.staging, staged.keys_name(1))
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ShardKeysMissing, match=r"keys of shard 1 .* cannot be read"):
        run_shard(meta.job_id, 1, settings, store)
    Path(staged.staging, staged.keys_name(2)).unlink()
    with pytest.raises(ShardKeysMissing, match=r"keys of shard 2 are not in .* submit the job"):
        run_shard(meta.job_id, 2, settings, store)
    store.cancel(meta.job_id)  # ended: a late copy of its shard is skipped, not refused
    assert run_shard(meta.job_id, 0, settings, store) is False


# Submits a five-shard job for real, and blocks after its second shard is sent: killed there.
KILLED_SUBMITTER = r"""
import json, sys, threading
from featurepull.config import load_settings
from featurepull.tasks.create import create_job
from featurepull.tasks.requests import JobRequest
from featurepull.tasks.sending import shard_sender
from featurepull.tasks.store import JobStore, connect
from featurepull.worker.producer import producer_app

settings = load_settings(overrides=json.loads(sys.argv[1]))
store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s, 60)
with shard_sender(producer_app(settings), settings.jobs.queue) as send:
    def enqueue(meta, shard):
        send(meta, shard)
        if shard == 1:
            print(meta.job_id, flush=True)
            threading.Event().wait()
    create_job(JobRequest(**json.loads(sys.argv[2])), settings, store, enqueue=enqueue)
"""


def test_a_job_whose_submitter_is_killed_mid_submit_fails(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    # Without an output: its shards' keys are in Redis, and nothing else would end it.
    entities = write_ids(tmp_path / "e.parquet", 5 * SHARD)
    overrides = {"redis_url": settings.redis_url, "project": "demo",
                 "dynamodb": {"endpoint_url": settings.dynamodb.endpoint_url,
                              "region": "us-east-1"},
                 "jobs": {"shard_size": SHARD, "queue": settings.jobs.queue,
                          "submitter_timeout_s": 1}}
    submitter = subprocess.Popen(
        [sys.executable, "-c", KILLED_SUBMITTER, json.dumps(overrides),
         job_request(entities, None).model_dump_json()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    app = producer_app(settings)
    queue = settings.jobs.queue
    try:
        assert submitter.stdout is not None and submitter.stderr is not None
        job_id = submitter.stdout.readline().decode().strip()  # sent two shards, and waits
        assert job_id, submitter.stderr.read().decode()[-3000:]
        stored = sorted(key for key in job_bytes(store, job_id) if key.startswith("keys:"))
        assert stored == ["keys:0", "keys:1"]  # of five shards
        beat = f"{PREFIX}{job_id}:submitter"
        first = store.redis.pttl(beat)
        wait_until(lambda: store.redis.pttl(beat) > first, "sign of life of the submitter")
        # Alive, if blocked: its job is left alone (the sent shards' messages wait).
        assert job_id not in resend_stalled(app, store, queue, settings)
        assert store.state(job_id) == "queued"
        os.kill(submitter.pid, signal.SIGKILL)
        submitter.wait()
        wait_until(lambda: job_id not in resend_stalled(app, store, queue, settings) and
                   store.state(job_id) == "failed", "failure of the job")
        assert job_id not in resend_stalled(app, store, queue, settings)  # ended: not looked after
        assert store.state(job_id) == "failed"
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.wait()
        app.close()
        store.redis.delete(queue)
    assert store.meta(job_id).error == (
        f"the process that submitted the job ({socket.gethostname()}:{submitter.pid}) "
        "stopped before it had stored and sent every shard (it was killed, or its machine "
        "died); submit the job again")
    assert not [key for key in job_bytes(store, job_id) if key.startswith("keys:")]
    assert job_id not in store.active_jobs()
    assert run_shard(job_id, 0, settings, store) is False  # its sent shards are skipped


def test_a_job_left_half_submitted_loses_what_it_staged(settings: Settings, store: JobStore,
                                                        tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    meta = create_job(job_request(write_ids(tmp_path / "e.parquet", 3 * SHARD), output),
                      settings, store)
    staging = Path(StagedOutput(str(output), meta.job_id, meta.shards).staging)
    assert len(list(staging.glob("keys-*"))) == 3
    app = producer_app(settings)
    try:
        assert meta.job_id not in resend_stalled(app, store, settings.jobs.queue, settings)
        # As its submitter left it when killed mid-submit (its sign of life expired).
        store.redis.hset(f"{PREFIX}{meta.job_id}:meta", "submitting", "elsewhere:1")
        resend_stalled(app, store, settings.jobs.queue, settings)
    finally:
        app.close()
    assert store.meta(meta.job_id).error.startswith(  # type: ignore[union-attr]
        "the process that submitted the job (elsewhere:1) stopped before")
    assert not staging.exists() and not output.exists()


def test_each_shard_is_queued_as_soon_as_its_keys_are_stored(settings: Settings,
                                                             store: JobStore,
                                                             tmp_path: Path) -> None:
    entities = write_ids(tmp_path / "e.parquet", 5 * SHARD)
    output = tmp_path / "out.parquet"
    queue = settings.jobs.queue
    seen: list[tuple[int, int, int]] = []  # (shard, keys staged, messages on the queue)
    app = producer_app(settings)
    try:
        with shard_sender(app, queue) as send:
            def observed(meta: JobMeta, shard: int) -> None:
                send(meta, shard)
                staged = Path(StagedOutput(str(output), meta.job_id, meta.shards).staging)
                seen.append((shard, len(list(staged.glob("keys-*"))),
                             int(store.redis.llen(queue))))

            create_job(job_request(entities, output), settings, store, enqueue=observed)
    finally:
        app.close()
    # The first message was on the queue when one shard of five was stored.
    assert seen == [(n, n + 1, n + 1) for n in range(5)]


def test_a_bad_key_found_after_shards_were_sent_fails_that_job(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    # int32 keys: 2**31 on the last row fits the file's int64 column but not the join key.
    path.write_text("driver_id\n" + "\n".join(map(str, [*range(4 * SHARD), 2**31])) + "\n")
    output = tmp_path / "out.parquet"
    sent: list[tuple[str, int]] = []
    request = JobRequest(table="driver_stats", features=["city"], entities=str(path),
                         output=str(output), join_keys=["driver_id"],
                         join_key_types={"driver_id": "int32"})
    with pytest.raises(EntityKeyError, match="entity row 2001"):
        create_job(request, settings, store,
                   enqueue=lambda meta, shard: sent.append((meta.job_id, shard)))
    assert sent, "no shard was sent before the bad row was read"
    job_id = sent[0][0]
    assert [shard for _, shard in sent] == list(range(len(sent)))
    meta = store.meta(job_id)
    assert meta.state == "failed" and f"{len(sent)} of 5 shards" in (meta.error or "")
    # Its messages find the job ended: nothing read, nothing staged, nothing left.
    assert run_shard(job_id, 0, settings, store) is False
    assert not list(tmp_path.glob(".out.parquet.parts-*")) and not output.exists()
    assert not [k for k in job_bytes(store, job_id) if k.startswith("keys:")]


def test_a_job_queued_behind_other_work_is_not_resent(settings: Settings, store: JobStore,
                                                      tmp_path: Path) -> None:
    entities = write_ids(tmp_path / "e.parquet", 3 * SHARD)
    queue = settings.jobs.queue
    lists, unacked = broker_keys(producer_app(settings), queue)
    app = producer_app(settings)
    try:
        with shard_sender(app, queue) as send:
            meta = create_job(job_request(entities, tmp_path / "out.parquet"), settings,
                              store, enqueue=send)
        alive = f"{PREFIX}{meta.job_id}:alive"

        def waiting() -> int:  # this job's messages on the queue (the session's Redis is
            return sum(args[0] == meta.job_id  # shared: other jobs may be re-sent too)
                       for _, args, _, _ in queued_messages(store.redis, queue))

        store.redis.delete(alive)  # idle for visibility_timeout_s: its sign of life expired
        # Its three messages wait on the queue, behind other work: a sign of life.
        assert meta.job_id not in resend_stalled(app, store, queue, settings)
        assert store.redis.get(alive) == b"queued"
        assert waiting() == 3
        # Held unacked by a worker (prefetched, not started) is waiting too.
        messages = store.redis.lrange(queue, 0, -1)
        store.redis.delete(queue)
        store.redis.hset(unacked, "tag-1", messages[0])
        store.redis.delete(alive)
        assert meta.job_id not in resend_stalled(app, store, queue, settings)
        # Lost (kombu#305: neither queued nor unacked): the shards not done are sent again.
        store.redis.hdel(unacked, "tag-1")
        store.redis.delete(alive)
        assert resend_stalled(app, store, queue, settings)[meta.job_id] == [0, 1, 2]
        assert waiting() == 3
        assert lists[0] == queue
    finally:
        app.close()
        store.redis.delete(queue)
        store.redis.zrem(ACTIVE_JOBS, meta.job_id)


def test_fetch_writes_a_job_kept_in_redis_as_a_dataset(settings: Settings, store: JobStore,
                                                       tmp_path: Path) -> None:
    entities = write_ids(tmp_path / "e.parquet", 1_200)
    meta = create_job(job_request(entities, None), settings, store)  # rows kept in Redis
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
    finish_job(meta.job_id, settings, store)
    job = Job(meta.job_id, settings, store)
    out = tmp_path / "fetched"
    assert job.save(f"{out}/") == 1_200
    dataset = ds.dataset(out, format="parquet").to_table()
    assert dataset.to_pylist() == [row for table in job.tables() for row in table.to_pylist()]
    assert dataset.column("driver_id").to_pylist() == pq.read_table(entities).column(0).to_pylist()
    assert sorted(p.name for p in out.iterdir()) == [
        SUCCESS, "_manifest.json", "part-00000.parquet", "part-00001.parquet",
        "part-00002.parquet"]
    with pytest.raises(OutputError, match="already holds files; pass --overwrite"):
        job.save(f"{out}/")
    fetched = CliRunner().invoke(main, ["fetch", meta.job_id, "--output", f"{out}/",
                                        "--overwrite"],
                                 env={"FEATUREPULL_REDIS_URL": settings.redis_url},
                                 catch_exceptions=False)
    assert fetched.exit_code == 0, fetched.output
    assert "wrote 1,200 rows" in fetched.output
    assert ds.dataset(out, format="parquet").to_table().equals(dataset)
