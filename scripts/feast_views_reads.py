#!/usr/bin/env python
"""What a multi-view pull asks DynamoDB for: one read per view per unique key, counted at the
endpoint, against rows x views.

    .venv/bin/python scripts/feast_views_reads.py                       # 1,000 and 20,000 rows
    .venv/bin/python scripts/feast_views_reads.py --sizes 5000 --json-out views_reads.json

The Feast repo of ``tests/feast_registry`` (three views on drivers, customers and the pair of
them, applied and written by Feast itself) on a private moto server; ``featurepull pull``
reads its three views through the wire proxy of ``tests/faultproxy.py``, which counts the
keys and BatchGetItem requests it forwards. Entity rows draw drivers and customers at random
(some unknown), so they repeat. Needs Feast: ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

REFERENCES = "driver_hourly_stats:conv_rate,customer_profile:tier,driver_customer:rides"


def measure(rows: int, moto_url: str, repo: Path) -> dict[str, Any]:
    """Pull ``rows`` entity rows of the three views through a counting proxy."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from featurepull.cli import main
    from tests.faultproxy import FaultProxy
    from tests.feast_registry.conftest import CUSTOMERS, DRIVERS, write_yaml

    rng = random.Random(rows)
    drivers = [rng.randrange(DRIVERS + DRIVERS // 5) for _ in range(rows)]
    customers = [f"c{rng.randrange(CUSTOMERS + CUSTOMERS // 5)}" for _ in range(rows)]
    entities = repo / f"entities-{rows}.parquet"
    pq.write_table(pa.table({"driver_id": pa.array(drivers, pa.int64()),
                             "customer_id": customers}), entities)
    with FaultProxy(moto_url) as proxy:
        yaml = write_yaml(repo / f"via-proxy-{rows}", "measure", proxy.url,
                          str(repo / "data" / "registry.db"))
        result = CliRunner().invoke(main, [
            "pull", "--feature-store-yaml", str(yaml), "--entities", str(entities),
            "--output", str(repo / f"out-{rows}.parquet"), "--json", "--features", REFERENCES])
        if result.exit_code != 0:
            raise SystemExit(result.output)
        counts = proxy.counts
    pairs = set(zip(drivers, customers, strict=True))
    unique = [len(set(drivers)), len(set(customers)), len(pairs)]
    return {"rows": rows, "views": 3, "rows_x_views": 3 * rows, "unique_keys_per_view": unique,
            "keys_at_endpoint": counts["keys_requested"],
            "requests_at_endpoint": counts["batch_requests"],
            "summary_unique_keys": json.loads(result.output.splitlines()[-1])["unique_keys"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,20000", help="entity rows, comma-separated")
    parser.add_argument("--json-out", help="also write the figures here")
    args = parser.parse_args(argv)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    from feast import FeatureStore

    from featurepull.local import running_moto
    from tests.feast_registry.conftest import _objects, _write, write_yaml

    figures = []
    with running_moto() as moto, tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_yaml(repo, "measure", moto.url, "data/registry.db")
        store = FeatureStore(repo_path=str(repo))
        store.apply(_objects(repo))
        _write(store)
        figures = [measure(int(size), moto.url, repo) for size in args.sizes.split(",")]
    print("| rows | rows x views | unique keys per view | keys at the endpoint | requests |")
    print("|---:|---:|---|---:|---:|")
    for f in figures:
        print(f"| {f['rows']:,} | {f['rows_x_views']:,} | {f['unique_keys_per_view']} | "
              f"{f['keys_at_endpoint']:,} | {f['requests_at_endpoint']:,} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
    ok = all(f["keys_at_endpoint"] == sum(f["unique_keys_per_view"]) for f in figures)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
