"""Through real Celery workers whose config sets jobs.allowed_inputs, allowed_outputs,
allowed_endpoints (and the default entity_key_prefix): a scoring app that never imports
featurepull (tests/hardening/confine_sender.py, its own process) sends ``submit_job``
requests by name. Each kind of request outside the lists — including ``..`` and symlink
escapes and an ``s3://b/data`` vs ``s3://b/database/`` prefix confusion — comes back as the
task's failure naming the setting, with nothing read, stored, written or sent: a plain TCP
listener at the named endpoint sees no connection. The same requests inside the lists
succeed. Jobs that never passed through ``submit_job`` (``featurepull submit`` from an
unrestricted config, a request rewritten in Redis) are refused by the worker at the shard
and the finish (issue 20). One fleet serves every case."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job, JobRefused, submit
from featurepull.local import MotoService, RedisService
from featurepull.tasks import JobRequest, create_job
from featurepull.tasks.celery_tasks import enqueue_shards
from featurepull.tasks.store import JobStore, connect
from featurepull.worker.app import producer_app
from tests.faultproxy import FaultProxy
from tests.tasks.conftest import Fleet, fast_dynamo, fleet  # noqa: F401

pytestmark = pytest.mark.slow  # starts a worker fleet

DRIVERS = 20
URL_PASSWORD = "pw-in-url-123"  # in the refused endpoint's URL: never echoed or logged
REGION = "us-east-1"


class Listener:
    """A plain TCP listener that counts the connections it is offered (and closes them).

    A thread takes them as they come; reading :attr:`connections` first takes, under the
    same lock, every connection still waiting in the backlog, so one that arrived just
    before the check is counted, not left for the thread to find later."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._count = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _take_waiting(self) -> None:
        """Accept and close every connection in the backlog (call with the lock held)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            self._count += 1
            conn.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            readable, _, _ = select.select([self.sock], [], [], 0.1)
            with self._lock:
                if readable and not self._closed.is_set():
                    self._take_waiting()

    @property
    def connections(self) -> int:
        """Connections offered so far, every one that reached the backlog included."""
        with self._lock:
            self._take_waiting()
            return self._count

    def close(self) -> None:
        with self._lock:
            self._closed.set()
        self._thread.join(timeout=5)
        self.sock.close()


def test_the_listener_counts_a_connection_made_just_before_the_check() -> None:
    # What "no connection" rests on: a connection the thread has not taken yet counts.
    listener = Listener()
    try:
        for made in range(1, 101):
            socket.create_connection(listener.sock.getsockname()[:2], timeout=5).close()
            assert listener.connections == made
    finally:
        listener.close()


@dataclass
class Scene:
    """The fleet, its allowed and forbidden places, and what the sender got back."""

    workers: Fleet
    root: Path
    bucket: str
    s3: Any
    listener: Listener
    proxy_url: str
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def inside_in(self) -> Path:
        return self.root / "in"

    @property
    def inside_out(self) -> Path:
        return self.root / "out"

    @property
    def outside(self) -> Path:
        return self.root / "elsewhere"


def _request(**fields: Any) -> dict[str, Any]:
    return {"table": "driver_stats", "features": list(FEATURES), **fields}


def refused_requests(scene: Scene) -> dict[str, tuple[dict[str, Any], str, str | None]]:
    """name -> (request, the setting its refusal must name, a path it must not create)."""
    good = str(scene.inside_in / "drivers.csv")
    out, elsewhere = scene.inside_out, scene.outside
    data = f"s3://{scene.bucket}"
    return {
        "output outside": (_request(entities=good, output=str(elsewhere / "o1.parquet")),
                           "allowed_outputs", str(elsewhere / "o1.parquet")),
        "output .. escape": (_request(entities=good, output=f"{out}/../o2.parquet"),
                             "allowed_outputs", str(scene.root / "o2.parquet")),
        "output symlink escape": (_request(entities=good, output=str(out / "link" / "o3.parquet")),
                                  "allowed_outputs", str(elsewhere / "o3.parquet")),
        "output s3 prefix confusion": (_request(entities=good,
                                                output=f"{data}/database/o4.parquet"),
                                       "allowed_outputs", None),
        "entities outside": (_request(entities=str(elsewhere / "drivers.csv"),
                                      output=str(out / "o5.parquet")),
                             "allowed_inputs", str(out / "o5.parquet")),
        "entities .. escape": (_request(entities=f"{scene.inside_in}/../elsewhere/drivers.csv",
                                        output=str(out / "o6.parquet")),
                               "allowed_inputs", str(out / "o6.parquet")),
        "entities symlink escape": (_request(entities=str(scene.inside_in / "link.csv"),
                                             output=str(out / "o7.parquet")),
                                    "allowed_inputs", str(out / "o7.parquet")),
        "entities s3 prefix confusion": (_request(entities=f"{data}/database/drivers.csv",
                                                  output=str(out / "o8.parquet")),
                                         "allowed_inputs", str(out / "o8.parquet")),
        "redis-key outside the prefix": (_request(entities="redis-key:other-app:drivers",
                                                  output=str(out / "o9.parquet")),
                                         "entity_key_prefix", str(out / "o9.parquet")),
        "endpoint outside": (_request(entities=good, output=str(out / "o10.parquet"),
                                      dynamodb={"endpoint_url": scene.listener.url.replace(
                                          "http://", f"http://scorer:{URL_PASSWORD}@")}),
                             "allowed_endpoints", str(out / "o10.parquet")),
    }


def accepted_requests(scene: Scene) -> dict[str, tuple[dict[str, Any], str]]:
    """name -> (request, where its rows end up: a local path or an s3:// URL)."""
    out = scene.inside_out
    data = f"s3://{scene.bucket}/data"
    return {
        "local inside": (_request(entities=str(scene.inside_in / "drivers.csv"),
                                  output=str(out / "ok1.parquet")), str(out / "ok1.parquet")),
        "inside through a symlink that stays inside": (
            _request(entities=str(scene.inside_in / "inner-link.csv"),
                     output=str(out / "ok2.parquet")), str(out / "ok2.parquet")),
        "s3 inside": (_request(entities=f"{data}/drivers.csv", output=f"{data}/ok3.parquet"),
                      f"{data}/ok3.parquet"),
        "redis-key inside the prefix": (
            _request(entities="redis-key:featurepull:input:drivers",
                     output=str(out / "ok4.parquet")), str(out / "ok4.parquet")),
        "allowed endpoint": (_request(entities=str(scene.inside_in / "drivers.csv"),
                                      output=str(out / "ok5.parquet"),
                                      dynamodb={"endpoint_url": scene.proxy_url}),
                             str(out / "ok5.parquet")),
    }


def _lay_out_files(scene: Scene) -> None:
    csv = "driver_id\n" + "".join(f"{n}\n" for n in range(1, DRIVERS + 1))
    for folder in (scene.inside_in, scene.inside_out, scene.outside):
        folder.mkdir()
    (scene.inside_in / "drivers.csv").write_text(csv)
    (scene.outside / "drivers.csv").write_text(csv)
    (scene.inside_in / "link.csv").symlink_to(scene.outside / "drivers.csv")
    (scene.inside_in / "inner-link.csv").symlink_to(scene.inside_in / "drivers.csv")
    (scene.inside_out / "link").symlink_to(scene.outside, target_is_directory=True)
    for key in ("data/drivers.csv", "database/drivers.csv"):
        scene.s3.put_object(Bucket=scene.bucket, Key=key, Body=csv.encode())
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"driver_id": pa.array(range(1, DRIVERS + 1), pa.int64())}), sink)
    for key in ("featurepull:input:drivers", "other-app:drivers"):
        scene.workers.redis().set(key, sink.getvalue().to_pybytes())


def send(scene: Scene, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The scoring app's process sends the requests; what it got back."""
    env = {**scene.workers.env, "RECEIVER_REDIS_URL": scene.workers.redis_url,
           "FEATUREPULL_QUEUE": scene.workers.queue}
    proc = subprocess.run([sys.executable, "-m", "tests.hardening.confine_sender"],
                          input=json.dumps(requests), capture_output=True, text=True,
                          env=env, timeout=180, check=True)
    return dict(json.loads(proc.stdout))


def _log_records(workers: Fleet) -> list[dict[str, Any]]:
    records = []
    for line in workers.log_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def wait_ended(store: JobStore, job_ids: list[str], deadline_s: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + deadline_s
    while True:
        states = {job: store.state(job) for job in job_ids}
        if all(state in ("succeeded", "failed", "cancelled") for state in states.values()):
            return {job: str(state) for job, state in states.items()}
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scene(fast_dynamo: EndpointProcess, redis_server: RedisService,  # noqa: F811
          moto_server: MotoService, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("confine").resolve()
    bucket = f"fp-confine-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    listener = Listener()
    with FaultProxy(fast_dynamo.url) as proxy, fleet(
            redis_server, fast_dynamo.url,
            allowed_inputs=json.dumps([str(root / "in"), f"s3://{bucket}/data"]),
            allowed_outputs=json.dumps([str(root / "out"), f"s3://{bucket}/data"]),
            allowed_endpoints=json.dumps([proxy.url])) as workers:
        workers.env.update({"FEATUREPULL_S3__ENDPOINT_URL": moto_server.url,
                            "FEATUREPULL_S3__REGION": REGION})
        scene = Scene(workers, root, bucket, s3, listener, proxy.url)
        _lay_out_files(scene)
        workers.start_worker(concurrency=2)
        refused, accepted = refused_requests(scene), accepted_requests(scene)
        names = [*refused, *accepted]
        assert names == [*REFUSED, *ACCEPTED]
        answer = send(scene, [refused[n][0] if n in refused else accepted[n][0] for n in names])
        assert not answer["featurepull_imported_before_sending"]
        scene.outcomes = dict(zip(names, answer["outcomes"], strict=True))
        store = JobStore(connect(workers.redis_url), 3600)
        wait_ended(store, [o["job_id"] for o in scene.outcomes.values() if "job_id" in o])
        try:
            yield scene
        finally:
            listener.close()


REFUSED = ["output outside", "output .. escape", "output symlink escape",
           "output s3 prefix confusion", "entities outside", "entities .. escape",
           "entities symlink escape", "entities s3 prefix confusion",
           "redis-key outside the prefix", "endpoint outside"]
ACCEPTED = ["local inside", "inside through a symlink that stays inside", "s3 inside",
            "redis-key inside the prefix", "allowed endpoint"]


@pytest.mark.parametrize("name", REFUSED)
def test_out_of_bounds_request_is_refused_before_anything_happens(scene: Scene,
                                                                  name: str) -> None:
    _, setting, must_not_exist = refused_requests(scene)[name]
    outcome = scene.outcomes[name]
    assert "job_id" not in outcome, f"{name}: accepted as job {outcome.get('job_id')}"
    assert outcome["error_type"] == "RequestOutOfBounds", outcome
    assert f"jobs.{setting} (env FEATUREPULL_JOBS__{setting.upper()})" in outcome["error"]
    if must_not_exist is not None:
        assert not Path(must_not_exist).exists()
    # Logged by the worker with the request's summary and the setting, as the sender saw it.
    logged = [line for line in _log_records(scene.workers)
              if line.get("event") == "job_refused" and line["error"] == outcome["error"]]
    assert logged, outcome["error"]
    assert logged[0]["setting"] == setting
    assert logged[0]["request"].startswith("table=driver_stats features=5 entities=")
    assert URL_PASSWORD not in outcome["error"] and URL_PASSWORD not in scene.workers.log_text()


def test_refusals_stored_sent_and_wrote_nothing(scene: Scene) -> None:
    accepted = [o["job_id"] for o in scene.outcomes.values() if "job_id" in o]
    assert len(accepted) == len(accepted_requests(scene))
    jobs = {key.decode().split(":")[2] for key in scene.workers.redis().scan_iter(
        "featurepull:job:*:meta")}
    assert jobs == set(accepted)  # no refused request left a job in Redis
    assert scene.listener.connections == 0
    objects = scene.s3.list_objects_v2(Bucket=scene.bucket, Prefix="database/")
    assert [o["Key"] for o in objects.get("Contents", [])] == ["database/drivers.csv"]
    assert sorted(p.name for p in scene.outside.iterdir()) == ["drivers.csv"]
    assert not (scene.root / "o2.parquet").exists()
    # Every list is set: the worker has nothing to warn about at start.
    assert "jobs_unbounded" not in scene.workers.log_text()


@pytest.mark.parametrize("name", ACCEPTED)
def test_the_same_requests_inside_the_lists_succeed(scene: Scene, name: str) -> None:
    _, where = accepted_requests(scene)[name]
    outcome = scene.outcomes[name]
    assert "job_id" in outcome, outcome
    store = JobStore(connect(scene.workers.redis_url), 3600)
    assert store.state(outcome["job_id"]) == "succeeded", store.meta(outcome["job_id"]).error
    if where.startswith("s3://"):
        key = where.split("/", 3)[3]
        body = scene.s3.get_object(Bucket=scene.bucket, Key=key)["Body"].read()
        table = pq.read_table(pa.BufferReader(body))
    else:
        table = pq.read_table(where)
    assert table.column("driver_id").to_pylist() == list(range(1, DRIVERS + 1))
    assert table.column("conv_rate").null_count < DRIVERS  # features were read


def test_jobs_that_skip_submit_job_are_bounded_by_the_worker(scene: Scene) -> None:
    """`featurepull submit` from a config without the lists, and a request rewritten in
    Redis after it was stored: the worker refuses the output at the finish and the endpoint
    at the shard, before writing or connecting."""
    workers = scene.workers
    unbounded = workers.settings().model_copy(deep=True)
    unbounded.jobs.allowed_outputs = None
    escape = scene.outside / "via-submit.parquet"
    job = submit("driver_stats", list(FEATURES), str(scene.inside_in / "drivers.csv"),
                 str(escape), settings=unbounded)
    with pytest.raises(JobRefused, match=r"jobs\.allowed_outputs"):
        job.wait(timeout=60, progress=False)
    assert not escape.exists()

    settings = workers.settings()
    store = JobStore(connect(workers.redis_url), 3600)
    meta = create_job(JobRequest(table="driver_stats", features=list(FEATURES),
                                 entities=str(scene.inside_in / "drivers.csv")),
                      settings, store)
    key = f"featurepull:job:{meta.job_id}:meta"
    spec = json.loads(workers.redis().hget(key, "request") or b"{}")
    spec["request"]["dynamodb"] = {"endpoint_url": scene.listener.url}
    workers.redis().hset(key, "request", json.dumps(spec))
    app = producer_app(settings)
    try:
        enqueue_shards(app, store.meta(meta.job_id), settings.jobs.queue)
    finally:
        app.close()
    with pytest.raises(JobRefused, match=r"jobs\.allowed_endpoints"):
        Job(meta.job_id, settings, store).wait(timeout=60, progress=False)
    assert scene.listener.connections == 0
