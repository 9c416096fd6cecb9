"""featurepull: the latest features of millions of entities from DynamoDB, in input order.

The public names below are imported on first use, not with the package: ``featurepull pull``
and a notebook that only reads never load the job machinery (Celery, Redis).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featurepull.errors import FeaturepullError, InputError, RunFailed

if TYPE_CHECKING:
    from featurepull.client import Job, JobFailed, JobRefused, JobStatus, submit
    from featurepull.config import DynamoSettings, Settings, load_settings
    from featurepull.dynamo import (
        BatchReader,
        FeastLayout,
        PlainLayout,
        ReadError,
        ReadResult,
        ReadStats,
        RetryDeadlineExceeded,
        ScanResult,
        SegmentScanner,
        UnknownFeatureError,
    )
    from featurepull.pull import PullRequest, pull

# Public name -> the module that defines it.
_LAZY = {
    **dict.fromkeys(("Job", "JobFailed", "JobRefused", "JobStatus", "submit"),
                    "featurepull.client"),
    **dict.fromkeys(("DynamoSettings", "Settings", "load_settings"), "featurepull.config"),
    **dict.fromkeys(("BatchReader", "FeastLayout", "PlainLayout", "ReadError", "ReadResult",
                     "ReadStats", "RetryDeadlineExceeded", "ScanResult", "SegmentScanner",
                     "UnknownFeatureError"),
                    "featurepull.dynamo"),
    **dict.fromkeys(("PullRequest", "pull"), "featurepull.pull"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featurepull' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BatchReader",
    "DynamoSettings",
    "FeastLayout",
    "FeaturepullError",
    "InputError",
    "Job",
    "JobFailed",
    "JobRefused",
    "JobStatus",
    "PlainLayout",
    "PullRequest",
    "ReadError",
    "ReadResult",
    "ReadStats",
    "RetryDeadlineExceeded",
    "RunFailed",
    "ScanResult",
    "SegmentScanner",
    "Settings",
    "UnknownFeatureError",
    "load_settings",
    "pull",
    "submit",
]
