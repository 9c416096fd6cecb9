"""The settings tree: one typed model, loaded from defaults, ``FEATUREPULL_*`` environment
variables, an optional TOML file or Feast ``feature_store.yaml``, and explicit overrides.

Precedence, lowest first: defaults < environment < feature_store.yaml < TOML file < overrides
(the command line). Names and defaults follow Feast's ``DynamoDBOnlineStoreConfig`` where the
two overlap, so a Feast user's online-store block means the same thing here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RetryMode = Literal["legacy", "standard", "adaptive"]


class DynamoSettings(BaseModel):
    """How to reach DynamoDB and how hard to read it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    region: str | None = Field(
        default=None, description="AWS region; unset means boto3's own chain (AWS_REGION, ...)."
    )
    endpoint_url: str | None = Field(
        default=None, description="Endpoint URL, e.g. a local DynamoDB or a VPC endpoint."
    )
    table_name_template: str = Field(
        default="{project}.{table_name}", description="Feast table naming: {project}, {table_name}."
    )
    batch_size: int = Field(
        default=100, ge=1, le=100, description="Keys per BatchGetItem request (DynamoDB max 100)."
    )
    max_read_workers: int = Field(
        default=10, ge=1, le=256, description="Threads issuing BatchGetItem requests."
    )
    consistent_reads: bool = Field(default=False, description="Strongly consistent reads.")
    max_pool_connections: int = Field(
        default=50, ge=1, le=1024,
        description="HTTP connection pool size; raised to max_read_workers when smaller.",
    )
    session_based_auth: bool = Field(
        default=False, description="Build the client from a boto3 Session (as Feast does)."
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to connect.")
    read_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a response.")
    retry_mode: RetryMode = Field(
        default="standard", description="botocore's retry mode for the requests it retries."
    )
    total_max_retry_attempts: int = Field(
        default=1, ge=1, le=20,
        description="botocore attempts per request; 1 leaves every retry to featurepull's "
        "own policy, which sees and counts each throttle and is bounded by retry_deadline_s.",
    )
    retry_deadline_s: float = Field(
        default=120.0, gt=0,
        description="How long a key may stay unanswered (UnprocessedKeys, throttling, 5xx, "
        "dropped connections) before the read fails.",
    )
    retry_base_delay_s: float = Field(
        default=0.05, gt=0, description="First backoff delay; doubles per attempt (full jitter)."
    )
    retry_max_delay_s: float = Field(default=5.0, gt=0, description="Cap on one backoff delay.")

    @field_validator("table_name_template")
    @classmethod
    def _template_names_table(cls, value: str) -> str:
        if "{table_name}" not in value:
            raise ValueError("must contain {table_name} (and may contain {project})")
        try:
            value.format(project="p", table_name="t")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"only the placeholders {{project}} and {{table_name}} are allowed ({exc})"
            ) from exc
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> DynamoSettings:
        if self.retry_base_delay_s > self.retry_max_delay_s:
            raise ValueError(
                f"retry_base_delay_s ({self.retry_base_delay_s}) must not exceed "
                f"retry_max_delay_s ({self.retry_max_delay_s})"
            )
        return self

    @property
    def pool_size(self) -> int:
        """Connections the client keeps: never fewer than the threads sharing it."""
        return max(self.max_pool_connections, self.max_read_workers)

    def table_name(self, project: str, table_name: str) -> str:
        """The physical table name of a Feast feature view."""
        return self.table_name_template.format(project=project, table_name=table_name)


class S3Settings(BaseModel):
    """Where ``s3://`` entity files and outputs live (defaults: boto3's own chain)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    endpoint_url: str | None = Field(default=None, description="S3 endpoint URL (local S3).")
    region: str | None = Field(default=None, description="S3 region.")


class JobSettings(BaseModel):
    """How jobs are cut into shards and how long their data lives in Redis."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    shard_size: int = Field(
        default=50_000, ge=100, le=2_000_000, description="Entities per shard task."
    )
    max_entities: int = Field(
        default=50_000_000, ge=1, description="Largest job accepted at submit."
    )
    ttl_s: int = Field(
        default=86_400, ge=60, description="Seconds a job's keys, rows and summary live in Redis."
    )
    shard_soft_time_limit_s: float = Field(
        default=900.0, gt=0, description="A shard past this is failed with a clear error."
    )
    shard_time_limit_s: float = Field(
        default=1_200.0, gt=0, description="A shard past this is killed (hard limit)."
    )
    visibility_timeout_s: float = Field(
        default=3_600.0, gt=0,
        description="Redis redelivers an unacknowledged shard after this; must exceed "
        "shard_time_limit_s.",
    )
    queue: str = Field(default="featurepull", min_length=1, description="Celery queue name.")
    redelivery_check_s: int = Field(
        default=10, ge=1, le=600,
        description="How often a worker looks for shards whose worker died (past "
        "visibility_timeout_s) and puts them back on the queue.",
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> JobSettings:
        if self.shard_soft_time_limit_s >= self.shard_time_limit_s:
            raise ValueError(
                f"shard_soft_time_limit_s ({self.shard_soft_time_limit_s:g}) must be below "
                f"shard_time_limit_s ({self.shard_time_limit_s:g})"
            )
        if self.visibility_timeout_s <= self.shard_time_limit_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s:g}) must exceed "
                f"shard_time_limit_s ({self.shard_time_limit_s:g}), or Redis redelivers "
                "shards that are still running"
            )
        return self


class Settings(BaseSettings):
    """Everything featurepull can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="FEATUREPULL_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    project: str = Field(default="default", min_length=1, description="Feast project name.")
    entity_key_serialization_version: Literal[2, 3] = Field(
        default=3, description="Feast entity key serialization version (3 is Feast's default)."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis broker and job store."
    )
    dynamodb: DynamoSettings = Field(default_factory=DynamoSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    jobs: JobSettings = Field(default_factory=JobSettings)
