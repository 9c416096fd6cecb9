"""A job whose shards find no item holding a requested feature fails, through real prefork
workers, with the message `pull` gives for the same input (the first shard to see it fails
the job; no output is written) and `featurepull submit --wait` exits 2; with
--allow-missing-features the job reads the feature as null."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job
from featurepull.local import RedisService
from tests.tasks.conftest import Fleet, fleet

ENTITIES = 3_000
SHARD_SIZE = 1_000


@pytest.fixture(scope="module")
def workers(redis_server: RedisService, fast_dynamo: EndpointProcess) -> Iterator[Fleet]:
    with fleet(redis_server, fast_dynamo.url, shard_size=SHARD_SIZE) as running:
        running.start_worker(concurrency=2)
        yield running


def submit_wait(workers: Fleet, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n" + "\n".join(map(str, range(ENTITIES))) + "\n")
    return subprocess.run(
        [sys.executable, "-m", "featurepull", "submit", "--table", "driver_stats",
         "--features", "conv_rat,city", "--entities", str(entities), "--output",
         str(tmp_path / "out.parquet"), "--wait", *extra],
        capture_output=True, text=True, timeout=120, env=workers.env)


def test_a_feature_no_shard_finds_fails_the_job_and_exits_2(workers: Fleet,
                                                            tmp_path: Path) -> None:
    proc = submit_wait(workers, tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("featurepull: error: job ") and " failed: shard " in line
    assert "feature 'conv_rat' is held by none of the " in line
    assert f"they hold in their values map: {', '.join(sorted(FEATURES))}" in line
    assert "did you mean 'conv_rate'?" in line and "--allow-missing-features" in line
    assert not (tmp_path / "out.parquet").exists()
    job_id = line.split()[3]
    status = Job(job_id, workers.settings()).status()
    assert status.state == "failed" and status.error_kind == "input"
    assert status.summary is None


def test_allow_missing_features_reaches_the_workers(workers: Fleet, tmp_path: Path) -> None:
    proc = submit_wait(workers, tmp_path, "--allow-missing-features")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == ENTITIES and table.column("conv_rat").null_count == ENTITIES
    assert table.column("city").null_count == 0
