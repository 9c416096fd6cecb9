"""A whole read of one table's keys in the mode :mod:`featurepull.dynamo.planner` picks:
BatchReader's per-key read, or a scan of every segment joined back to the keys. Either way
the result is BatchReader's: one row per key, in order, None where the table has no item.

For reads that own a whole table's keys (``featurepull pull``); a fleet's shard holds only
part of the keys, and its scans are planned per job (:mod:`featurepull.tasks`).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from featurepull.dynamo.found import FoundRows, Row
from featurepull.dynamo.planner import ReadPlan, plan_read
from featurepull.dynamo.reader import BatchReader, Progress, ReadResult
from featurepull.dynamo.scan import ScanResult, SegmentScanner, join

if TYPE_CHECKING:
    import pyarrow as pa


def read_planned(reader: BatchReader, keys: Sequence[Hashable], features: Sequence[str],
                 progress: Progress | None = None, *, allow_missing_features: bool = False,
                 mode: str | None = None, positions: Sequence[int] | pa.Array | None = None
                 ) -> tuple[ReadResult, ReadPlan]:
    """Plan the read of ``keys`` (``mode`` or the reader's ``read_mode`` setting) and run
    it. ``progress`` gets answered keys either way (a scan reports each page's matches, and
    the keys it did not find once it is over). ``positions`` as for BatchReader.read: the
    keys are distinct and input row ``i`` is key ``positions[i]``."""
    reader.check_table()
    assert reader.description is not None
    # With positions the keys are distinct already: a set of a million keys (~0.2 s of
    # CPU) only to count them is built for a scan alone, which matches against it.
    wanted = set(keys) if positions is None else None
    plan = plan_read(reader.description, len(keys if wanted is None else wanted),
                     reader.settings, mode=mode, table=reader.table)
    if plan.mode == "batch-get":
        result = reader.read(keys, features, progress=progress,
                             allow_missing_features=allow_missing_features, positions=positions)
        result.stats.read_mode = "batch-get"
        return result, plan
    started = time.perf_counter()
    # Distinct keys (with positions): each one's index, the slot of its found row.
    matching: set[Hashable] | dict[Hashable, int] = (
        wanted if wanted is not None else dict(zip(keys, range(len(keys)), strict=True)))
    scanner = SegmentScanner.for_reader(reader)
    reported = 0

    def matched(_: int) -> None:
        nonlocal reported
        now = scanner.reading.items_matched if scanner.reading is not None else reported
        if progress is not None and now > reported:
            progress(now - reported)
        reported = now

    scanned = scanner.scan(range(plan.total_segments), plan.total_segments, features,
                           matching, matched, allow_missing_features=allow_missing_features)
    if progress is not None and len(matching) > reported:
        progress(len(matching) - reported)
    rows = _rows(keys, matching, scanned, positions)
    stats = scanned.stats
    stats.keys, stats.unique_keys = len(rows), len(matching)
    stats.found = (rows.found_count if isinstance(rows, FoundRows) else
                   sum(row is not None for row in rows))
    stats.missing = len(rows) - stats.found
    stats.seconds = time.perf_counter() - started
    return ReadResult(rows, stats), plan


def _rows(keys: Sequence[Hashable], matching: set[Hashable] | dict[Hashable, int],
          scanned: ScanResult, positions: Sequence[int] | pa.Array | None
          ) -> Sequence[Row | None]:
    """One row per input row: with ``positions`` (distinct keys, ``matching`` their indexes)
    the scan's columns as they are (:class:`FoundRows`, no tuple made), else joined by key."""
    # The stats count distinct keys: fewer than the matches when one matched twice (then
    # its last row, as the join by key takes it).
    if (positions is not None and isinstance(matching, dict)
            and scanned.stats.found == len(scanned.keys)):
        slots = list(map(matching.__getitem__, scanned.keys))
        return FoundRows(positions, len(keys), slots, scanned.columns)
    rows = join(keys, scanned.found)
    if positions is None:
        return rows
    by_row = positions if isinstance(positions, Sequence) else positions.to_pylist()
    return [rows[p] for p in by_row]
