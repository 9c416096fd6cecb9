"""Large jobs, in this process (no Celery): a job with an output keeps no rows in Redis,
publishes a file or a Parquet dataset equal to an in-process pull whatever order its shards
finish in, costs the same Redis round trips to finish and to watch at any shard count, and a
job without an output is refused over its limit. Real redis-server, real HTTP endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner, Result

from featurepull.bench.endpoint import EndpointProcess
from featurepull.cli import main
from featurepull.client import Job
from featurepull.config import Settings
from featurepull.io.parts import SUCCESS
from featurepull.local import RedisService
from featurepull.pull import PullRequest, pull
from featurepull.tasks import JobStore
from featurepull.tasks.create import create_job
from featurepull.tasks.finish import finish_job
from featurepull.tasks.requests import JobRequest, OutputRequired
from featurepull.tasks.shards import run_shard
from tests.tasks.conftest import local_job_settings

FEATURES = ["conv_rate", "city"]
# The session's 200,000 drivers (tests/tasks/conftest.py): 200,000.. are unknown; repeats.
IDS = [199_000 + (i * 37) % 1_200 for i in range(1_050)]


class CountingConnection(redis.Connection):
    """Counts what this client sends to Redis: one per command, one per pipeline (and keeps
    the bytes sent, in `packed`)."""

    sent = 0
    packed: ClassVar[list[bytes]] = []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        CountingConnection.packed.append(
            bytes(command) if isinstance(command, bytes | bytearray | memoryview)
            else b"".join(map(bytes, command)))
        super().send_packed_command(command, check_health)


@pytest.fixture
def settings(redis_server: RedisService, fast_dynamo: EndpointProcess) -> Settings:
    return local_job_settings(redis_server.url, fast_dynamo.url, shard_size=100)


@pytest.fixture
def store(settings: Settings) -> JobStore:
    pool = redis.ConnectionPool.from_url(settings.redis_url,
                                         connection_class=CountingConnection)
    return JobStore(redis.Redis(connection_pool=pool), settings.jobs.ttl_s)


@pytest.fixture
def entities(tmp_path: Path) -> Path:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(IDS, pa.int64())}), path)
    return path


def invoke(args: list[str], **env: str) -> Result:
    """The command line in this process, with these settings in its environment."""
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def pulled(entities: Path, settings: Settings, out: Path) -> pa.Table:
    """What `featurepull pull` writes for these entities, in this process."""
    pull(PullRequest(table="driver_stats", features=FEATURES), str(entities), str(out),
         settings)
    return pq.read_table(out)


def run_job(output: str | None, entities: Path, settings: Settings, store: JobStore,
            order: list[int] | None = None) -> dict[str, Any] | None:
    request = JobRequest(table="driver_stats", features=FEATURES, entities=str(entities),
                         output=output)
    meta = create_job(request, settings, store)
    for shard in order or list(range(meta.shards)):
        run_shard(meta.job_id, shard, settings, store)
        # Redis never holds a row of a job with an output, and keys only of shards not done.
        job_keys = [k.decode() for k in store.redis.scan_iter(f"featurepull:job:{meta.job_id}:*")]
        assert not [k for k in job_keys if ":rows:" in k] or output is None
        assert f"featurepull:job:{meta.job_id}:keys:{shard}" not in job_keys
    return finish_job(meta.job_id, settings, store)


@pytest.mark.parametrize("kind", ["dataset", "file"])
def test_shards_finishing_out_of_order_publish_what_pull_writes(
        kind: str, entities: Path, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    reference = pulled(entities, settings, tmp_path / "pull.parquet")
    output = f"{tmp_path}/job/" if kind == "dataset" else f"{tmp_path}/job.parquet"
    summary = run_job(output, entities, settings, store, order=[10, 3, 7, 0, 9, 1, 5, 2, 8,
                                                                6, 4])
    assert summary is not None and summary["rows_written"] == len(IDS)
    if kind == "dataset":
        assert ds.dataset(output, format="parquet").to_table().equals(reference)
        assert Path(output, SUCCESS).read_text() == summary["job_id"]
        assert len(list(Path(output).glob("part-*.parquet"))) == 11
    else:
        assert pq.read_table(output).equals(reference)
    # Nothing staged is left behind: the pull's file and the job's output only.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ids.parquet", "pull.parquet", "job" if kind == "dataset" else "job.parquet"])


def test_pull_writes_a_dataset_too(entities: Path, settings: Settings, tmp_path: Path) -> None:
    reference = pulled(entities, settings, tmp_path / "pull.parquet")
    out = f"{tmp_path}/pulled/"
    done = invoke(["pull", "--project", "demo", "--table", "driver_stats", "--features",
                   ",".join(FEATURES), "--entities", str(entities), "--output", out,
                   "--endpoint-url", settings.dynamodb.endpoint_url or "",
                   "--region", "us-east-1"], FEATUREPULL_JOBS__SHARD_SIZE="400")
    assert done.exit_code == 0, done.output
    assert ds.dataset(out, format="parquet").to_table().equals(reference)
    assert len(list(Path(out).glob("part-*.parquet"))) == 3  # 1,050 rows by 400
    assert json.loads(Path(out, "_manifest.json").read_text())["rows"] == len(IDS)


def test_finishing_and_status_cost_the_same_round_trips_at_any_shard_count(
        settings: Settings, store: JobStore, tmp_path: Path) -> None:
    costs = []
    for count in (300, 3_000):  # 3 and 30 shards
        path = tmp_path / f"ids-{count}.parquet"
        ids = pa.array(range(199_000, 199_000 + count), pa.int64())
        pq.write_table(pa.table({"driver_id": ids}), path)
        request = JobRequest(table="driver_stats", features=FEATURES, entities=str(path),
                             output=f"{tmp_path}/out-{count}/")
        meta = create_job(request, settings, store)
        for shard in range(meta.shards):
            run_shard(meta.job_id, shard, settings, store)
        job = Job(meta.job_id, settings, store)
        CountingConnection.sent = 0
        assert job.status().shards_done == meta.shards
        status = CountingConnection.sent
        CountingConnection.sent = 0
        assert finish_job(meta.job_id, settings, store) is not None
        costs.append((meta.shards, status, CountingConnection.sent))
    (small, status_small, finish_small), (large, status_large, finish_large) = costs
    assert (small, large) == (3, 30)
    assert status_small == status_large == 1
    assert finish_small == finish_large


def test_a_finisher_reads_its_shards_stats_once(settings: Settings, store: JobStore,
                                                tmp_path: Path) -> None:
    # The shards' stats (each with its 1,000 latencies at 100,000 ids) are read once, for
    # the output's parts and for the job's totals.
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(IDS, pa.int64())}), path)
    request = JobRequest(table="driver_stats", features=FEATURES, entities=str(path),
                         output=str(tmp_path / "out.parquet"))
    meta = create_job(request, settings, store)
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
    CountingConnection.packed = []
    assert finish_job(meta.job_id, settings, store) is not None
    key = f"featurepull:job:{meta.job_id}:stats".encode()
    read = b"$7\r\nHGETALL\r\n$%d\r\n%s\r\n" % (len(key), key)
    assert sum(sent.count(read) for sent in CountingConnection.packed) == 1


def test_a_job_without_output_over_its_limit_is_refused(entities: Path,
                                                        settings: Settings) -> None:
    limited = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"max_entities_without_output": 1_000})})
    request = JobRequest(table="driver_stats", features=FEATURES, entities=str(entities))
    with pytest.raises(OutputRequired, match=r"1,050 entities and no output.*1,000 entities "
                                             r"\(jobs.max_entities_without_output\).*--output"):
        create_job(request, limited, JobStore(redis.Redis.from_url(settings.redis_url), 60))
    done = invoke(["submit", "--project", "demo", "--table", "driver_stats", "--features",
                   ",".join(FEATURES), "--entities", str(entities), "--endpoint-url",
                   settings.dynamodb.endpoint_url or "", "--region", "us-east-1",
                   "--redis-url", settings.redis_url],
                  FEATUREPULL_JOBS__MAX_ENTITIES_WITHOUT_OUTPUT="1000")
    assert done.exit_code == 2, done.output
    assert "Give an output: --output FILE" in done.output
