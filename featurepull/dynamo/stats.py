"""ReadStats: what one read (or a sum of reads) did, for summaries, logs and job totals."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of already-sorted values, nearest-rank; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


_EXTREMES = {"budget_rcu_per_s": max, "concurrency_min": min, "concurrency_max": max}


@dataclass
class ReadStats:
    """Counters of one read. Keys count input rows; requests count BatchGetItem calls, or
    a Scan's pages (``pages`` too), whose items are ``items_scanned`` of which
    ``items_matched`` were of the keys asked for. ``read_mode`` says which read ran."""

    keys: int = 0
    unique_keys: int = 0
    found: int = 0
    missing: int = 0
    requests: int = 0
    unprocessed_retries: int = 0
    unprocessed_requests: int = 0  # answers that left some keys in UnprocessedKeys
    throttles: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    retries: int = 0
    consumed_rcu: float = 0.0
    seconds: float = 0.0
    budget_rcu_per_s: float = 0.0  # the read budget in force; 0: none
    budget_wait_s: float = 0.0  # time new requests were held back for the budget
    concurrency_min: int = 0  # the lowest and highest in-flight limit (AIMD)
    concurrency_max: int = 0
    stale: int = 0  # Feast views: rows x views older than the view's TTL (featurepull.dynamo.views)
    pages: int = 0  # Scan pages answered (featurepull.dynamo.scan)
    items_scanned: int = 0
    items_matched: int = 0
    read_mode: str = ""  # "batch-get" | "scan" ("mixed" for a sum of both); "" unknown
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def latency_p50_ms(self) -> float:
        return percentile(sorted(self.latencies_ms), 0.50)

    @property
    def latency_p99_ms(self) -> float:
        return percentile(sorted(self.latencies_ms), 0.99)

    @property
    def rows_per_s(self) -> float:
        return self.keys / self.seconds if self.seconds > 0 else 0.0

    @property
    def rcu_per_s(self) -> float:
        return self.consumed_rcu / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: ReadStats) -> None:
        """Add another read's counters to these (job totals over shards)."""
        for name, value in other._fields().items():
            if name == "latencies_ms":
                self.latencies_ms.extend(other.latencies_ms)
            elif name == "read_mode":
                mine = self.read_mode
                self.read_mode = mine if value in ("", mine) else value if not mine else "mixed"
            elif name in _EXTREMES:
                # Not sums: the budget and the in-flight range are those of the whole job.
                pick = _EXTREMES[name]
                mine = getattr(self, name)
                setattr(self, name, pick(mine, value) if mine and value else mine or value)
            else:
                setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (latencies reduced to p50/p99)."""
        out = {k: v for k, v in self._fields().items() if k != "latencies_ms"}
        out["consumed_rcu"] = round(self.consumed_rcu, 3)
        out["seconds"] = round(self.seconds, 3)
        out["latency_p50_ms"] = round(self.latency_p50_ms, 2)
        out["latency_p99_ms"] = round(self.latency_p99_ms, 2)
        out["rows_per_s"] = round(self.rows_per_s, 1)
        out["rcu_per_s"] = round(self.rcu_per_s, 1)
        out["budget_rcu_per_s"] = round(self.budget_rcu_per_s, 1)
        out["budget_wait_s"] = round(self.budget_wait_s, 3)
        return out

    def _fields(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies latencies_ms, a float per request (10,000
        # per million keys, again for every shard summed), which no caller keeps.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def summary_line(self) -> str:
        """One human line: rows, found, missing, requests, retries, RCU, seconds, rows/s."""
        return (
            f"rows={self.keys} found={self.found} missing={self.missing} "
            f"requests={self.requests} retries={self.retries} "
            f"unprocessed_retries={self.unprocessed_retries} throttles={self.throttles} "
            f"rcu={self.consumed_rcu:.1f} rcu/s={self.rcu_per_s:,.0f} "
            f"budget={self.budget_rcu_per_s:,.0f} budget_wait={self.budget_wait_s:.2f}s "
            f"in_flight={self.concurrency_min}-{self.concurrency_max} "
            f"p50={self.latency_p50_ms:.1f}ms p99={self.latency_p99_ms:.1f}ms "
            f"seconds={self.seconds:.2f} rows/s={self.rows_per_s:,.0f}"
            + (f" stale={self.stale}" if self.stale else "")
            + (f" read_mode={self.read_mode}" if self.read_mode else "")
            + (f" pages={self.pages} scanned={self.items_scanned} "
               f"matched={self.items_matched}" if self.pages else "")
        )
