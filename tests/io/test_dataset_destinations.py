"""A dataset output (a local path ending in /) is checked before anything is written: each
refusal names the path, the problem and the fix; a directory that holds only the staging
folder of an earlier run is taken as empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurepull.io import OutputError, check_destination
from featurepull.io._destinations import STAGING_DIR


def refusal(path: str, overwrite: bool = False) -> str:
    with pytest.raises(OutputError) as refused:
        check_destination(path, overwrite)
    return str(refused.value)


def test_a_file_where_the_dataset_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    path = f"{tmp_path}/out/"
    assert refusal(path, overwrite=True) == (
        f"{path} is a file; a dataset output (ending in /) is a directory: remove the file "
        "or choose another path")


def test_a_dataset_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    path = f"{tmp_path}/missing/out/"
    assert refusal(path) == (f"{path}: directory {tmp_path}/missing does not exist; create "
                             "it or choose another path")


def test_a_directory_holding_files_needs_overwrite(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    path = f"{tmp_path}/out/"
    check_destination(path)  # empty
    (tmp_path / "out" / STAGING_DIR).mkdir()
    check_destination(path)  # only an earlier run's staging
    (tmp_path / "out" / "part-0.parquet").write_text("x")
    assert refusal(path) == (
        f"{path} already holds files; pass --overwrite to replace its dataset "
        "(part-*.parquet, _manifest.json, _SUCCESS), or name an empty or new directory")
    check_destination(path, overwrite=True)
