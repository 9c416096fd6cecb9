"""What a process loads: `featurepull pull` (a whole read, CSV in, Parquet out) never imports
Celery, Flower or Redis, nor boto3, s3transfer, pandas, numpy or cloudpickle (installed here:
Feast needs them);
`featurepull --help` not even pydantic or pyarrow; `featurepull submit` loads no Celery at
all. Each runs the console script's `run()` in a fresh interpreter, which then
lists its sys.modules (a pull's, just before its `os._exit`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.local import RedisService
from featurepull.tasks.store import ACTIVE_JOBS
from tests.conftest import without_aws_settings

if TYPE_CHECKING:
    from tests.faultproxy import FaultProxy

JOB_MACHINERY = ("celery", "kombu", "redis", "flower", "billiard")
# Not on a pull's way either: its clients are botocore's own (boto3 and s3transfer only for
# an S3 transfer), and pyarrow runs without pandas, numpy and cloudpickle
# (featurepull.cli._lean_pull).
NOT_FOR_A_PULL = (*JOB_MACHINERY, "boto3", "s3transfer", "pandas", "numpy", "cloudpickle")
IDS = [3, 1, 2, 3, 2_000]

# Runs the console script's entry point as `featurepull ARGS` does, then prints the exit code
# and the modules it loaded: when it exits, or (a pull) just before it skips the teardown.
_RUN_AND_LIST = """
import json, os, sys
from featurepull.cli import run

def report(code):
    print(json.dumps({"code": code, "modules": sorted(sys.modules)}), flush=True)

exit_now = os._exit
os._exit = lambda code: (report(code), exit_now(code))
sys.argv[0] = "featurepull"
try:
    run()
except SystemExit as exc:
    report(exc.code)
else:
    report(0)
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


def _machinery(modules: list[str], packages: tuple[str, ...] = JOB_MACHINERY) -> list[str]:
    return [name for name in modules if name.split(".")[0] in packages]


def test_pull_loads_no_job_machinery_boto3_or_pandas(endpoint: EndpointProcess,
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
    assert "pyarrow.parquet" in modules
    assert _machinery(modules, NOT_FOR_A_PULL) == []
    # Its values are plain scalars (a double, a string), read from the bytes: no protobuf.
    assert "featurepull.dynamo._feast_value_proto" not in modules
    assert _machinery(modules, ("google",)) == []


def _aws_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without AWS, botocore or proxy variables, a home without ~/.aws,
    credentials in the environment, and ``extra``."""
    return {**without_aws_settings(os.environ), "HOME": str(home),
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **extra}


def _pull_drivers(endpoint: EndpointProcess | FaultProxy, tmp_path: Path, env: dict[str, str]
                  ) -> tuple[list[str], bytes]:
    modules, written, _ = _pull_summary(endpoint, tmp_path, env)
    return modules, written


def _pull_summary(endpoint: EndpointProcess | FaultProxy, tmp_path: Path, env: dict[str, str]
                  ) -> tuple[list[str], bytes, dict[str, Any]]:
    """The modules, the Parquet written and the --json summary of a pull of IDS."""
    entities, out = tmp_path / "ids.csv", tmp_path / "out.parquet"
    entities.write_text("driver_id\n" + "\n".join(map(str, IDS)) + "\n")
    code, modules, printed = _loaded(
        "pull", "--project", "imports", "--table", "drivers", "--features", "conv_rate,city",
        "--entities", str(entities), "--output", str(out), "--endpoint-url", endpoint.url,
        "--region", "us-east-1", "--overwrite", "--json", env=env)
    assert code == 0, printed
    assert pq.read_table(out).column("driver_id").to_pylist() == IDS
    return modules, out.read_bytes(), json.loads(printed[-1])


@pytest.fixture(scope="module")
def clean_pull(endpoint: EndpointProcess, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[list[str], bytes]:
    """The modules and the Parquet of a fault-free pull with credentials in the environment."""
    home = tmp_path_factory.mktemp("clean")
    return _pull_drivers(endpoint, home, _aws_env(home))


def _same_rows(one: bytes, other: bytes) -> bool:
    return bool(pq.read_table(pa.BufferReader(one)).equals(pq.read_table(pa.BufferReader(other))))


def test_pull_with_credentials_in_the_environment_builds_no_botocore_client(
        endpoint: EndpointProcess, clean_pull: tuple[list[str], bytes], tmp_path: Path) -> None:
    # botocore's chain would take these credentials first: the pull signs them itself
    # (featurepull.dynamo._env_client), and botocore's session and client are never loaded.
    modules, written = clean_pull
    assert "featurepull.dynamo._env_client" in modules
    # Not even botocore's or urllib3's exceptions: the reader names them only when it
    # matches an exception (featurepull.dynamo._aws_errors).
    assert [name for name in modules if name.split(".")[0] in ("botocore", "urllib3")
            or name == "featurepull.aws"] == []
    # A profile (here with its own config file) is botocore's to resolve: the same pull
    # then builds botocore's client, and writes the same rows.
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text("[profile dev]\nregion = us-east-1\n")
    for extra in ({"AWS_PROFILE": "dev"}, {}):
        modules, again = _pull_drivers(endpoint, tmp_path, _aws_env(tmp_path, **extra))
        assert "botocore.client" in modules and "botocore.session" in modules, extra
        assert "featurepull.dynamo._env_client" in modules  # asked, and it declined
        assert _same_rows(again, written)


def test_a_botocore_free_pull_retries_error_answers_as_botocore_would(
        endpoint: EndpointProcess, clean_pull: tuple[list[str], bytes], tmp_path: Path) -> None:
    # The first BatchGetItems are throttled (a storm from the first request on): the fast
    # transport raises botocore's ClientError for them, importing its exceptions only then,
    # and the reader retries them as throttles; botocore's client is still never built.
    from tests.faultproxy import FaultPlan, FaultProxy

    with FaultProxy(endpoint.url, FaultPlan(storm_s=0.2)) as proxy:
        modules, written, summary = _pull_summary(proxy, tmp_path, _aws_env(tmp_path))
        assert proxy.counts["storm_throttled"] >= 1
    assert summary["throttles"] == proxy.counts["storm_throttled"]
    assert "botocore.exceptions" in modules
    assert [name for name in modules if name in ("botocore.session", "botocore.client")] == []
    assert _same_rows(written, clean_pull[1])


def test_a_describe_table_that_fails_once_succeeds_through_botocore(
        endpoint: EndpointProcess, clean_pull: tuple[list[str], bytes], tmp_path: Path) -> None:
    # DescribeTable answers 500 once: the env client's own request gets it, asks again
    # through botocore's client (built now), which gets the table; the pull goes on.
    from tests.faultproxy import FaultPlan, FaultProxy

    with FaultProxy(endpoint.url, FaultPlan(describe_errors=1)) as proxy:
        modules, written, _ = _pull_summary(proxy, tmp_path, _aws_env(tmp_path))
        assert (proxy.counts["describe_requests"], proxy.counts["describe_errors"]) == (2, 1)
    assert "featurepull.dynamo._env_client" in modules and "botocore.client" in modules
    assert _same_rows(written, clean_pull[1])


def test_a_pull_with_a_scorer_may_use_pandas(endpoint: EndpointProcess, tmp_path: Path) -> None:
    # A scorer is user code: the pull leaves pandas importable for it, and its scores land.
    entities, out = tmp_path / "ids.csv", tmp_path / "out.parquet"
    entities.write_text("driver_id\n" + "\n".join(map(str, IDS)) + "\n")
    (tmp_path / "pandas_scorer.py").write_text(
        "import pandas as pd\n"
        "import pyarrow as pa\n\n"
        "def score(table):\n"
        "    frame = table.to_pandas()\n"
        "    return {'double': pa.array(frame['conv_rate'].fillna(-1.0) * 2)}\n")
    config = tmp_path / "featurepull.toml"
    config.write_text('[[scorers]]\nname = "double"\npath = "pandas_scorer:score"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    code, modules, printed = _loaded(
        "pull", "--config", str(config), "--project", "imports", "--table", "drivers",
        "--features", "conv_rate", "--scorer", "double", "--entities", str(entities),
        "--output", str(out), "--endpoint-url", endpoint.url, "--region", "us-east-1", env=env)
    assert code == 0, printed
    assert "pandas" in modules
    written = pq.read_table(out)
    assert written.column("driver_id").to_pylist() == IDS
    # 2,000 is no driver of the endpoint's: no conv_rate, so the scorer's -1.0, doubled.
    assert written.column("double").to_pylist()[-1] == -2.0
    assert all(score >= 0 for score in written.column("double").to_pylist()[:-1])


def test_help_loads_neither_the_job_machinery_nor_the_engine() -> None:
    code, modules, _ = _loaded("--help")
    assert code == 0
    assert _machinery(modules) == []
    assert "featurepull.dynamo.reader" not in modules and "pyarrow" not in modules
    assert "pydantic" not in modules


def test_pull_help_loads_no_settings_or_engine() -> None:
    code, modules, printed = _loaded("pull", "--help")
    assert code == 0 and any("--entities" in line for line in printed)
    assert [name for name in modules if name.split(".")[0] in (
        *JOB_MACHINERY, "pydantic", "pyarrow", "botocore")] == []


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
        # Written as Celery writes it (featurepull.tasks.task_messages), without Celery:
        # neither the worker's app nor the producer's, nor Celery and kombu themselves.
        assert [name for name in modules if name.startswith((
            "featurepull.worker.app", "featurepull.worker.producer"))] == []
        assert [name for name in modules if name.split(".")[0] in (
            "celery", "kombu", "billiard", "amqp")] == []
        # Nor structlog (and rich, which it imports): its modules log only on a failure.
        assert [name for name in modules if name.split(".")[0] in ("structlog", "rich")] == []
        # Submitted as lean as a pull reads: pyarrow without pandas, numpy, cloudpickle.
        assert _machinery(modules, ("pandas", "numpy", "cloudpickle")) == []
        # Nor what only the workers or a wait use, before its first shard is queued: the
        # tasks module (the read and finish machinery), the Feast registry (protobuf), the
        # Redis result backend (a shard's result is never waited on here), tqdm.
        assert [name for name in modules if name.startswith((
            "featurepull.tasks.celery_tasks", "featurepull.tasks.shards",
            "featurepull.dynamo.feast_registry", "google.protobuf", "celery.backends.redis",
            "tqdm"))] == []
        # Nor what only a worker's read, scan or output uses: pyarrow.compute (~190 M
        # instructions to import; the entity file is typed through featurepull.arrow_compute),
        # the output's encoders, sinks and row tables, the scanner and the read's event loop;
        # nor tomllib without a config file.
        assert [name for name in modules if name.startswith((
            "pyarrow.compute", "featurepull.io.sink", "featurepull.io._encoders",
            "featurepull.io.tables", "featurepull.io.rows", "featurepull.io._text_columns",
            "featurepull.dynamo.scan", "featurepull.dynamo.loops", "tomllib"))] == []
    finally:
        for key in client.scan_iter(match=f"featurepull:job:{job_id}:*"):
            client.delete(key)
        client.zrem(ACTIVE_JOBS, job_id)  # the watchdog's list
        client.delete(queue)


def test_a_submit_refused_before_its_first_shard_loads_no_celery(
        endpoint: EndpointProcess, redis_server: RedisService, tmp_path: Path) -> None:
    # Nor does a refused one (a bad entity file).
    entities = tmp_path / "ids.csv"
    entities.write_text("driver_id\n1\n\n2\n")  # a blank line: the exact reader refuses it
    code, modules, printed = _loaded(
        "submit", "--redis-url", redis_server.url, "--project", "imports", "--table",
        "drivers", "--features", "conv_rate", "--entities", str(entities), "--endpoint-url",
        endpoint.url, "--region", "us-east-1")
    assert code == 2, printed
    assert [name for name in modules if name.split(".")[0] in ("celery", "kombu")] == []


def test_a_workers_pool_processes_inherit_pandas_from_its_main_process() -> None:
    # pyarrow imports pandas at its first conversion of a list (~0.4 s of CPU): the worker's
    # main process does it before the pool forks (Celery's celeryd_init, sent once in the
    # main process), not each pool process in its first shard. Only that receiver is
    # called: the signal's others would set up logging, scorers and metrics from the
    # environment.
    script = ("import sys; from celery.signals import celeryd_init; "
              "from featurepull.worker.app import _preload_before_fork, connect_signals; "
              "connect_signals(); before = 'pandas' in sys.modules; "
              "connected = any(r is _preload_before_fork for _, r in celeryd_init.receivers); "
              "_preload_before_fork(signal=celeryd_init, sender='test', instance=None, "
              "conf=None, options={}); "
              "print(before, connected, 'pandas' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.split() == ["False", "True", "True"]
