"""Failing a job the one way tasks and the watchdog do (``fail_and_announce``), in this
process: a job created as submit creates it (its keys staged beside its output), the
session's redis-server, the end announced on the broker there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from featurepull.config import Settings
from featurepull.tasks.celery_tasks import fail_and_announce
from featurepull.tasks.store import JobStore
from featurepull.worker.producer import producer_app
from tests.tasks.conftest import NewJob

pytestmark = pytest.mark.mutation_first


@pytest.fixture
def app(settings: Settings) -> Iterator[Any]:
    app = producer_app(settings)
    yield app
    app.close()


def staged(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in tmp_path.glob(".out.parquet.parts-*/*"))


def test_a_fail_stores_its_error_redacted_and_removes_what_the_job_staged(
        app: Any, store: JobStore, settings: Settings, new_job: NewJob, tmp_path: Path) -> None:
    meta = new_job([1, 2, 3], output=str(tmp_path / "out.parquet"))
    assert staged(tmp_path) == ["keys-00000.parquet"]
    error = ("shard 0: lost redis://:hunter2@cache:6379/0 (AWS_SECRET_ACCESS_KEY=abc123)")
    assert fail_and_announce(app, store, meta.job_id, error, settings, "task-1", "input")
    failed = store.meta(meta.job_id)
    assert (failed.state, failed.error, failed.error_kind) == (
        "failed", "shard 0: lost redis://:***@cache:6379/0 (AWS_SECRET_ACCESS_KEY=***)",
        "input")
    assert staged(tmp_path) == [] and store.end_announced(meta.job_id)


@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
def test_a_fail_lost_to_another_ending_leaves_what_that_ending_left(
        app: Any, store: JobStore, settings: Settings, new_job: NewJob, tmp_path: Path,
        ending: str) -> None:
    meta = new_job([1, 2, 3], output=str(tmp_path / "out.parquet"))
    job_id = meta.job_id
    if ending == "succeeded":
        assert store.begin_finish(job_id)
        store.succeed(job_id, {"job_id": job_id, "rows": 3})
    elif ending == "failed":  # another task's fail, whose own discard is still to come
        assert store.fail(job_id, "shard 1: the first error")
    else:
        assert store.cancel(job_id)
    before = store.meta(job_id)
    assert not fail_and_announce(app, store, job_id, "shard 0: late", settings, "task-2")
    after = store.meta(job_id)
    assert (after.state, after.error, after.summary) == (before.state, before.error,
                                                         before.summary)
    # Only a job that succeeded keeps what it staged: a failed or cancelled job's parts are
    # nobody's (one staged after the first fail's discard would be left for good).
    assert staged(tmp_path) == (["keys-00000.parquet"] if ending == "succeeded" else [])
    assert store.end_announced(job_id)  # as it ended, once
