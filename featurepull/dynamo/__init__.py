"""The read engine: a per-process client, the BatchReader fan-out, table layouts (Feast,
plain), Feast key hashing and value decoding. No Celery, no Redis: usable from a notebook.

Names are imported on first use: a submit plans its read (the reader, the layouts) but
never scans, and `from featurepull.dynamo import ReadStats` needs no reader."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from featurepull.dynamo.client import build_client, process_client
    from featurepull.dynamo.errors import (
        EntityKeyError,
        PermanentReadError,
        ReadError,
        RetryDeadlineExceeded,
        TableError,
        UnknownFeatureError,
    )
    from featurepull.dynamo.feast_keys import EntityKeyEncoder
    from featurepull.dynamo.feast_values import decode_value
    from featurepull.dynamo.layouts import FeastLayout, Layout, PlainLayout, Row
    from featurepull.dynamo.reader import BatchReader, ReadResult
    from featurepull.dynamo.retry import Backoff
    from featurepull.dynamo.scan import ScanResult, SegmentScanner
    from featurepull.dynamo.stats import ReadStats

_LAZY = {
    **dict.fromkeys(("build_client", "process_client"), "featurepull.dynamo.client"),
    **dict.fromkeys(("EntityKeyError", "PermanentReadError", "ReadError",
                     "RetryDeadlineExceeded", "TableError", "UnknownFeatureError"),
                    "featurepull.dynamo.errors"),
    "EntityKeyEncoder": "featurepull.dynamo.feast_keys",
    "decode_value": "featurepull.dynamo.feast_values",
    **dict.fromkeys(("FeastLayout", "Layout", "PlainLayout", "Row"),
                    "featurepull.dynamo.layouts"),
    **dict.fromkeys(("BatchReader", "ReadResult"), "featurepull.dynamo.reader"),
    "Backoff": "featurepull.dynamo.retry",
    **dict.fromkeys(("ScanResult", "SegmentScanner"), "featurepull.dynamo.scan"),
    "ReadStats": "featurepull.dynamo.stats",
}

__all__ = [
    "Backoff",
    "BatchReader",
    "EntityKeyEncoder",
    "EntityKeyError",
    "FeastLayout",
    "Layout",
    "PermanentReadError",
    "PlainLayout",
    "ReadError",
    "ReadResult",
    "ReadStats",
    "RetryDeadlineExceeded",
    "Row",
    "ScanResult",
    "SegmentScanner",
    "TableError",
    "UnknownFeatureError",
    "build_client",
    "decode_value",
    "process_client",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featurepull.dynamo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
