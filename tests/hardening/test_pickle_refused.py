"""A pickle message on the worker's queue is never unpickled: Celery refuses the content type,
logs it, and the worker goes on with the next job."""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kombu import Connection, Exchange, Producer, Queue

from featurepull.bench.endpoint import EndpointProcess
from featurepull.local import RedisService
from tests.hardening._util import run_job, wait_for_log, write_entities
from tests.tasks.conftest import fast_dynamo, fleet  # noqa: F401

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds


class _TouchOnUnpickle:
    """Creates the marker file if anyone ever unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_pickle_message_is_never_executed(redis_server: RedisService,
                                          fast_dynamo: EndpointProcess,  # noqa: F811
                                          tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_TouchOnUnpickle(control)))  # the payload does work when unpickled
    assert control.exists()
    with fleet(redis_server, fast_dynamo.url) as workers:
        workers.start_worker(concurrency=1)
        task_id = str(uuid.uuid4())
        body = ((_TouchOnUnpickle(marker), 0), {},
                {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
        # Celery's protocol 2 headers; only the body's serializer is wrong.
        headers = {"lang": "py", "task": "featurepull.read_shard", "id": task_id,
                   "root_id": task_id, "parent_id": None, "group": None, "retries": 0,
                   "eta": None, "expires": None, "timelimit": [None, None],
                   "argsrepr": "(evil, 0)", "kwargsrepr": "{}", "origin": "attacker"}
        queue = Queue(workers.queue, Exchange(workers.queue), routing_key=workers.queue)
        with Connection(workers.redis_url) as conn:
            Producer(conn).publish(body, serializer="pickle", headers=headers,
                                   exchange=queue.exchange, routing_key=workers.queue,
                                   declare=[queue], correlation_id=task_id)
        logs = wait_for_log(workers, "Refusing to deserialize")
        assert "application/x-python-serialize" in logs
        assert not marker.exists()

        # The worker still runs jobs.
        entities = write_entities(tmp_path / "few.parquet", list(range(500)))
        out = tmp_path / "out.parquet"
        status = run_job(workers, entities, out).wait(timeout=60, progress=False)
        assert status.state == "succeeded"
        assert pq.read_table(out).num_rows == 500
        assert not marker.exists()
        assert all(proc.poll() is None for proc in workers.workers)
