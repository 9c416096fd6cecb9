"""The Redis ACL in docs/security.md is enough to run featurepull, and no more.

A password-protected redis-server gets the page's ``ACL SETUSER`` line verbatim (its
password swapped for the test's); a worker, a producer, another app's send_task and the job
commands then run a job as that user only. Redis' ACL LOG must stay empty — Celery would
swallow some denials (an event, the unacked sweep) rather than fail — and the user must be
refused what it does not need.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job
from featurepull.local import start_redis
from featurepull.worker.app import producer_app
from tests.conftest import service_port
from tests.hardening._util import run_job, write_entities
from tests.tasks.conftest import Fleet, fast_dynamo, fleet  # noqa: F401

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

SECURITY = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ADMIN_PASSWORD = "admin-Pa55word"
WORKER_PASSWORD = "worker-Pa55word"


def documented_acl() -> list[str]:
    """The arguments of docs/security.md's ACL SETUSER line, with the test's password."""
    line = re.search(r"^ACL SETUSER featurepull .*$", SECURITY.read_text(), re.M)
    assert line is not None, "docs/security.md has no 'ACL SETUSER featurepull ...' line"
    args = shlex.split(line.group(0))[2:]
    return [f">{WORKER_PASSWORD}" if arg.startswith(">") else arg for arg in args]


def test_a_job_runs_as_the_documented_acl_user(fast_dynamo: EndpointProcess,  # noqa: F811
                                          tmp_path: Path) -> None:
    server = start_redis(port=service_port(), password=ADMIN_PASSWORD)
    admin = redis.Redis(port=server.port, password=ADMIN_PASSWORD)
    try:
        admin.execute_command("ACL", "SETUSER", *documented_acl())
        with fleet(server, fast_dynamo.url, redelivery_check_s=1) as workers:
            # The documented rules name the default queue and db 0 (in pub/sub patterns).
            workers.queue, workers.db = "featurepull", 0
            workers.redis_url = (f"redis://featurepull:{WORKER_PASSWORD}@127.0.0.1:"
                                 f"{server.port}/{workers.db}")
            workers.env.update(FEATUREPULL_REDIS_URL=workers.redis_url,
                               FEATUREPULL_JOBS__QUEUE=workers.queue)
            try:
                _run_jobs(workers, tmp_path, admin)
            except BaseException as exc:
                exc.add_note(f"Redis ACL LOG: {admin.execute_command('ACL', 'LOG')}")
                raise
            finally:
                # The fleet empties its db when it stops: FLUSHDB is not the worker's to run.
                workers.redis_url = (f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{server.port}/"
                                     f"{workers.db}")
    finally:
        admin.close()
        server.stop()


def _run_jobs(workers: Fleet, tmp_path: Path, admin: redis.Redis) -> None:
    workers.start_worker(concurrency=1)
    entities = write_entities(tmp_path / "e.parquet", list(range(3_000)))

    out = tmp_path / "out.parquet"
    status = run_job(workers, entities, out).wait(timeout=60, progress=False)
    assert status.state == "succeeded" and pq.read_table(out).num_rows == 3_000

    kept = run_job(workers, entities, None)  # rows stay in Redis: fetch, then delete
    kept.wait(timeout=60, progress=False)
    assert sum(1 for _ in kept.rows()) == 3_000
    assert kept.delete() > 0

    # Another app: send_task with the request, entities in a featurepull:input: key.
    client = workers.redis()
    client.set("featurepull:input:drivers", entities.read_bytes())
    app = producer_app(workers.settings())
    try:
        started = app.send_task("featurepull.submit_job", args=[{
            "table": "driver_stats", "features": list(FEATURES),
            "entities": "redis-key:featurepull:input:drivers"}], queue=workers.queue,
        ).get(timeout=30)
    finally:
        app.close()
    job = Job(started["job_id"], workers.settings())
    assert job.wait(timeout=60, progress=False).rows == 3_000

    assert admin.execute_command("ACL", "LOG") == []
    for refused in (["FLUSHALL"], ["KEYS", "*"], ["CONFIG", "GET", "*"],
                    ["SET", "someone-else:key", "1"], ["GET", "someone-else:key"]):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*refused)
