"""Job orchestration: the Celery tasks, the Redis keys of a job, submission and finishing.

Names are imported on first use: ``featurepull.tasks.scoring``, which ``featurepull pull``
uses, must not load Redis with the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from featurepull.tasks.create import create_job
    from featurepull.tasks.finish import finish_job
    from featurepull.tasks.requests import JobRequest
    from featurepull.tasks.shards import run_shard
    from featurepull.tasks.store import (
        JobMeta,
        JobState,
        JobStore,
        JobStoreError,
        RedisUnavailable,
        UnknownJob,
    )

_LAZY = {
    "JobRequest": "featurepull.tasks.requests",
    "create_job": "featurepull.tasks.create",
    "finish_job": "featurepull.tasks.finish",
    "run_shard": "featurepull.tasks.shards",
    **dict.fromkeys(("JobMeta", "JobState", "JobStore", "JobStoreError", "RedisUnavailable",
                     "UnknownJob"), "featurepull.tasks.store"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featurepull.tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "JobMeta",
    "JobRequest",
    "JobState",
    "JobStore",
    "JobStoreError",
    "RedisUnavailable",
    "UnknownJob",
    "create_job",
    "finish_job",
    "run_shard",
]
