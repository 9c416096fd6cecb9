"""Job orchestration: the Celery tasks, the Redis keys of a job, submission and finishing."""

from featurepull.tasks.jobs import JobRequest, create_job, finish_job, run_shard
from featurepull.tasks.store import JobMeta, JobStore, JobStoreError, RedisUnavailable, UnknownJob

__all__ = [
    "JobMeta",
    "JobRequest",
    "JobStore",
    "JobStoreError",
    "RedisUnavailable",
    "UnknownJob",
    "create_job",
    "finish_job",
    "run_shard",
]
