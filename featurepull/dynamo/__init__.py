"""The read engine: a per-process client, the BatchReader fan-out, table layouts (Feast,
plain), Feast key hashing and value decoding. No Celery, no Redis: usable from a notebook."""

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
