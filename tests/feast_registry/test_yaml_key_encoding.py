"""A job that names a ``feature_store_yaml`` encodes its entity keys as the yaml says, over the
worker's own settings, as ``--feature-store-yaml`` does on the command line: the yaml's
``entity_key_serialization_version`` and a featurepull store's
``online_store.join_key_name_length``. A worker whose own settings differ would hash other
ids and read every row as missing, with exit 0.

The worker says version 3 and ``chars``. Two Feast repos (``FeatureStore.apply`` and
``write_to_online_store``, Feast 0.67), each with one view keyed by the non-ASCII join key
``fahrer_größe``: one's yaml says version 2 (Feast's DynamoDB store), the other's version 3
with ``join_key_name_length: bytes`` (featurepull's store; Feast writes the bytes' length).
A ``featurepull.submit_job`` sent by another Celery app and a schedule's run, each naming a
yaml, find every row Feast wrote."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from celery import Celery

from featurepull.client import Job, JobStatus, submit
from featurepull.config import ScheduleSettings
from featurepull.local import RedisService
from featurepull.tasks import JobStore
from featurepull.tasks.celery_tasks import enqueue_shards
from featurepull.tasks.schedules import start_scheduled_job
from featurepull.tasks.store import connect
from featurepull.worker.app import producer_app
from tests.conftest import REGION, unique_name
from tests.feast_registry.conftest import encoding_worker, written_view
from tests.tasks.conftest import Fleet

pytestmark = [pytest.mark.slow,  # starts a worker
              # Feast warns when it writes version 2 keys, which the first repo is for.
              pytest.mark.filterwarnings("ignore:.*(version < 3|below 3):UserWarning"),
              pytest.mark.filterwarnings("ignore:.*below 3:DeprecationWarning")]

KEY = "fahrer_größe"
DRIVERS = 12  # written: drivers 0..11; the entity file also asks for 12..14


def feast_repo(path: Path, endpoint_url: str, store: str) -> Iterator[Path]:
    """A repo whose yaml has ``store`` (its online store's type and settings, and the key
    encoding) and whose view Feast wrote, its yaml yielded."""
    path.mkdir(parents=True, exist_ok=True)
    yaml = path / "feature_store.yaml"
    yaml.write_text(f"project: {unique_name('fahrer')}\nregistry: data/registry.db\n"
                    f"provider: local\nonline_store:\n  region: {REGION}\n"
                    f"  endpoint_url: {endpoint_url}\n{store}")
    yield from written_view(yaml, KEY, DRIVERS)


@pytest.fixture(scope="module")
def version_2(endpoint_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Feast's DynamoDB online store, keys in version 2 (no name lengths)."""
    yield from feast_repo(tmp_path_factory.mktemp("v2-repo"), endpoint_url,
                          "  type: dynamodb\nentity_key_serialization_version: 2\n")


@pytest.fixture(scope="module")
def name_bytes(endpoint_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """featurepull's online store, version 3, names' lengths in UTF-8 bytes."""
    yield from feast_repo(tmp_path_factory.mktemp("bytes-repo"), endpoint_url,
                          "  type: featurepull.feast_store.FeaturepullOnlineStore\n"
                          "  join_key_name_length: bytes\n"
                          "entity_key_serialization_version: 3\n")


@pytest.fixture(scope="module")
def worker(redis_server: RedisService, endpoint_url: str) -> Iterator[Fleet]:
    """One worker whose key encoding is neither yaml's."""
    with encoding_worker(redis_server, endpoint_url, 3, "chars") as running:
        yield running


def entities(tmp_path: Path) -> Path:
    path = tmp_path / "entities.csv"
    path.write_text(f"{KEY}\n" + "\n".join(map(str, range(DRIVERS + 3))) + "\n",
                    encoding="utf8")
    return path


def sent(worker: Fleet, request: dict[str, Any]) -> JobStatus:
    """The ended job of ``request``, sent by task name from another Celery app."""
    remote = Celery("remote", broker=worker.redis_url, backend=worker.redis_url)
    remote.conf.update(task_serializer="json", accept_content=["json"],
                       result_accept_content=["json"])
    try:
        answer = remote.send_task("featurepull.submit_job", queue=worker.queue,
                                  args=[request]).get(timeout=120)
    finally:
        remote.close()
    return Job(answer["job_id"], worker.settings()).wait(timeout=120, progress=False)


def assert_every_row(final: JobStatus, out: Path) -> None:
    assert final.state == "succeeded", final
    read = (final.summary or {})["read"]
    assert read == {**read, "found": DRIVERS, "missing": 3}, read
    assert pq.read_table(out).column("score").to_pylist() == (
        [d / 4 for d in range(DRIVERS)] + [None] * 3)


def test_a_sent_job_reads_with_its_yamls_version(version_2: Path, worker: Fleet,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    final = sent(worker, {"features": ["fahrer_stats:score"], "entities": str(entities(tmp_path)),
                          "output": str(out), "feature_store_yaml": str(version_2)})
    assert_every_row(final, out)


def test_a_sent_one_table_job_reads_with_its_yamls_name_length(
        name_bytes: Path, worker: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    final = sent(worker, {"table": "fahrer_stats", "features": ["score"],
                          "entities": str(entities(tmp_path)), "output": str(out),
                          "feature_store_yaml": str(name_bytes)})
    assert_every_row(final, out)


def test_a_scheduled_run_reads_with_its_yamls_version(version_2: Path, worker: Fleet,
                                                      tmp_path: Path) -> None:
    schedule = ScheduleSettings(
        name="fahrer", every_s=3600, entities=str(entities(tmp_path)),
        output=str(tmp_path / "{name}.parquet"), features=["fahrer_stats:score"],
        feature_store_yaml=str(version_2))
    # The worker's settings, as its run_schedule task has them.
    settings = worker.settings().model_copy(update={"schedules": [schedule]})
    store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
    app = producer_app(settings)
    started = start_scheduled_job("fahrer", settings, store, socket.gethostname(),
                                  lambda meta: enqueue_shards(app, meta, settings.jobs.queue))
    final = Job(started["job_id"], settings, store).wait(timeout=120, progress=False)
    assert_every_row(final, tmp_path / "fahrer.parquet")


def test_a_job_submitted_from_python_without_settings_reads_with_its_yamls_version(
        version_2: Path, worker: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # featurepull.submit's settings are then this process's environment: the worker's.
    for name, value in worker.env.items():
        if name.startswith("FEATUREPULL_"):
            monkeypatch.setenv(name, value)
    out = tmp_path / "out.parquet"
    job = submit("", ["fahrer_stats:score"], str(entities(tmp_path)), str(out),
                 feature_store_yaml=str(version_2))
    assert_every_row(job.wait(timeout=120, progress=False), out)
