"""Publishing a job's output and removing what its shards staged (featurepull.tasks.output),
with the job's steps in this process: a finisher run again after one that died (after
publishing, or mid-write), an S3 output, an output replaced, and what a job that ended leaves
behind. Real files, the session's redis-server, endpoint and moto S3."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import structlog

from featurepull.config import S3Settings, Settings
from featurepull.io import OutputError
from featurepull.io._atomic import file_identity
from featurepull.tasks import JobStore
from featurepull.tasks.finish import finish_job
from featurepull.tasks.output import discard_staged_output, publish_output, staged_output
from featurepull.tasks.shards import run_shard
from featurepull.tasks.store import JobMeta, UnknownJob
from tests.conftest import REGION, dictionary_pages, unique_name
from tests.damage import tear_first_page
from tests.tasks.conftest import JOB_FEATURES, NewJob
from tests.tasks.test_output_leftovers import dead_pid, leftovers

FEATURES = JOB_FEATURES
IDS = [199_900 + 3 * i for i in range(250)]  # 3 shards of 100; 200,000.. are unknown


@pytest.fixture
def settings(settings: Settings, endpoint_url: str) -> Settings:
    """tests/tasks/conftest.py's, with moto's S3 for s3:// outputs."""
    return settings.model_copy(update={"s3": S3Settings(endpoint_url=endpoint_url,
                                                         region=REGION)})


def read_job(new_job: NewJob, settings: Settings, store: JobStore,
             output: str | None, overwrite: bool = False) -> JobMeta:
    """A job of IDS whose shards have all been read (not finished)."""
    meta = new_job(IDS, output=output, overwrite=overwrite)
    for shard in range(meta.shards):
        run_shard(meta.job_id, shard, settings, store)
    return meta


def published_ids(table: pa.Table) -> list[Any]:
    return table.column("driver_id").to_pylist()


def test_a_finisher_run_again_keeps_the_output_one_that_died_had_published(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    meta = read_job(new_job, settings, store, str(out))
    # The first finisher publishes, records the file, removes the staging area, and is
    # killed before it marks the job succeeded.
    assert store.begin_finish(meta.job_id)
    store.note_finisher(meta.job_id, f"{socket.gethostname()}:{dead_pid()}")
    assert publish_output(meta.job_id, store.meta(meta.job_id), settings, store,
                          None) == len(IDS)
    published = file_identity(str(out))
    assert published is not None and store.meta(meta.job_id).published_as == published
    staged = staged_output(meta.job_id, store.meta(meta.job_id), settings)
    staged.discard()
    assert not Path(staged.staging).exists()

    with structlog.testing.capture_logs() as logs:
        summary = finish_job(meta.job_id, settings, store)
    assert summary is not None and summary["rows_written"] == len(IDS)
    assert file_identity(str(out)) == published  # the same file: kept, not written again
    assert published_ids(pq.read_table(out)) == IDS
    assert [entry for entry in logs if entry["event"] == "output_already_published"] == [{
        "event": "output_already_published", "log_level": "warning", "output": str(out),
        "reason": "an earlier finisher of this job died after publishing it"}]
    assert store.meta(meta.job_id).state == "succeeded"


def test_a_finisher_removes_what_one_killed_mid_write_left_and_replaces_the_output(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    dead = dead_pid()
    (half_written,) = leftovers(tmp_path, [dead])  # and an older output.parquet
    meta = read_job(new_job, settings, store, str(out), overwrite=True)
    # The first finisher is killed while it writes the new output beside the old one.
    assert store.begin_finish(meta.job_id)
    store.note_finisher(meta.job_id, f"{socket.gethostname()}:{dead}")

    with structlog.testing.capture_logs() as logs:
        summary = finish_job(meta.job_id, settings, store)
    assert summary is not None and summary["rows_written"] == len(IDS)
    (done,) = [entry for entry in logs if entry["event"] == "job_done"]
    assert (done["output"], done["rows_written"]) == (str(out), len(IDS))
    # Redis keeps no part of the job's data once its output is in place.
    assert [key for key in store.redis.scan_iter(f"featurepull:job:{meta.job_id}:*")
            if key.decode().rsplit(":", 2)[-2] in ("rows", "keys", "schema")] == []
    assert not half_written.exists()
    assert published_ids(pq.read_table(out)) == IDS
    assert store.meta(meta.job_id).published_as == file_identity(str(out))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ids.parquet", "out.parquet"]


def test_a_parquet_outputs_parts_are_checked_against_what_their_shards_wrote(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    # Each shard records its part's CRC-32 with its stats; the finisher copies the part's
    # row groups only if its bytes match it (a part has no page checksums any more).
    out = tmp_path / "out.parquet"
    meta = read_job(new_job, settings, store, str(out))
    checks = [stats.get("part_crc32") for _, stats in sorted(store.all_stats(meta.job_id)
                                                             .items())]
    assert len(checks) == meta.shards == 3 and all(isinstance(c, int) for c in checks)
    staged = staged_output(meta.job_id, store.meta(meta.job_id), settings)
    tear_first_page(Path(staged.staging, staged.part_name(1)))
    with pytest.raises(OutputError, match=r"part 1 of .* is not what its shard wrote \(its "
                                          r"CRC-32 differs\)"):
        publish_output(meta.job_id, store.meta(meta.job_id), settings, store, None)
    assert not out.exists()


def test_a_parquet_outputs_key_columns_are_plain_in_its_parts_and_in_it(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    # The job's key columns reach the shards' parts and the finisher: no dictionary for
    # driver_id in either, the features' kept; the parts' row groups are the output's.
    out = tmp_path / "out.parquet"
    meta = read_job(new_job, settings, store, str(out))
    staged = staged_output(meta.job_id, store.meta(meta.job_id), settings)
    assert dictionary_pages(staged.staging + staged.part_name(0))["driver_id"] == {False}
    assert finish_job(meta.job_id, settings, store) is not None
    pages = dictionary_pages(out)
    assert (pages["driver_id"], pages["event_timestamp"]) == ({False}, {True})
    assert published_ids(pq.read_table(out)) == IDS


def test_an_s3_output_is_staged_and_published_in_its_bucket(
        new_job: NewJob, settings: Settings, store: JobStore, endpoint_url: str,
        tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)
    bucket = unique_name("featurepull-")
    s3.create_bucket(Bucket=bucket)
    meta = read_job(new_job, settings, store, f"s3://{bucket}/jobs/out.parquet")
    summary = finish_job(meta.job_id, settings, store)
    assert summary is not None and summary["rows_written"] == len(IDS)
    body = s3.get_object(Bucket=bucket, Key="jobs/out.parquet")["Body"].read()
    assert published_ids(pq.read_table(io.BytesIO(body))) == IDS
    # Nothing staged is left in the bucket, and an S3 output has no identity to record.
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["jobs/out.parquet"]
    assert store.meta(meta.job_id).published_as is None


def test_what_a_job_that_ended_staged_is_removed(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    meta = new_job(IDS, output=str(out))
    run_shard(meta.job_id, 0, settings, store)
    staging = Path(staged_output(meta.job_id, meta, settings).staging)
    assert sorted(path.name for path in staging.iterdir() if path.name[0] != ".") == [
        "keys-00000.parquet", "keys-00001.parquet", "keys-00002.parquet",
        "part-00000.parquet"]
    assert store.cancel(meta.job_id)
    with structlog.testing.capture_logs() as logs:
        assert finish_job(meta.job_id, settings, store) is None  # a redelivered finisher
    assert not staging.exists() and not out.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ids.parquet"]
    assert [entry for entry in logs if entry["log_level"] == "warning"] == []


def test_removing_what_a_job_staged_never_raises(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    # A job without an output staged nothing: nothing to say.
    meta = read_job(new_job, settings, store, None)
    with structlog.testing.capture_logs() as logs:
        discard_staged_output(meta.job_id, settings, store)
    assert logs == []
    # A job gone from Redis: the failure is logged, not raised (the job has ended already).
    with structlog.testing.capture_logs() as logs:
        discard_staged_output("no-such-job", settings, store)
    assert logs == [{"event": "staged_output_left", "log_level": "warning",
                     "job_id": "no-such-job", "error": str(UnknownJob("no-such-job"))}]
