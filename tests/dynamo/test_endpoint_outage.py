"""An endpoint that dies mid-read: a real endpoint process (featurepull.bench.endpoint),
SIGKILLed once the first answers are in. The read must back off — new requests held back
too, so the outage costs little CPU and few connection attempts — and fail by its deadline
with a message that names the connection failures and the endpoint, not throttling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from featurepull.bench.endpoint import DEFAULT_TABLE, EndpointProcess, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout, RetryDeadlineExceeded
from tests.conftest import REGION

DRIVERS = 3_000
KEYS = 4_000  # 40 requests of 100 keys; the last 1,000 drivers do not exist
WORKERS = 4
DEADLINE_S = 3.0
LAYOUT = FeastLayout({"driver_id": "int64"})
# A process in a busy retry loop burns a whole core; backing off, a few percent.
MAX_CPU_SHARE = 0.30


@pytest.fixture
def endpoint() -> Iterator[EndpointProcess]:
    # 100 ms per answer: the read is still going when the endpoint is killed.
    with start_endpoint(drivers=DRIVERS, latency_ms=100) as running:
        yield running


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


@pytest.mark.parametrize("transport", ["fast", "botocore"])
def test_dead_endpoint_is_backed_off_and_named(endpoint: EndpointProcess,
                                               transport: str) -> None:
    settings = DynamoSettings(endpoint_url=endpoint.url, region=REGION,
                              max_read_workers=WORKERS, retry_deadline_s=DEADLINE_S,
                              retry_base_delay_s=0.05, retry_max_delay_s=1.0,
                              connect_timeout=2.0, transport=transport)
    reader = BatchReader(DEFAULT_TABLE, LAYOUT, settings, seed=1)
    keys = LAYOUT.keys_for({"driver_id": list(range(KEYS))})
    killed: dict[str, float] = {}

    def kill_on_first_answer(_: int) -> None:
        if not killed:
            endpoint.process.send_signal(signal.SIGKILL)
            endpoint.process.wait()
            killed.update(cpu=time.process_time(), wall=time.monotonic())

    with pytest.raises(RetryDeadlineExceeded) as failure:
        reader.read(keys, ["conv_rate"], progress=kill_on_first_answer)
    cpu = time.process_time() - killed["cpu"]
    wall = time.monotonic() - killed["wall"]
    message = str(failure.value)
    assert wall >= DEADLINE_S
    # The most frequent failure, as each transport words it: ours, or botocore's.
    assert (f"could not connect to 127.0.0.1:{_port(endpoint.url)}" in message
            or f'Could not connect to the endpoint URL: "{endpoint.url}/"' in message), message
    assert "the endpoint could not be reached" in message and "--endpoint-url" in message
    assert "read capacity" not in message and "throttling" not in message
    stats = failure.value.stats
    assert stats is not None and stats.throttles == 0 and stats.unprocessed_retries == 0
    assert f"{stats.connection_errors} requests failed on the connection" in message
    # Backing off holds back the batches not sent yet: waves of at most WORKERS requests,
    # each after a pause that doubles up to the 1 s cap — a few dozen attempts in 3 s.
    # Without it, each of the ~35 unanswered batches retries on its own clock (~300).
    assert stats.connection_errors <= 25 * WORKERS, stats.connection_errors
    assert cpu < MAX_CPU_SHARE * wall, f"{cpu:.2f} CPU-s over {wall:.2f} s of outage"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def test_pull_exits_1_naming_the_dead_endpoint(endpoint: EndpointProcess,
                                               tmp_path: Path) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n" + "\n".join(map(str, range(KEYS))) + "\n")
    out = tmp_path / "out.parquet"
    env = {**os.environ, "FEATUREPULL_DYNAMODB__RETRY_MAX_DELAY_S": "1.0"}
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "featurepull", "pull", "--endpoint-url", endpoint.url,
             "--region", REGION, "--project", "demo", "--table", "driver_stats",
             "--features", "conv_rate", "--entities", str(entities), "--output", str(out),
             "--max-read-workers", str(WORKERS), "--retry-deadline", str(DEADLINE_S)],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 60
        while endpoint.stats()["batch_get_item"] == 0:  # mid-read: the first answers pending
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        # Frozen for the kill, then checked: the read cannot end between the look and it.
        proc.send_signal(signal.SIGSTOP)
        assert endpoint.stats()["batch_get_item"] < KEYS // 100, "the read ended first"
        cpu_before, started = _cpu_seconds(proc.pid), time.monotonic()
        endpoint.process.send_signal(signal.SIGKILL)
        endpoint.process.wait()
        proc.send_signal(signal.SIGCONT)
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    wall = time.monotonic() - started
    stderr = (tmp_path / "stderr").read_text()
    assert os.waitstatus_to_exitcode(status) == 1, stderr
    assert "featurepull: failed:" in stderr and "Traceback" not in stderr
    assert f"could not connect to 127.0.0.1:{_port(endpoint.url)}" in stderr
    assert "the endpoint could not be reached" in stderr and "--endpoint-url" in stderr
    assert "read capacity" not in stderr and "No rows were written" in stderr
    assert not out.exists()
    assert cpu < MAX_CPU_SHARE * wall, f"{cpu:.2f} CPU-s over {wall:.2f} s of outage"
