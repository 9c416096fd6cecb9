"""A job's entity file is bounded before it is read: its bytes (a local stat, an S3 HEAD) and,
for Parquet, the rows its footer counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.config import JobSettings, S3Settings
from featurepull.io import EntityFileError, read_entities
from tests.conftest import REGION, unique_name

CSV = b"driver_id\n1001\n1002\n"


def test_a_local_file_over_the_byte_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(CSV)
    limits = JobSettings(max_entity_file_bytes=len(CSV) - 1)
    with pytest.raises(EntityFileError) as caught:
        read_entities(str(path), limits=limits)
    assert str(caught.value).startswith(
        f"{path} is {len(CSV)} bytes; this deployment reads entity files of at most "
        f"{len(CSV) - 1} bytes (jobs.max_entity_file_bytes)")
    at_limit = read_entities(str(path), limits=JobSettings(max_entity_file_bytes=len(CSV)))
    assert at_limit.columns["driver_id"] == [1001, 1002]


def test_an_s3_object_over_the_byte_limit_is_refused_from_its_size(endpoint_url: str) -> None:
    s3: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)
    bucket = unique_name("featurepull-")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/e.csv", Body=CSV)
    settings = S3Settings(endpoint_url=endpoint_url, region=REGION)
    uri = f"s3://{bucket}/in/e.csv"
    with pytest.raises(EntityFileError, match=rf"^{uri} is {len(CSV)} bytes; .*"
                                              r"\(jobs\.max_entity_file_bytes\)"):
        read_entities(uri, s3=settings, limits=JobSettings(max_entity_file_bytes=10))
    # A missing object still says so (the HEAD fails like the download would).
    with pytest.raises(EntityFileError, match="no such object"):
        read_entities(f"s3://{bucket}/in/none.csv", s3=settings, limits=JobSettings())
    assert read_entities(uri, s3=settings, limits=JobSettings()).num_rows == 2


def test_a_parquet_footer_over_max_entities_is_refused_before_decoding(tmp_path: Path) -> None:
    # A million equal ids: run-length encoded into a few kilobytes, well under any byte limit,
    # yet a million Python ints once decoded (a billion would take a worker down).
    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"driver_id": np.zeros(1_000_000, dtype=np.int64)}), path)
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(EntityFileError) as caught:
        read_entities(str(path), limits=JobSettings(max_entities=1_000))
    assert str(caught.value) == (
        f"{path} has 1,000,000 entities; this deployment accepts at most 1,000 per job "
        "(jobs.max_entities); split the file or raise the limit")
    # Garbage is left to the Parquet reader, which names the problem.
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not parquet")
    with pytest.raises(EntityFileError, match="cannot read it as Parquet"):
        read_entities(str(bad), limits=JobSettings(max_entities=1_000))


def test_the_limits_hold_at_the_boundary_and_the_messages_are_whole(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"driver_id": pa.array([1, 2, 3], pa.int64())}), path)
    assert read_entities(str(path), limits=JobSettings(max_entities=3)).num_rows == 3
    with pytest.raises(EntityFileError, match=r"has 3 entities; .* at most 2 per job"):
        read_entities(str(path), limits=JobSettings(max_entities=2))
    csv = tmp_path / "e.csv"
    csv.write_bytes(CSV)
    with pytest.raises(EntityFileError) as too_big:
        read_entities(str(csv), limits=JobSettings(max_entity_file_bytes=5))
    assert str(too_big.value) == (
        f"{csv} is {len(CSV)} bytes; this deployment reads entity files of at most 5 bytes "
        "(jobs.max_entity_file_bytes); split it into several jobs, or raise the limit if the "
        "workers have the memory for it")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(EntityFileError) as nothing:
        read_entities(str(empty))
    assert str(nothing.value) == (
        f"{empty} is empty (0 bytes) and has no entity rows; write a header or schema and "
        "one row per entity")
