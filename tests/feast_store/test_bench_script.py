"""scripts/feast_store_bench.py runs end to end on the bench endpoint, here with 5% of keys
left unprocessed: through ``get_online_features`` Feast's store reports about 5% of the known
rows missing, featurepull's only the unknown ones. Speed is the script's output, never
asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs for many seconds: an endpoint process, Feast, 3 stores
ROOT = Path(__file__).resolve().parents[2]
SIZE = 1_000
KNOWN = int(SIZE * 0.9)


def test_with_5_percent_unprocessed_feast_loses_rows_and_featurepull_none(
        tmp_path: Path) -> None:
    out = tmp_path / "feast_store_bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "feast_store_bench.py"), "--sizes", str(SIZE),
         "--repeats", "1", "--unprocessed-rate", "0.05", "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    cells = {cell["store"]: cell for cell in json.loads(out.read_text())["cells"]}
    assert set(cells) == {"feast", "featurepull", "featurepull-botocore"}
    assert all(cell["size"] == SIZE and cell["seconds"] > 0 for cell in cells.values())
    assert cells["featurepull"]["found"] == cells["featurepull-botocore"]["found"] == KNOWN
    lost = KNOWN - cells["feast"]["found"]
    assert 0.02 * KNOWN < lost < 0.10 * KNOWN
    assert "featurepull" in done.stdout and f"{KNOWN - lost:,}" in done.stdout
