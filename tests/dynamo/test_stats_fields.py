"""ReadStats sums and summaries read every field (without copying the latencies), as
``dataclasses.asdict`` would give them, on generated stats."""

from __future__ import annotations

import random
from dataclasses import asdict, fields

import pytest

from featurepull.dynamo.stats import ReadStats


def generated(rng: random.Random) -> ReadStats:
    stats = ReadStats()
    for f in fields(stats):
        if f.name == "latencies_ms":
            stats.latencies_ms = [rng.random() * 50 for _ in range(rng.randint(0, 40))]
        elif f.name == "read_mode":
            stats.read_mode = rng.choice(["", "batch-get", "scan"])
        elif f.type == "float":
            setattr(stats, f.name, rng.choice([0.0, rng.random() * 100]))
        else:
            setattr(stats, f.name, rng.choice([0, rng.randint(1, 1000)]))
    return stats


@pytest.mark.parametrize("seed", range(5))
def test_merge_and_to_dict_read_every_field(seed: int) -> None:
    rng = random.Random(seed)
    parts = [generated(rng) for _ in range(rng.randint(1, 6))]
    total = ReadStats()
    for part in parts:
        total.merge(part)
    plain = [asdict(part) for part in parts]
    for name in ("keys", "found", "requests", "retries", "pages", "stale"):
        assert getattr(total, name) == sum(p[name] for p in plain)
    assert total.consumed_rcu == pytest.approx(sum(p["consumed_rcu"] for p in plain))
    assert total.latencies_ms == [v for p in plain for v in p["latencies_ms"]]
    assert total.budget_rcu_per_s == max(p["budget_rcu_per_s"] for p in plain)
    summary = total.to_dict()
    assert set(summary) == {*asdict(total)} - {"latencies_ms"} | {
        "latency_p50_ms", "latency_p99_ms", "rows_per_s", "rcu_per_s"}
    for name, value in asdict(total).items():
        if name != "latencies_ms" and isinstance(value, int | str):
            assert summary[name] == value
    summary["keys"] = -1  # a summary is the caller's to change
    assert total.keys != -1
