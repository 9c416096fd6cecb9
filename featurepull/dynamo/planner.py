"""Which read a job's keys should get: BatchGetItem per key, or one parallel Scan of the table.

BatchGetItem charges every key, found or not, 0.5 RCU (1 strongly consistent) per started
4 KB of its item; Scan charges 0.5 (1) per started 4 KB of the items a page read, whatever
is wanted of them. So for small items a pull that wants most of a table costs several times
less as a scan. ``auto`` estimates both from DescribeTable's ``ItemCount`` and
``TableSizeBytes`` and the job's unique keys, and takes the scan only when it is clearly the
cheaper — guard rails, because a wrong scan costs the whole table, a wrong batch-get only
the keys asked for:

- DescribeTable's counts are refreshed about every 6 hours: an empty or missing count (a new
  or freshly loaded table) says nothing of the table's size, and never picks a scan.
- More unique keys than ``ItemCount`` means the count is stale (or most keys are absent):
  the table's size is scaled up to the keys for the scan's estimate.
- A scan must be estimated at least ``SCAN_MARGIN`` times cheaper (counts up to 6 hours
  old, page rounding, a table that grew).
- Tables under ``dynamodb.scan_min_items`` items are read by key: the read units saved are
  cents, and point reads touch nothing but the keys asked for.

``batch-get`` and ``scan`` as requested are taken as they are; the estimates still say what
they cost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from featurepull.config import DynamoSettings

ChosenMode = Literal["batch-get", "scan"]
SCAN_MARGIN = 2.0  # a scan's estimate must be this many times below batch-get's
RCU_BYTES = 4096  # DynamoDB charges read units per started 4 KB
# Segments: at least one per page in flight, and one per SEGMENT_BYTES of table (AWS's
# guidance for a parallel scan) up to DynamoDB's limit on TotalSegments.
SEGMENT_BYTES = 2 * 1024**3
MAX_SEGMENTS = 1_000_000

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadPlan:
    """The read chosen for one table, both estimates (RCU), and why, in one line."""

    mode: ChosenMode
    batch_get_rcu: float
    scan_rcu: float
    total_segments: int
    reason: str
    requested: str = "auto"  # the read_mode asked for
    table: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for summaries."""
        return {"table": self.table, "read_mode": self.mode, "requested": self.requested,
                "batch_get_rcu": round(self.batch_get_rcu, 1),
                "scan_rcu": round(self.scan_rcu, 1), "total_segments": self.total_segments,
                "reason": self.reason}


def estimate_rcu(description: Mapping[str, Any], unique_keys: int,
                 consistent: bool) -> tuple[float, float]:
    """``(batch-get, scan)`` read units for ``unique_keys`` keys of the described table.
    Without a size or count the batch-get estimate is DynamoDB's minimum per key and the
    scan's is 0 (unknown)."""
    unit = 1.0 if consistent else 0.5
    items = int(description.get("ItemCount", 0) or 0)
    size = float(description.get("TableSizeBytes", 0) or 0)
    if items <= 0 or size <= 0:
        return unique_keys * unit, 0.0
    average = size / items
    batch_get = unique_keys * math.ceil(average / RCU_BYTES) * unit
    # A stale count (more keys than items): scale the table to the keys, on the safe side.
    scanned = size * max(1.0, unique_keys / items)
    return batch_get, math.ceil(scanned / RCU_BYTES) * unit


def total_segments(description: Mapping[str, Any], settings: DynamoSettings) -> int:
    """Segments for a scan of the table: one per page in flight, more for a large table."""
    size = float(description.get("TableSizeBytes", 0) or 0)
    by_size = math.ceil(size / SEGMENT_BYTES)
    return max(1, min(MAX_SEGMENTS, max(settings.max_read_workers, by_size)))


def plan_read(description: Mapping[str, Any], unique_keys: int, settings: DynamoSettings,
              *, mode: str | None = None, table: str = "") -> ReadPlan:
    """The read for ``unique_keys`` keys of the described table under ``mode`` (default
    ``settings.read_mode``); logs the choice and its reason."""
    requested = mode or settings.read_mode
    batch_get, scan = estimate_rcu(description, unique_keys, settings.consistent_reads)
    segments = total_segments(description, settings)
    name = table or str(description.get("TableName", "the table"))
    if requested in ("batch-get", "scan"):
        chosen: ChosenMode = "scan" if requested == "scan" else "batch-get"
        reason = _compare(chosen, batch_get, scan) + " (requested)"
    else:
        chosen, reason = _auto(description, unique_keys, batch_get, scan, settings)
    plan = ReadPlan(chosen, batch_get, scan, segments if chosen == "scan" else 0, reason,
                    requested, name)
    logger.info("%s: %s", name, reason, extra={"table": name, "read_mode": chosen})
    return plan


def _compare(chosen: ChosenMode, batch_get: float, scan: float) -> str:
    if chosen == "scan":
        return f"read_mode=scan: ~{_units(scan)} RCU vs ~{_units(batch_get)} RCU for batch-get"
    scan_text = f"~{_units(scan)} RCU" if scan > 0 else "unknown"
    return f"read_mode=batch-get: ~{_units(batch_get)} RCU vs {scan_text} for scan"


def _auto(description: Mapping[str, Any], unique_keys: int, batch_get: float, scan: float,
          settings: DynamoSettings) -> tuple[ChosenMode, str]:
    items = int(description.get("ItemCount", 0) or 0)
    size = float(description.get("TableSizeBytes", 0) or 0)
    chosen: ChosenMode = "batch-get"
    if items <= 0 or size <= 0:
        why = ("DescribeTable reports no item count or size yet (they refresh about every "
               "6 hours), so a scan's cost is unknown")
    elif items < settings.scan_min_items:
        why = (f"the table holds ~{items:,} items, under dynamodb.scan_min_items="
               f"{settings.scan_min_items:,}")
    elif scan * SCAN_MARGIN > batch_get:
        why = (f"a scan must be {SCAN_MARGIN:g}x cheaper to be chosen; "
               f"{unique_keys:,} keys of ~{items:,} items")
    else:
        chosen = "scan"
        why = f"{unique_keys:,} keys of ~{items:,} items"
    return chosen, f"{_compare(chosen, batch_get, scan)} ({why})"


def _units(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"
