"""Outputs written in parts (featurepull.io.parts): parts staged in any order, published as one
file or as a Parquet dataset that pyarrow.dataset reads in input order; local and on a real
S3 endpoint (moto's server mode)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from featurepull.config import S3Settings
from featurepull.io import OutputError, StagedOutput, check_destination, unify_schemas
from featurepull.io._atomic import _sync_file_range, start_writeback
from featurepull.io.parts import MANIFEST, SUCCESS, _one_ahead
from featurepull.io.sink import open_sink
from tests.conftest import REGION, dictionary_pages, unique_name
from tests.damage import tear_first_page

ROWS = 1_000
PARTS = 4
SIZE = ROWS // PARTS


def part_table(n: int) -> pa.Table:
    """Part n of the output; part 2 alone holds text in "note", the others only nulls
    (a shard whose column is all null has the null type: the dataset must widen it)."""
    ids = list(range(n * SIZE, (n + 1) * SIZE))
    notes = pa.array([f"n{i}" for i in ids]) if n == 2 else pa.nulls(SIZE)
    return pa.table({"driver_id": pa.array(ids, pa.int64()), "note": notes})


def stage(output: str, owner: str = "job-1", s3: S3Settings | None = None) -> StagedOutput:
    staged = StagedOutput(output, owner, PARTS, s3)
    for n in (3, 1, 0, 2):  # shards finish out of order
        staged.write_part(n, part_table(n))
    return staged


def publish(staged: StagedOutput, overwrite: bool = False) -> int:
    schemas = [part_table(n).schema for n in range(PARTS)]
    return staged.publish(unify_schemas(schemas), schemas, [SIZE] * PARTS, overwrite=overwrite)


def expected() -> pa.Table:
    return pa.concat_tables([part_table(n) for n in range(PARTS)],
                            promote_options="permissive")


def test_a_dataset_reads_back_in_input_order(tmp_path: Path) -> None:
    out = f"{tmp_path}/features/"
    staged = stage(out)
    assert not staged.published()
    assert publish(staged) == ROWS
    assert staged.published()
    staged.discard()
    assert sorted(os.listdir(out)) == [SUCCESS, MANIFEST, *(f"part-0000{n}.parquet"
                                                           for n in range(PARTS))]
    table = ds.dataset(out, format="parquet").to_table()
    assert table.equals(expected())
    assert table.schema.field("note").type == pa.string()  # the null parts were widened
    manifest = json.loads(Path(out, MANIFEST).read_text())
    assert manifest["rows"] == ROWS and manifest["owner"] == "job-1"
    assert [(p["path"], p["rows"]) for p in manifest["parts"]] == [
        (f"part-0000{n}.parquet", SIZE) for n in range(PARTS)]
    assert Path(out, SUCCESS).read_text() == "job-1"


def test_the_success_marker_is_written_last(tmp_path: Path) -> None:
    out = f"{tmp_path}/features/"
    staged = stage(out)
    os.unlink(staged.staging + staged.part_name(2))  # a part gone before publishing
    with pytest.raises(OutputError, match=r"part 2 .* is missing"):
        publish(staged)
    assert not os.path.exists(out + SUCCESS) and not os.path.exists(out + MANIFEST)
    assert not staged.published()


def test_part_names_sort_in_order_past_100000_parts(tmp_path: Path) -> None:
    staged = StagedOutput(f"{tmp_path}/big/", "job", 250_000)
    assert staged.part_name(7) == "part-000007.parquet"
    assert staged.part_name(249_999) == "part-249999.parquet"


def test_an_existing_dataset_is_refused_or_replaced_whole(tmp_path: Path) -> None:
    out = f"{tmp_path}/features/"
    old = StagedOutput(out, "old-job", 6)
    for n in range(6):
        old.write_part(n, part_table(0))
    old.publish(part_table(0).schema, [part_table(0).schema] * 6, [SIZE] * 6)
    old.discard()
    with pytest.raises(OutputError, match="already holds files; pass --overwrite"):
        check_destination(out)
    staged = stage(out, "new-job")
    with pytest.raises(OutputError, match="already holds files"):
        publish(staged)  # checked again when publishing
    assert publish(staged, overwrite=True) == ROWS
    staged.discard()
    # The old dataset's parts 4 and 5 are gone: they would be read as rows of this one.
    assert ds.dataset(out, format="parquet").to_table().equals(expected())
    assert Path(out, SUCCESS).read_text() == "new-job"


def test_a_dataset_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OutputError, match="is a file; a dataset output"):
        check_destination(f"{tmp_path}/plain/")
    with pytest.raises(OutputError, match="does not exist"):
        check_destination(f"{tmp_path}/no/such/dir/")


@pytest.mark.parametrize("name", ["out.parquet", "out.csv"])
def test_a_file_output_knows_its_own_publisher(tmp_path: Path, name: str) -> None:
    out = str(tmp_path / name)
    staged = stage(out)
    publish(staged)
    inode = os.stat(out).st_ino
    assert staged.published()  # by the hard link in its staging area
    assert not StagedOutput(out, "another-job", PARTS).published()
    identity = staged.identity()  # what the job's finisher records in Redis
    staged.discard()
    assert not staged.published()
    assert StagedOutput(out, "job-1", PARTS, recorded=identity).published()
    assert os.listdir(tmp_path) == [name] and os.stat(out).st_ino == inode
    if name.endswith(".parquet"):
        assert pq.read_table(out).equals(expected())
    else:
        assert len(Path(out).read_text().splitlines()) == ROWS + 1
    os.replace(out, out + ".old")  # another file in its place is not the job's output
    Path(out).write_bytes(Path(out + ".old").read_bytes())
    assert not StagedOutput(out, "job-1", PARTS, recorded=identity).published()


@pytest.fixture(scope="module")
def s3(endpoint_url: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_name("featurepull-")
    s3.create_bucket(Bucket=name)
    return name


def test_an_s3_dataset_reads_back_in_order(endpoint_url: str, s3: Any, bucket: str) -> None:
    settings = S3Settings(endpoint_url=endpoint_url, region=REGION)
    out = f"s3://{bucket}/features/day=1/"
    check_destination(out, s3=settings)
    staged = stage(out, s3=settings)
    assert publish(staged) == ROWS and staged.published()
    staged.discard()
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == sorted([f"features/day=1/{SUCCESS}", f"features/day=1/{MANIFEST}",
                                   *(f"features/day=1/part-0000{n}.parquet"
                                     for n in range(PARTS))])
    filesystem = pafs.S3FileSystem(endpoint_override=endpoint_url, region=REGION,
                                   access_key="testing", secret_key="testing")
    table = ds.dataset(f"{bucket}/features/day=1/", format="parquet",
                       filesystem=filesystem).to_table()
    assert table.equals(expected())
    with pytest.raises(OutputError, match="already holds files"):
        check_destination(out, s3=settings)


def test_an_s3_file_output_knows_its_own_publisher(endpoint_url: str, s3: Any,
                                                   bucket: str) -> None:
    settings = S3Settings(endpoint_url=endpoint_url, region=REGION)
    out = f"s3://{bucket}/out/features.parquet"
    staged = stage(out, s3=settings)
    assert not staged.published()
    publish(staged)
    assert staged.published()
    assert not StagedOutput(out, "another-job", PARTS, settings).published()
    staged.discard()
    assert [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [
        "out/features.parquet"]


_READ_STAGED = """
import sys
from featurepull.io import StagedOutput
staged = StagedOutput(sys.argv[1], "job-1", 4)
keys, part = staged.read_keys(1), staged.read_part(3)
print(keys.num_rows, part.num_rows, "pyarrow.dataset" in sys.modules)
"""


def test_staged_files_are_read_without_pyarrow_dataset(tmp_path: Path) -> None:
    # A pool process reads its shard's keys first: importing pyarrow.dataset (and pandas
    # with it) there would cost ~0.4 s of CPU in every process's first shard.
    output = str(tmp_path / "out.parquet")
    staged = stage(output)
    staged.write_keys(1, part_table(1).select(["driver_id"]))
    proc = subprocess.run([sys.executable, "-c", _READ_STAGED, output], capture_output=True,
                          text=True, timeout=60, check=True)
    assert proc.stdout.split() == [str(SIZE), str(SIZE), "False"]


def stage_checked(output: str, rows_per_write: int | None = None, keys: tuple[str, ...] = ()
                  ) -> tuple[StagedOutput, list[int | None]]:
    """Parts staged as the shards stage them, with what each write_part returned."""
    staged = StagedOutput(output, "job-1", PARTS, rows_per_write=rows_per_write, keys=keys)
    checks: list[int | None] = [None] * PARTS
    for n in (3, 1, 0, 2):
        checks[n] = staged.write_part(n, part_table(n))
    return staged, checks


def publish_checked(staged: StagedOutput, checks: list[int | None]) -> int:
    schemas = [part_table(n).schema for n in range(PARTS)]
    return staged.publish(unify_schemas(schemas), schemas, [SIZE] * PARTS, checks=checks)


def sink_written(path: str, rows_per_write: int | None = None, keys: tuple[str, ...] = ()
                 ) -> bytes:
    """The output one sink writes from the shards' tables, in slices (the finisher before
    it copied row groups)."""
    step = rows_per_write or SIZE
    with open_sink(path, expected().schema, keys=keys) as sink:
        for n in range(PARTS):
            for start in range(0, SIZE, step):
                sink.write(part_table(n).slice(start, step))
    return Path(path).read_bytes()


@pytest.mark.parametrize("rows_per_write", [None, 100])
def test_a_local_parquet_files_parts_are_its_row_groups_and_publish_the_same_bytes(
        tmp_path: Path, rows_per_write: int | None) -> None:
    # Encoded by the shards as the output's writer encodes them: the finisher copies their
    # row groups. Parts 0, 1 and 3 have a null-typed column the output widens: those are
    # encoded again, cast. Either way the bytes are those one sink writes.
    output = str(tmp_path / "out.parquet")
    staged, checks = stage_checked(output, rows_per_write)
    assert all(isinstance(check, int) for check in checks)
    column = pq.ParquetFile(staged.staging + staged.part_name(2)).metadata.row_group(0)
    assert (column.column(0).compression, column.column(0).has_dictionary_page) == (
        "SNAPPY", True)
    assert publish_checked(staged, checks) == ROWS
    assert Path(output).read_bytes() == sink_written(str(tmp_path / "direct.parquet"),
                                                     rows_per_write)
    assert pq.ParquetFile(output).num_row_groups == PARTS * -(-SIZE // (rows_per_write or SIZE))
    # Parts staged without a check (a worker of an earlier version) are read and encoded.
    again = str(tmp_path / "again.parquet")
    staged, checks = stage_checked(again, rows_per_write)
    publish_checked(staged, [None, *checks[1:]])
    assert Path(again).read_bytes() == Path(output).read_bytes()


def test_a_parquet_files_key_columns_have_no_dictionaries_in_its_parts_and_output(
        tmp_path: Path) -> None:
    # The entity keys, mostly distinct, are plain in the parts and the output (a dictionary
    # of distinct values costs more than it saves); the features keep theirs. The output is
    # the bytes one sink with those keys writes, and holds the same table.
    output = str(tmp_path / "out.parquet")
    staged, checks = stage_checked(output, keys=("driver_id",))
    assert dictionary_pages(staged.staging + staged.part_name(2)) == {
        "driver_id": {False}, "note": {True}}
    publish_checked(staged, checks)
    assert dictionary_pages(output) == {"driver_id": {False}, "note": {True}}
    assert Path(output).read_bytes() == sink_written(str(tmp_path / "direct.parquet"),
                                                     keys=("driver_id",))
    assert pq.read_table(output).equals(expected(), check_metadata=True)
    # Parts a worker of an earlier version staged (with the keys' dictionaries, CRCs and
    # all) are not copied into an output without them: encoded again, the same bytes.
    again = str(tmp_path / "again.parquet")
    _, checks = stage_checked(again)
    publish_checked(StagedOutput(again, "job-1", PARTS, keys=("driver_id",)), checks)
    assert Path(again).read_bytes() == Path(output).read_bytes()
    # A dataset's parts (its files) likewise.
    dataset = StagedOutput(str(tmp_path / "ds") + "/", "job-1", PARTS, keys=("driver_id",))
    dataset.write_part(2, part_table(2))
    assert dictionary_pages(dataset.staging + dataset.part_name(2)) == {
        "driver_id": {False}, "note": {True}}


def test_a_local_text_files_parts_are_plain(tmp_path: Path) -> None:
    # Read once by the finisher: uncompressed pages without dictionaries, half the CPU.
    output = str(tmp_path / "out.csv")
    staged, checks = stage_checked(output)
    assert checks == [None] * PARTS
    staged.write_keys(0, part_table(0).select(["driver_id"]))
    for name in (staged.part_name(1), staged.keys_name(0)):
        column = pq.ParquetFile(staged.staging + name).metadata.row_group(0).column(0)
        assert (column.compression, column.has_dictionary_page) == ("UNCOMPRESSED", False)
    publish_checked(staged, checks)
    assert Path(output).read_bytes() == sink_written(str(tmp_path / "direct.csv"))
    # A dataset's parts are its files: compressed as any Parquet output.
    dataset = stage(str(tmp_path / "ds") + "/")
    first = pq.ParquetFile(dataset.staging + dataset.part_name(0)).metadata.row_group(0)
    assert first.column(0).compression != "UNCOMPRESSED"


def test_a_local_parquet_files_torn_part_fails_its_publishing(tmp_path: Path) -> None:
    # Its parts have no page checksums (the output has none): the CRC-32 its shard recorded
    # of the whole part tells it, whichever byte a crash tore.
    output = tmp_path / "out.parquet"
    staged, checks = stage_checked(str(output))
    torn = Path(staged.staging, staged.part_name(2))
    tear_first_page(torn)
    with pytest.raises(OutputError, match=(
            r"^.*/\.out\.parquet\.parts-job-1/part-00002\.parquet: part 2 of .*out\.parquet "
            r"is not what its shard wrote \(its CRC-32 differs\): a crash of the machine "
            r"holding it can tear it \(staged parts are not fsynced\), or a second run of the "
            r"shard wrote it again; submit the job again$")):
        publish_checked(staged, checks)
    torn.unlink()
    with pytest.raises(OutputError, match=r"part 2 of .* is missing from its staging area"):
        publish_checked(staged, checks)
    assert not output.exists() and not list(tmp_path.glob(".out.parquet.tmp-*"))


def test_a_local_parquet_files_emptied_part_fails_its_publishing(tmp_path: Path) -> None:
    # The finisher maps each part (no copy): an emptied one, which cannot be mapped, is
    # still a part that is not what its shard wrote.
    output = tmp_path / "out.parquet"
    staged, checks = stage_checked(str(output))
    Path(staged.staging, staged.part_name(1)).write_bytes(b"")
    with pytest.raises(OutputError, match=r"part 1 of .* is not what its shard wrote"):
        publish_checked(staged, checks)
    assert not output.exists()


def test_a_files_writeback_is_started_with_its_buffered_bytes(tmp_path: Path) -> None:
    # The finisher has each part's pages sent to disk as it writes them (the output's fsync
    # stays at its end): the stream's buffer is flushed first, and on Linux the kernel's
    # sync_file_range is found and takes the call.
    path = tmp_path / "out.parquet"
    with open(path, "wb", buffering=1 << 20) as stream:
        stream.write(b"x" * 1000)
        start_writeback(stream)
        assert path.stat().st_size == 1000
        if sys.platform == "linux":
            call = _sync_file_range()
            assert call is not None and call(stream.fileno(), 0, 0, 2) == 0


def test_the_next_part_is_read_while_one_is_written_and_none_after_a_failure() -> None:
    # The finisher reads part n + 1 on a thread while it writes part n: in order, never two
    # ahead, and a part that fails is raised in its turn with none after it started.
    started: list[int] = []

    def part(n: int) -> int:
        started.append(n)
        if n == 2:
            raise OutputError("part 2 is torn")
        return n * 10

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert list(_one_ahead(pool, part, 2)) == [0, 10]
        assert list(_one_ahead(pool, part, 0)) == []
        started.clear()
        got = []
        with pytest.raises(OutputError, match="part 2 is torn"):
            for value in _one_ahead(pool, part, 5):
                assert max(started) <= value // 10 + 1  # the one after it at most
                got.append(value)
    assert got == [0, 10] and started == [0, 1, 2]


def test_a_local_file_outputs_torn_or_lost_part_fails_its_publishing(tmp_path: Path) -> None:
    # Staged parts of a local file output are not fsynced: a machine that dies can lose one,
    # or leave it torn. The output is then refused, never written from a wrong part. (A
    # text output's parts are plain, with page checksums; a Parquet output's: below.)
    output = tmp_path / "out.csv"
    staged = stage(str(output))
    torn = Path(staged.staging, staged.part_name(1))
    tear_first_page(torn)
    data = torn.read_bytes()
    with pytest.raises(OutputError, match=(
            r"^.*/\.out\.csv\.parts-job-1/part-00001\.parquet: part 1 of .*out\.csv "
            r"cannot be read \(.*checksum.*\): a crash of the machine holding it can tear it "
            r"\(staged parts are not fsynced\); submit the job again$")):
        publish(staged)
    truncated = Path(staged.staging, staged.part_name(1))
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(OutputError, match=r"part 1 of .* cannot be read"):
        publish(staged)
    truncated.unlink()
    with pytest.raises(OutputError, match=r"part 1 of .* is missing from its staging area"):
        publish(staged)
    assert not output.exists()
    # A dataset's parts are its files, fsynced: a torn one is not blamed on a crash.
    dataset = stage(str(tmp_path / "ds") + "/")
    Path(dataset.staging, dataset.part_name(1)).write_bytes(data[:100])
    with pytest.raises(pa.ArrowInvalid, match="magic bytes") as raised:
        dataset.read_part(1)
    assert not isinstance(raised.value, OutputError)


def test_a_local_file_outputs_part_the_file_system_refuses_keeps_its_own_error(
        tmp_path: Path) -> None:
    # Only a part a crash can make (torn, emptied, lost) is blamed on a crash: an error of the
    # file system (a directory in its place, no descriptor left, a staging area that is no
    # directory; all of them as root too) keeps its own message and path.
    output = tmp_path / "out.parquet"
    staged = stage(str(output))
    part = Path(staged.staging, staged.part_name(1))
    part.write_bytes(b"")  # emptied
    with pytest.raises(OutputError, match=r"part 1 of .* cannot be read \(.*0 bytes\): a crash"):
        staged.read_part(1)
    part.unlink()
    part.mkdir()
    with pytest.raises(OSError, match=r"^Cannot open for reading: path '.*/part-00001\.parquet' "
                                      r"is a directory$") as raised:
        staged.read_part(1)
    assert not isinstance(raised.value, OutputError)
    part.rmdir()
    staged.write_part(1, part_table(1))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))  # 0-2 are taken: none left
    try:  # a regular file, but no descriptor left to open it with
        with pytest.raises(OSError, match=r"part-00001\.parquet.*Too many open files") as raised:
            staged.read_part(1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not isinstance(raised.value, OutputError)
    staging = Path(staged.staging)
    os.rename(staging, tmp_path / "elsewhere")
    staging.write_bytes(b"not a directory")
    with pytest.raises(NotADirectoryError, match=r"part-00001\.parquet.*Not a directory"):
        staged.read_part(1)
    assert not output.exists()
