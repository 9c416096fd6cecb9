"""Through real Celery workers: a job that finds nothing says so (summary, CLI, worker log),
and a ``featurepull.submit_job`` request with missing or invalid fields is refused with a
message that lists them — not pydantic's ``ValidationError()``, which arrives empty at a
``send_task`` caller (issue 18, items 3 and 8)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.local import RedisService
from featurepull.worker.app import producer_app
from tests.conftest import wait_until
from tests.hardening._util import wait_for_log
from tests.ops.conftest import redis_contents
from tests.tasks.conftest import Fleet, fast_dynamo, fleet  # noqa: F401


@pytest.fixture(scope="module")
def workers(fast_dynamo: EndpointProcess,  # noqa: F811
            redis_server: RedisService) -> Iterator[Fleet]:
    """One worker instance for this module's tests."""
    with fleet(redis_server, fast_dynamo.url) as running:
        running.start_worker(concurrency=1)
        yield running


def test_nothing_found_warning_and_invalid_requests_through_workers(
        workers: Fleet, tmp_path: Path) -> None:
    entities = tmp_path / "drivers.csv"
    # An extra column without --join-keys is a join key: no driver matches.
    entities.write_text("driver_id,region\n1,eu\n2,us\n3,eu\n")
    cli = subprocess.run(
        [sys.executable, "-m", "featurepull", "submit", "--table", "driver_stats",
         "--features", ",".join(FEATURES), "--entities", str(entities),
         "--output", str(tmp_path / "out.csv"), "--wait"],
        capture_output=True, text=True, timeout=120, env=workers.env)
    assert cli.returncode == 0, cli.stderr
    warning = ("0 of 3 entities were found in table demo.driver_stats; their keys were "
               "built from the join keys driver_id (int64), region (string)")
    assert f"featurepull: warning: {warning}" in cli.stderr
    job_id = cli.stdout.split("featurepull: job ")[1].split()[0]
    status = subprocess.run(
        [sys.executable, "-m", "featurepull", "status", job_id, "--json"],
        capture_output=True, text=True, timeout=60, env=workers.env)
    summary = json.loads(status.stdout)["summary"]
    assert summary["read"]["found"] == 0
    assert summary["warnings"][0].startswith(warning)
    assert "--join-keys" in summary["warnings"][0]
    assert "nothing_found" in workers.log_text()
    # No jobs.allowed_* in this fleet's config: the worker said at start what that means.
    assert "jobs_unbounded" in workers.log_text()
    assert "jobs.allowed_outputs (env FEATUREPULL_JOBS__ALLOWED_OUTPUTS)" in workers.log_text()

    app = producer_app(workers.settings())
    try:
        def submit(request: Any) -> Any:
            result = app.send_task("featurepull.submit_job", args=[request],
                                   queue=workers.queue)
            return result.get(timeout=30, propagate=True)

        with pytest.raises(Exception) as caught:
            submit({"features": "conv_rate", "entities": str(entities), "colour": 1})
        assert type(caught.value).__name__ == "InvalidJobRequest"
        message = str(caught.value)
        assert message.startswith("invalid featurepull.submit_job request")
        for line in ("table: required", "features='conv_rate': Input should be a valid list",
                     "colour: unknown field"):
            assert f"\n  {line}" in message, message
        with pytest.raises(Exception) as caught:
            submit(["driver_stats"])
        assert "request is a list, not a JSON object" in str(caught.value)
    finally:
        app.close()


# Secrets a sender could put in a bad request; the worker knows none of them (its log
# renderer masks only the credentials in its own environment). CUT sits where an 80-character
# excerpt of the request's dynamodb field ends: cut before it was masked, its start showed.
PLANTED = {"url": "url-pw-Xk29fQ", "key": "key-value-Rb71sT", "cut": "cut-pw-Mn45vW",
           "notify": "notify-pw-Jq83zL"}


def _planted_leaks(*texts: str | bytes) -> list[str]:
    """The planted secrets whose first eight characters occur in any of ``texts``."""
    blobs = [t if isinstance(t, bytes) else t.encode() for t in texts]
    return [name for name, secret in PLANTED.items()
            if any(secret[:8].encode() in blob for blob in blobs)]


def test_an_invalid_request_echoes_no_secret_it_carries(workers: Fleet,
                                                        tmp_path: Path) -> None:
    entities = tmp_path / "drivers.csv"
    entities.write_text("driver_id\n1\n")
    requests = [
        {"table": "driver_stats", "features": ["conv_rate"], "entities": str(entities),
         "dynamodb": {"endpoint_url": f"http://r:{PLANTED['url']}@db:8000",
                      "aws_secret_access_key": PLANTED["key"]}},
        {"table": "driver_stats", "features": ["conv_rate"], "entities": str(entities),
         "dynamodb": {"endpoint_url": "http://a-user-name-long-enough-to-reach-the-cut:"
                                      f"{PLANTED['cut']}@db:8000", "colour": 1}},
        {"table": "driver_stats", "features": ["conv_rate"], "entities": str(entities),
         "notify": f"redis://:{PLANTED['notify']}@cache.internal:6379/0"},
    ]
    app = producer_app(workers.settings())
    messages, results, ids = [], [], []
    try:
        for request in requests:  # sent as another Celery app sends it
            result = app.send_task("featurepull.submit_job", args=[request],
                                   queue=workers.queue)
            with pytest.raises(Exception) as caught:
                result.get(timeout=30, propagate=True)
            assert type(caught.value).__name__ == "InvalidJobRequest"
            messages.append(str(caught.value))
            results.append(f"{result.result!r} {result.traceback}")
            ids.append(result.id)
    finally:
        app.close()
    cli = subprocess.run(
        [sys.executable, "-m", "featurepull", "submit", "--table", "driver_stats",
         "--features", "conv_rate", "--entities", str(entities),
         "--notify-task", f"redis://:{PLANTED['notify']}@cache.internal:6379/0"],
        capture_output=True, text=True, timeout=120, env=workers.env)
    # Celery logs a failure after it stores the result, and acks the message after both.
    for task_id in ids:
        wait_for_log(workers, f"{task_id}] raised")
    client = workers.redis()
    wait_until(lambda: client.hlen("unacked") == 0, "empty unacked hash", 30)
    stored = redis_contents(client)
    # The scan sees the stored results, where Celery keeps each refusal's message.
    assert {f"celery-task-meta-{task_id}".encode() for task_id in ids} <= set(stored)
    assert _planted_leaks(*messages) == []
    assert _planted_leaks(*results) == []
    assert _planted_leaks(*stored) == []
    assert _planted_leaks(workers.log_text()) == []
    assert _planted_leaks(cli.stdout, cli.stderr) == []
    # What was wrong is still said, masked: the field, its value, the reason.
    assert "dynamodb={'endpoint_url': 'http://r:***@db:8000', " \
           "'aws_secret_access_key': '***'}: a job may not set aws_secret_access_key" \
           in messages[0], messages[0]
    assert "notify='redis://:***@cache.internal:6379/0': Input should be" in messages[2]
    assert cli.returncode == 2, cli.stderr
    assert "task='redis://:***@cache.internal:6379/0'" in cli.stderr, cli.stderr
