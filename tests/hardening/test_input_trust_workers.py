"""Through real Celery workers: a job that finds nothing says so (summary, CLI, worker log),
and a ``featurepull.submit_job`` request with missing or invalid fields is refused with a
message that lists them — not pydantic's ``ValidationError()``, which arrives empty at a
``send_task`` caller (issue 18, items 3 and 8)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.local import RedisService
from featurepull.worker.app import producer_app
from tests.tasks.conftest import fast_dynamo, fleet  # noqa: F401


def test_nothing_found_warning_and_invalid_requests_through_workers(
        fast_dynamo: EndpointProcess, redis_server: RedisService,  # noqa: F811
        tmp_path: Path) -> None:
    entities = tmp_path / "drivers.csv"
    # An extra column without --join-keys is a join key: no driver matches.
    entities.write_text("driver_id,region\n1,eu\n2,us\n3,eu\n")
    with fleet(redis_server, fast_dynamo.url) as workers:
        workers.start_worker(concurrency=1)
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
