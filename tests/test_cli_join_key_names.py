"""`featurepull pull` of a Feast table whose join-key name is not ASCII: without
``join_key_name_length`` it is refused before any request (a closed port answers nothing),
naming the key and both Feast conventions; with it, every row written under that
convention is found (``chars`` as older Feast wrote, ``bytes`` as Feast writes now:
tests/feast_writer.py writes either)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REGION, refused_port, unique_name
from tests.feast_writer import create_feast_table, feast_item

KEY = "fahrer_größe"
WRITTEN_AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def run_pull(endpoint: str, table: str, folder: Path, convention: str | None, *more: str
             ) -> subprocess.CompletedProcess[str]:
    entities = folder / "entities.csv"
    entities.write_text(f"{KEY}\n" + "\n".join(map(str, range(10))) + "\n", encoding="utf8")
    env = {k: v for k, v in os.environ.items() if k != "FEATUREPULL_JOIN_KEY_NAME_LENGTH"}
    if convention is not None:
        env["FEATUREPULL_JOIN_KEY_NAME_LENGTH"] = convention
    project, name = table.split(".")
    cmd = [sys.executable, "-m", "featurepull", "pull", "--endpoint-url", endpoint,
           "--region", REGION, "--project", project, "--table", name, "--features", "score",
           "--entities", str(entities), "--output", str(folder / "out.parquet"), "--json",
           *more]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def write_table(ddb: Any, convention: str) -> str:
    """Drivers 0-9 under ids of that convention ("bytes": as current Feast writes)."""
    table = f"{unique_name('keyname')}.drivers"
    create_feast_table(ddb, table)
    items = []
    for driver in range(10):
        item = feast_item({KEY: ("int64", driver)}, WRITTEN_AT,
                          {"score": ("double_val", driver / 4)}, name_length=convention)
        items.append({"PutRequest": {"Item": item}})
    ddb.batch_write_item(RequestItems={table: items})
    return table


def test_a_non_ascii_join_key_is_refused_before_any_request(tmp_path: Path) -> None:
    with refused_port() as port:
        proc = run_pull(f"http://127.0.0.1:{port}", "p.drivers", tmp_path, None)
    assert proc.returncode != 0
    message = " ".join(proc.stderr.split())
    for part in (repr(KEY), "not ASCII", "join_key_name_length", '"bytes"', '"chars"',
                 "cannot tell", "FEATUREPULL_JOIN_KEY_NAME_LENGTH"):
        assert part in message, proc.stderr
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("convention", ["bytes", "chars"])
def test_the_chosen_convention_finds_every_row(ddb: Any, endpoint_url: str, tmp_path: Path,
                                               convention: str) -> None:
    table = write_table(ddb, convention)
    proc = run_pull(endpoint_url, table, tmp_path, convention)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["found"] == 10
    other = "chars" if convention == "bytes" else "bytes"
    (tmp_path / "out.parquet").unlink()
    assert json.loads(run_pull(endpoint_url, table, tmp_path, other).stdout)["found"] == 0


def test_the_choice_is_read_from_a_feature_store_yaml(ddb: Any, endpoint_url: str,
                                                      tmp_path: Path) -> None:
    """``join_key_name_length`` in the online_store of featurepull's Feast store."""
    table = write_table(ddb, "bytes")
    yaml_path = tmp_path / "feature_store.yaml"
    yaml_path.write_text(
        f"project: {table.split('.')[0]}\nregistry: registry.db\nprovider: aws\n"
        "online_store:\n  type: featurepull.feast_store.FeaturepullOnlineStore\n"
        f"  region: {REGION}\n  join_key_name_length: bytes\n", encoding="utf8")
    proc = run_pull(endpoint_url, table, tmp_path, None, "--feature-store-yaml",
                    str(yaml_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["found"] == 10
