"""Adaptive concurrency: how many requests a read keeps in flight, AIMD-style.

On throttling (a refused request, or keys left in UnprocessedKeys) the limit halves, floor 1;
after a run of clean answers as long as the limit it grows by one, up to ``max_read_workers``.
Only answers to requests sent after the last cut can cut again: a burst of throttled
answers that were all in flight together is one signal, not ten. With a read budget the
bucket sets the pace; without one, this alone keeps a throttled table from being hammered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Aimd:
    """The in-flight limit of one read, and the lowest and highest it reached."""

    ceiling: int
    adaptive: bool = True
    limit: int = 0
    low: int = 0
    high: int = 0
    _clean: int = 0
    _cut_at: float = field(default=float("-inf"), repr=False)

    def __post_init__(self) -> None:
        self.limit = self.low = self.high = self.ceiling

    def throttled(self, sent_at: float, now: float | None = None) -> None:
        """A request sent at ``sent_at`` (monotonic) was throttled."""
        self._clean = 0
        if not self.adaptive or sent_at < self._cut_at:
            return
        self.limit = max(1, self.limit // 2)
        self.low = min(self.low, self.limit)
        self._cut_at = time.monotonic() if now is None else now

    def clean(self) -> None:
        """A request was answered in full."""
        self._clean += 1
        if self._clean >= self.limit and self.limit < self.ceiling:
            self.limit += 1
            self.high = max(self.high, self.limit)
            self._clean = 0
