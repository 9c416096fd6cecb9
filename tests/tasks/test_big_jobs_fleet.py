"""Large jobs through real prefork workers: no job left hanging (a shard message lost from
the queue is re-sent by the watchdog; a finisher killed right after publishing the output is
completed by the retry, keeping the same file), a Parquet dataset written through
`featurepull submit --output DIR/` equal to an in-process pull while a worker process is
SIGKILLed, and no row of a job with an output ever in Redis. One fleet with few-second
time limits serves the module; the killed-worker test has its own, with the default limits."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from celery import Celery
from click.testing import CliRunner

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.cli import main
from featurepull.client import Job
from featurepull.io import open_sink
from featurepull.io.parts import SUCCESS
from featurepull.local import RedisService
from featurepull.pull import PullRequest, pull
from tests.conftest import wait_until
from tests.hardening._util import freeze_finisher_mid_write, run_job, wait_for_log, write_entities
from tests.tasks.conftest import DRIVERS, Fleet, fleet, freeze_mid_shard, queued_messages

pytestmark = pytest.mark.slow  # starts a worker fleet

ENTITIES = 24_000
SHARD_SIZE = 2_000  # 12 shards
# Short enough that a stalled job is noticed within seconds, long enough for any shard.
IDLE_S = 8


@pytest.fixture(scope="module")
def workers(redis_server: RedisService, fast_dynamo: EndpointProcess) -> Iterator[Fleet]:
    with fleet(redis_server, fast_dynamo.url, shard_size=SHARD_SIZE,
               visibility_timeout_s=IDLE_S, shard_soft_time_limit_s=IDLE_S - 2,
               shard_time_limit_s=IDLE_S - 1, redelivery_check_s=1) as running:
        running.start_worker(concurrency=2)
        yield running


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ids = [(i * 7_919) % (DRIVERS + DRIVERS // 10) for i in range(ENTITIES)]  # 9% unknown
    return write_entities(tmp_path_factory.mktemp("entities") / "ids.parquet", ids)


@pytest.fixture(scope="module")
def reference(entities: Path, workers: Fleet,
              tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """What `featurepull pull` writes for the same entities, in this process."""
    out = tmp_path_factory.mktemp("reference") / "pull.parquet"
    pull(PullRequest(table="driver_stats", features=list(FEATURES)), str(entities), str(out),
         workers.settings())
    return pq.read_table(out)


def shard_messages(workers: Fleet) -> dict[int, bytes]:
    """The read_shard messages waiting on the queue, by shard number."""
    return {int(args[1]): raw for task, args, _, raw in queued_messages(workers.redis(),
                                                                        workers.queue)
            if task == "featurepull.read_shard"}


def test_a_shard_message_lost_from_the_queue_is_resent(workers: Fleet, entities: Path,
                                                       reference: pa.Table,
                                                       tmp_path: Path) -> None:
    control = Celery(broker=workers.redis_url)
    try:
        # The worker stops taking messages, so one can be taken off the queue by hand, as
        # kombu's window loses it (popped, never in the unacked set).
        assert control.control.cancel_consumer(workers.queue, reply=True, timeout=10, limit=1)
        out = tmp_path / "job.parquet"
        job = run_job(workers, entities, out)
        messages = shard_messages(workers)
        assert sorted(messages) == list(range(12))
        assert workers.redis().lrem(workers.queue, 1, messages[6]) == 1
        assert control.control.add_consumer(workers.queue, reply=True, timeout=10, limit=1)
    finally:
        control.close()
    status = job.wait(timeout=120, progress=False)
    assert status.state == "succeeded"
    assert pq.read_table(out).equals(reference)
    assert (status.summary or {})["redelivered_shards"] == 0  # shard 6 ran once, re-sent
    logs = workers.log_text()
    resent = [json.loads(line) for line in logs.splitlines() if "job_stalled_resent" in line]
    assert [r["shards"] for r in resent if r["job_id"] == job.id] == [[6]], logs[-3000:]


def test_a_finisher_killed_right_after_publishing_is_completed(workers: Fleet, entities: Path,
                                                               reference: pa.Table,
                                                               tmp_path: Path) -> None:
    expected = tmp_path / "truth.csv"
    with open_sink(str(expected), reference.schema) as sink:
        sink.write(reference)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "job.csv"  # CSV: written row by row, so the finisher is caught mid-write
    job, _, finisher = freeze_finisher_mid_write(lambda: run_job(workers, entities, out),
                                                 out_dir, out.name, 120)
    server = workers.redis()
    try:
        # Redis takes no more writes: the finisher can publish the file but not mark the
        # job succeeded. Killed there, it leaves the output in place and the job finishing.
        server.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        assert job.store.state(job.id) == "finishing"
        os.kill(finisher, signal.SIGCONT)
        wait_until(out.exists, "published output", 60)
        published = os.stat(out)
        os.kill(finisher, signal.SIGKILL)
        assert job.store.state(job.id) == "finishing"
    finally:
        with suppress(ProcessLookupError):
            os.kill(finisher, signal.SIGCONT)
        server.execute_command("CLIENT", "UNPAUSE")
    status = job.wait(timeout=120, progress=False)
    assert status.state == "succeeded"
    assert (os.stat(out).st_ino, os.stat(out).st_mtime_ns) == (published.st_ino,
                                                               published.st_mtime_ns)
    assert out.read_text() == expected.read_text()
    assert os.listdir(out_dir) == ["job.csv"]  # nothing staged left behind
    assert "output_already_published" in workers.log_text()
    wait_for_log(workers, f"pid:{finisher} exited with 'signal 9")  # logged when it is seen


@pytest.fixture
def roomy_workers(redis_server: RedisService, fast_dynamo: EndpointProcess) -> Iterator[Fleet]:
    """Workers with the default time limits: the kill is placed mid-shard by a condition
    (freeze_mid_shard) and the killed shard is re-sent at once (reject_on_worker_lost), so
    nothing here waits on a clock — and a loaded machine cannot push a shard, or a pool
    child replacing the killed one, past the module fleet's few-second limits."""
    with fleet(redis_server, fast_dynamo.url, shard_size=SHARD_SIZE) as running:
        running.start_worker(concurrency=2)
        yield running


def test_a_dataset_through_submit_survives_a_killed_worker(roomy_workers: Fleet, entities: Path,
                                                           reference: pa.Table,
                                                           tmp_path: Path) -> None:
    workers = roomy_workers
    out = f"{tmp_path}/features/"
    server = workers.redis()
    samples: list[tuple[int, int]] = []  # (rows keys, keys keys) of the job, seen in Redis
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            names = [k.decode() for k in server.scan_iter("featurepull:job:*", count=1000)]
            samples.append((sum(":rows:" in n for n in names),
                            sum(":keys:" in n for n in names)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    settings = {k: v for k, v in workers.env.items() if k.startswith("FEATUREPULL_")}
    submitted = CliRunner().invoke(main, [
        "submit", "--table", "driver_stats", "--features", ",".join(FEATURES),
        "--entities", str(entities), "--output", out, "--json"], env=settings,
        catch_exceptions=False)
    try:
        assert submitted.exit_code == 0, submitted.output
        job = Job(json.loads(submitted.output)["job_id"], workers.settings())
        victim = freeze_mid_shard(job, among=workers.children(workers.workers[0]))
        os.kill(victim, signal.SIGKILL)
        status = job.wait(timeout=120, progress=False)
    finally:
        stop.set()
        sampler.join(timeout=10)
    summary = status.summary or {}
    assert summary["rows_written"] == ENTITIES and summary["redelivered_shards"] >= 1
    table = ds.dataset(out, format="parquet").to_table()
    assert table.equals(reference)
    assert Path(out, SUCCESS).read_text() == summary["job_id"]
    assert sorted(os.listdir(out))[:3] == [SUCCESS, "_manifest.json", "part-00000.parquet"]
    # Redis never held a row, nor a shard's keys: those are staged beside the output.
    assert len(samples) > 10 and max(rows for rows, _ in samples) == 0
    assert max(keys for _, keys in samples) == 0
