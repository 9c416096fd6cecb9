"""Transparent huge pages off in featurepull's own processes: the command and the worker."""

from __future__ import annotations

import os


def turn_off() -> None:
    """Ask mimalloc, pyarrow's allocator, not to use transparent huge pages: each fresh one
    costs a page fault that zeroes 2 MiB and may compact memory (docs/configuration.md,
    "Huge pages"). mimalloc reads the variable when pyarrow loads and then turns them off for
    the process and its forks: call this first. A value already set is kept."""
    os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")
