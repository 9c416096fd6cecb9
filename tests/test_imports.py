"""What a process loads: `featurepull pull` (a whole read, CSV in, Parquet out) and
`featurepull --help` never import Celery, Flower or Redis; `featurepull submit` never builds
the worker's Celery app. Each runs in a fresh interpreter, which then lists its sys.modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.local import RedisService

JOB_MACHINERY = ("celery", "kombu", "redis", "flower", "billiard")
IDS = [3, 1, 2, 3, 2_000]

# Runs the command line in-process, then prints the top-level packages it loaded.
_RUN_AND_LIST = """
import json, sys
from featurepull.cli import main
try:
    main(sys.argv[1:], prog_name="featurepull")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=1_000, table="imports.drivers") as running:
        yield running


def _loaded(*args: str, env: dict[str, str] | None = None
            ) -> tuple[object, list[str], list[str]]:
    """The command's exit code, the modules its process loaded, and what it printed."""
    proc = subprocess.run([sys.executable, "-c", _RUN_AND_LIST, *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    *printed, last = proc.stdout.splitlines()
    report = json.loads(last)
    return report["code"], report["modules"], printed


def _machinery(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] in JOB_MACHINERY]


def test_pull_loads_no_celery_redis_or_flower(endpoint: EndpointProcess,
                                              tmp_path: Path) -> None:
    entities, out = tmp_path / "ids.csv", tmp_path / "out.parquet"
    entities.write_text("driver_id\n" + "\n".join(map(str, IDS)) + "\n")
    code, modules, _ = _loaded(
        "pull", "--project", "imports", "--table", "drivers", "--features", "conv_rate,city",
        "--entities", str(entities), "--output", str(out), "--endpoint-url", endpoint.url,
        "--region", "us-east-1")
    assert code == 0
    # The read really ran in that process: the rows are there, and the engine was loaded.
    assert pq.read_table(out).column("driver_id").to_pylist() == IDS
    assert "featurepull.dynamo.reader" in modules and "featurepull.pull" in modules
    assert _machinery(modules) == []


def test_help_loads_neither_the_job_machinery_nor_the_engine() -> None:
    code, modules, _ = _loaded("--help")
    assert code == 0
    assert _machinery(modules) == []
    assert "featurepull.dynamo.reader" not in modules and "pyarrow" not in modules


def test_submit_never_builds_the_workers_app(endpoint: EndpointProcess, redis_server: RedisService,
                                             tmp_path: Path) -> None:
    # A real submit to Redis, on a queue no worker consumes; then its job and message go.
    entities = tmp_path / "ids.csv"
    entities.write_text("driver_id\n" + "\n".join(map(str, IDS)) + "\n")
    queue = f"imports-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FEATUREPULL_JOBS__QUEUE": queue}
    code, modules, printed = _loaded(
        "submit", "--redis-url", redis_server.url, "--project", "imports", "--table",
        "drivers", "--features", "conv_rate", "--entities", str(entities), "--endpoint-url",
        endpoint.url, "--region", "us-east-1", "--json", env=env)
    assert code == 0, printed
    job_id = json.loads(printed[-1])["job_id"]
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.llen(queue) == 1  # the shard's message was sent
        assert "featurepull.worker.producer" in modules
        assert "featurepull.worker.app" not in modules
    finally:
        for key in client.scan_iter(match=f"featurepull:job:{job_id}:*"):
            client.delete(key)
        client.delete(queue)
