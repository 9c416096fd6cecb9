"""A requested feature that no found item holds is refused (a typo would otherwise be a
silent all-null column), by the rule of featurepull.dynamo.features: once CHECK_ITEMS items
were found without it — the read stops there — or at the end of a smaller read; a sparse
feature held by any found item passes; --allow-missing-features reads it as null. Against
a real endpoint process (featurepull.bench.endpoint) and a plain table on moto."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, EndpointProcess, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout, PlainLayout, UnknownFeatureError
from featurepull.dynamo.features import CHECK_ITEMS, FeatureCheck
from tests.conftest import REGION, moto_table

DRIVERS = 3_000
LAYOUT = FeastLayout({"driver_id": "int64"})


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=DRIVERS) as running:
        yield running


def feast_reader(endpoint: EndpointProcess) -> BatchReader:
    return BatchReader(DEFAULT_TABLE, LAYOUT,
                       DynamoSettings(endpoint_url=endpoint.url, region=REGION,
                                      max_read_workers=4))


def test_a_typo_stops_the_read_early_naming_what_the_items_hold(
        endpoint: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": list(range(DRIVERS))})  # 30 requests, all found
    before = endpoint.stats()["batch_get_item"]
    with pytest.raises(UnknownFeatureError) as refused:
        feast_reader(endpoint).read(keys, ["conv_rat", "city"])
    sent = endpoint.stats()["batch_get_item"] - before
    message = str(refused.value)
    assert refused.value.missing == ["conv_rat"]
    assert refused.value.held == sorted(FEATURES)
    assert message.startswith("feature 'conv_rat' is held by none of the first ")
    assert "(the read stopped there)" in message and DEFAULT_TABLE in message
    assert f"they hold in their values map: {', '.join(sorted(FEATURES))}" in message
    assert "did you mean 'conv_rate'?" in message and "--allow-missing-features" in message
    # Stopped once CHECK_ITEMS items were found: those requests, the answers that came
    # with them and the requests then in flight (4 each at most), and the one that lists
    # what the items hold — not after reading every key.
    assert sent <= CHECK_ITEMS // 100 + 2 * 4 + 1 < len(keys) // 100, sent


def test_allow_missing_features_reads_it_as_null(endpoint: EndpointProcess) -> None:
    keys = LAYOUT.keys_for({"driver_id": [5, 7, DRIVERS + 1]})
    rows = feast_reader(endpoint).read(keys, ["conv_rat", "city"],
                                       allow_missing_features=True).rows
    assert rows[2] is None
    for row in rows[:2]:
        assert row is not None and row[1] is None and isinstance(row[2], str)


def test_nothing_found_gives_no_verdict(endpoint: EndpointProcess) -> None:
    # No item answered for: nothing says what the table holds, and every row is missing.
    keys = LAYOUT.keys_for({"driver_id": [DRIVERS + 1, DRIVERS + 2]})
    assert feast_reader(endpoint).read(keys, ["conv_rat"]).rows == [None, None]


def test_the_request_that_lists_what_items_hold_waits_for_the_read_budget() -> None:
    # A table of 2 RCU/s (1 s of burst) read with a budget of the same 2 RCU/s: the read's
    # one request (4 keys, 2 RCU) spends the table's whole bucket, so the request that
    # lists what the items hold is throttled unless it, too, waits for the budget.
    rate = 2.0
    with start_endpoint(drivers=100, provisioned_rcu=rate, burst_s=1.0) as provisioned:
        reader = BatchReader(DEFAULT_TABLE, LAYOUT,
                             DynamoSettings(endpoint_url=provisioned.url, region=REGION,
                                            max_rcu_per_s=rate))
        with pytest.raises(UnknownFeatureError) as refused:
            reader.read(LAYOUT.keys_for({"driver_id": [1, 2, 3, 4]}), ["conv_rat"])
        usage = provisioned.capacity()["clients"]
    assert refused.value.held == sorted(FEATURES), str(refused.value)
    # On the wire: both requests served in full, within the table's capacity.
    assert [(u["requests"], u["throttled"], u["rcu"]) for u in usage.values()] == [(2, 0, 3.5)]


@pytest.fixture(scope="module")
def sparse_table(ddb: Any) -> str:
    """40 users with ``plan``; only user u39 has ``referrer`` (a sparse attribute)."""
    return moto_table(ddb, "sparse", [("user", "S")], [
        {"user": {"S": f"u{i:02d}"}, "plan": {"S": "pro" if i % 2 else "free"},
         **({"referrer": {"S": "u00"}} if i == 39 else {})} for i in range(40)])


def plain_read(endpoint_url: str, table: str, features: list[str]) -> list[Any]:
    layout = PlainLayout([("user", "S")], event_ts_attribute=None)
    reader = BatchReader(table, layout, DynamoSettings(endpoint_url=endpoint_url,
                                                       region=REGION))
    keys = layout.keys_for({"user": [f"u{i:02d}" for i in range(40)]})
    return reader.read(keys, features).rows


def test_a_sparse_attribute_held_by_one_found_item_passes(endpoint_url: str,
                                                          sparse_table: str) -> None:
    rows = plain_read(endpoint_url, sparse_table, ["plan", "referrer"])
    assert [row[2] for row in rows if row is not None] == [None] * 39 + ["u00"]


def test_an_attribute_no_found_item_holds_is_refused_at_the_end(endpoint_url: str,
                                                                sparse_table: str) -> None:
    with pytest.raises(UnknownFeatureError) as refused:
        plain_read(endpoint_url, sparse_table, ["plan", "referer"])
    message = str(refused.value)
    assert message.startswith("attribute 'referer' is held by none of the 40 items found")
    assert "they hold as attributes: plan, user." in message  # listed from sampled items


def test_the_rule_waits_for_check_items_found_or_the_end_of_the_read() -> None:
    layout = PlainLayout([("user", "S")])
    check = FeatureCheck(["plan", "rare", "typo"], layout)
    assert check.refused(finished=True) == []  # nothing found: no verdict
    without = [{"user": {"S": f"u{i}"}, "plan": {"S": "pro"}} for i in range(CHECK_ITEMS - 1)]
    check.observe(without)
    assert check.refused(finished=False) == []  # too few found to stop early
    assert check.refused(finished=True) == ["rare", "typo"]  # a small read, at its end
    check.observe([{"user": {"S": "v"}, "rare": {"S": "x"}}])  # a sparse one shows up
    assert check.found == CHECK_ITEMS and check.active
    assert check.refused(finished=False) == ["typo"]
    assert check.sample == ["u0", "u1", "u2"]


def run_pull(endpoint: EndpointProcess, tmp_path: Path, *extra: str
             ) -> subprocess.CompletedProcess[str]:
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id\n" + "\n".join(map(str, range(1_500))) + "\n")
    return subprocess.run(
        [sys.executable, "-m", "featurepull", "pull", "--endpoint-url", endpoint.url,
         "--region", REGION, "--project", "demo", "--table", "driver_stats", "--features",
         "conv_rat,city", "--entities", str(entities), "--output",
         str(tmp_path / "out.parquet"), *extra],
        capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_pull_exits_2_on_a_typo_and_writes_nothing(endpoint: EndpointProcess,
                                                   tmp_path: Path) -> None:
    proc = run_pull(endpoint, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("featurepull: error: feature 'conv_rat' is held by none of")
    assert "did you mean 'conv_rate'?" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entities.csv"]


def test_pull_allow_missing_features_writes_a_null_column(endpoint: EndpointProcess,
                                                          tmp_path: Path) -> None:
    proc = run_pull(endpoint, tmp_path, "--allow-missing-features")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 1_500 and table.column("conv_rat").null_count == 1_500
    assert table.column("city").null_count == 0
