"""featurepull: the latest features of millions of entities from DynamoDB, in input order."""

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
    UnknownFeatureError,
)
from featurepull.pull import PullRequest, pull

__all__ = [
    "BatchReader",
    "DynamoSettings",
    "FeastLayout",
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
    "Settings",
    "UnknownFeatureError",
    "load_settings",
    "pull",
    "submit",
]
