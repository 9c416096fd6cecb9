"""What a worker refuses from another app's ``featurepull.submit_job`` message (send_task) on
size alone: a request over jobs.max_request_bytes, and entities in a redis-key: value over
jobs.max_entity_file_bytes (its STRLEN, before the GET). Nothing is read or stored; a job
within the limits runs as usual."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job
from featurepull.local import RedisService
from featurepull.worker.app import producer_app
from tests.hardening._util import write_entities
from tests.tasks.conftest import fast_dynamo, fleet  # noqa: F401

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds


def _job_keys(redis_client: Any) -> list[bytes]:
    return list(redis_client.scan_iter(match="featurepull:job:*"))


def test_submit_job_messages_over_the_size_limits_are_refused(
        fast_dynamo: EndpointProcess, redis_server: RedisService,  # noqa: F811
        tmp_path: Path) -> None:
    with fleet(redis_server, fast_dynamo.url, max_request_bytes=4_096,
               max_entity_file_bytes=100_000) as workers:
        workers.start_worker(concurrency=1)
        settings = workers.settings()
        app = producer_app(settings)
        client = workers.redis()
        try:
            def submit(request: dict[str, Any]) -> Any:
                result = app.send_task("featurepull.submit_job", args=[request],
                                       queue=workers.queue)
                return result.get(timeout=30, propagate=True)

            # 1,000 feature names: 17 KB of JSON against a 4 KB limit.
            request = {"table": "driver_stats", "entities": "redis-key:never-read",
                       "features": [f"feature_{i:05d}" for i in range(1_000)]}
            with pytest.raises(Exception) as caught:
                submit(request)
            assert type(caught.value).__name__ == "RequestTooLarge"
            assert str(caught.value).startswith(
                f"the job request is {len(json.dumps(request)):,} bytes of JSON (largest "
                "field: 'features'); this deployment accepts at most 4,096 "
                "(jobs.max_request_bytes)")

            # 200,000 ids in Parquet (~800 KB) in a Redis key, against a 100 KB limit.
            big = write_entities(tmp_path / "big.parquet", list(range(200_000)))
            client.set("featurepull:input:big", big.read_bytes())
            size = big.stat().st_size
            with pytest.raises(Exception) as caught:
                submit({"table": "driver_stats", "features": list(FEATURES),
                        "entities": "redis-key:featurepull:input:big"})
            assert type(caught.value).__name__ == "EntityFileError"
            assert str(caught.value).startswith(
                f"redis-key:featurepull:input:big is {size:,} bytes; this deployment reads entity files "
                "of at most 100,000 bytes (jobs.max_entity_file_bytes)")
            assert _job_keys(client) == []  # nothing was stored for either

            small = write_entities(tmp_path / "small.parquet", list(range(1_000)))
            client.set("featurepull:input:small", small.read_bytes())
            started = submit({"table": "driver_stats", "features": list(FEATURES),
                              "entities": "redis-key:featurepull:input:small"})
            status = Job(started["job_id"], settings).wait(timeout=60, progress=False)
            assert status.state == "succeeded" and status.rows == 1_000
        finally:
            app.close()
