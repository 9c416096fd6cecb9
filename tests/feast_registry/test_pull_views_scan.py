"""``featurepull pull --read-mode scan`` with Feast references over several views: each view's
table scanned on its own and joined back to the entity rows gives what Feast's own
``get_online_features`` gives, and the same file as the batch-get read."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.feast_registry.conftest import FeastRepo
from tests.feast_registry.test_pull_views import TWO_VIEWS, assert_same_as_feast, pull


def test_several_views_scanned_read_as_feast_reads_them(feast_repo: FeastRepo,
                                                        tmp_path: Path) -> None:
    read = {}
    for mode in ("scan", "batch-get"):
        out = tmp_path / f"{mode}.parquet"
        result = pull(feast_repo, out, "--features", ",".join(TWO_VIEWS), "--read-mode", mode)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output.splitlines()[-1])
        assert summary["read_mode"] == mode
        assert [plan["read_mode"] for plan in summary["read_plans"]] == [mode] * 3
        assert (summary["pages"] > 0) == (mode == "scan")
        read[mode] = pq.read_table(out).to_pydict()
    assert read["scan"] == read["batch-get"]
    assert_same_as_feast(read["scan"], feast_repo.online(TWO_VIEWS))
    assert read["scan"]["driver_id"] == [row["driver_id"] for row in feast_repo.rows]
