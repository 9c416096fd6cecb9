"""The settings tree: one typed model, loaded from defaults, ``FEATUREPULL_*`` environment
variables, an optional TOML file or Feast ``feature_store.yaml``, and explicit overrides.

Precedence, lowest first: defaults < environment < feature_store.yaml < TOML file < overrides
(the command line). Names and defaults follow Feast's ``DynamoDBOnlineStoreConfig`` where the
two overlap, so a Feast user's online-store block means the same thing here.
"""

from __future__ import annotations

import re
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from featurepull.config.budget import parse_budget

RetryMode = Literal["legacy", "standard", "adaptive"]
Transport = Literal["fast", "botocore"]
ReadMode = Literal["batch-get", "scan", "auto"]
# What a schedule's output template may name: filled in when the run starts (UTC).
OUTPUT_PLACEHOLDERS = ("name", "date", "datetime")
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
# A scorer's registered name (what a job may carry), and the Python function it names
# (what only the worker's own config may carry): "package.module:function".
SCORER_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
SCORER_PATH_PATTERN = rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}$"
# A task a job notifies when it ends: a dotted name, as Celery apps name their tasks. It is
# sent by name to another app's queue; featurepull's own and Celery's built-in tasks are
# refused, so a notification can never run anything in a featurepull worker.
NOTIFY_TASK_PATTERN = rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*$"
NOTIFY_QUEUE_PATTERN = r"^[A-Za-z0-9_.:-]+$"
RESERVED_TASK_PREFIXES = ("featurepull.", "celery.")


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
        default=10, ge=1, le=256,
        description="BatchGetItem requests in flight at once per process (Feast's name; with "
        "the botocore transport they are threads).",
    )
    consistent_reads: bool = Field(default=False, description="Strongly consistent reads.")
    max_pool_connections: int = Field(
        default=50, ge=1, le=1024,
        description="The boto3 client's HTTP connection pool size (DescribeTable, and reads "
        "with the botocore transport); raised to max_read_workers when smaller.",
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
    transport: Transport = Field(
        default="fast",
        description="How BatchGetItem is sent: fast (featurepull's own signed HTTP requests "
        "and JSON parsing, several times less CPU) or botocore (the boto3 client's "
        "batch_get_item, as a fallback).",
    )
    max_rcu_per_s: float | str | None = Field(
        default=None,
        description="Read budget for the table: RCU per second (e.g. 2000) or N% of its "
        "provisioned (or on-demand maximum) read capacity. Workers share it through Redis; "
        "unset means no budget (adaptive concurrency still backs off on throttling).",
    )
    table_budgets: dict[str, float | str] = Field(
        default_factory=dict,
        description="Operator ceilings by physical table name, in the same form; a job's "
        "own max_rcu_per_s can only lower them (the smaller of the two applies).",
    )
    adaptive_concurrency: bool = Field(
        default=True,
        description="Halve the requests in flight on throttling and add one back after a "
        "run of clean answers (AIMD); off keeps max_read_workers in flight throughout.",
    )
    read_mode: ReadMode = Field(
        default="auto",
        description="How keys are read: batch-get (BatchGetItem per key), scan (one "
        "parallel Scan of the table, joined to the keys) or auto (the cheaper by "
        "DescribeTable's counts, with guard rails); see docs/read-modes.md.",
    )
    scan_min_items: int = Field(
        default=100_000, ge=0,
        description="auto never scans a table DescribeTable says holds fewer items: the "
        "read units saved are too few to be worth a pass over the table.",
    )

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

    @field_validator("max_rcu_per_s", mode="before")
    @classmethod
    def _budget(cls, value: object) -> float | str | None:
        return parse_budget(value)

    @field_validator("table_budgets", mode="before")
    @classmethod
    def _ceilings(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        parsed = {}
        for table, budget in value.items():
            try:
                parsed[table] = parse_budget(budget)
            except ValueError as exc:
                raise ValueError(f"table {table!r}: {exc}") from None
            if parsed[table] is None:
                raise ValueError(f"table {table!r}: a ceiling must be set; remove the entry "
                                 "for no ceiling")
        return parsed

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
        """Connections the boto3 client keeps: never fewer than the reads in flight."""
        return max(self.max_pool_connections, self.max_read_workers)

    def table_name(self, project: str, table_name: str) -> str:
        """The physical table name of a Feast feature view."""
        return self.table_name_template.format(project=project, table_name=table_name)


class S3Settings(BaseModel):
    """Where ``s3://`` entity files and outputs live (defaults: boto3's own chain)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    endpoint_url: str | None = Field(default=None, description="S3 endpoint URL (local S3).")
    region: str | None = Field(default=None, description="S3 region.")


# jobs.max_shard_size while neither it nor jobs.shard_size is set: 4 x the default shard.
DEFAULT_MAX_SHARD_SIZE = 200_000


class JobSettings(BaseModel):
    """How jobs are cut into shards and how long their data lives in Redis."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    shard_size: int = Field(
        default=50_000, ge=100, le=2_000_000,
        description="Entities per shard task; with neither this nor max_shard_size set, the "
        "smallest shard of a job cut for its fleet (see max_shard_size). Set alone, every "
        "shard's size.",
    )
    max_shard_size: int | None = Field(
        default=None, ge=100, le=2_000_000,
        description="Largest shard of a job cut for its fleet: a job writing an output file "
        "(not a dataset, no scorer, no read budget) gets shards as large as leave at least "
        "4 for each pool process that the workers on its queue recorded in Redis, in "
        "multiples of shard_size, at most this. Unset: 200000 while shard_size is unset "
        "too; an explicit shard_size alone keeps every shard that size.",
    )
    max_entities: int = Field(
        default=50_000_000, ge=1,
        description="Largest job accepted at submit, in entity rows; a Parquet file is "
        "checked from its footer, before a column is decoded."
    )
    max_entities_without_output: int = Field(
        default=2_000_000, ge=1,
        description="Largest job accepted without an output: its rows are kept in Redis "
        "(~45 bytes each) for `featurepull fetch`; bigger jobs must name an output.",
    )
    max_entity_file_bytes: int = Field(
        default=2 * 1024**3, ge=1,
        description="Largest entity file a job may name (a path, an s3:// object or a "
        "redis-key: value), in bytes; its size is checked before it is read.",
    )
    max_request_bytes: int = Field(
        default=256 * 1024, ge=1024,
        description="Largest job request (its JSON: table, features, keys, references), in "
        "bytes; a featurepull.submit_job message is checked before it is validated.",
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
    allowed_inputs: list[str] | None = Field(
        default=None,
        description="Where a featurepull.submit_job message may name its entities: local "
        "directories and s3://bucket/prefix/ prefixes (unset: anywhere the worker can read).",
    )
    allowed_outputs: list[str] | None = Field(
        default=None,
        description="Where a job may write its output: local directories and "
        "s3://bucket/prefix/ prefixes (unset: anywhere the worker can write; [] : nowhere, "
        "rows stay in Redis). The worker's own schedules may always write their outputs.",
    )
    allowed_endpoints: list[str] | None = Field(
        default=None,
        description="DynamoDB endpoint URLs a job may name besides the worker's own "
        "(unset: any URL; [] : only the worker's own).",
    )
    entity_key_prefix: str = Field(
        default="featurepull:input:",
        description="The Redis key prefix a featurepull.submit_job message's redis-key: "
        "entities must start with ('' allows any key).",
    )
    max_scan_keys: int = Field(
        default=2_000_000, ge=0,
        description="Largest job, in unique keys, read with a Scan on the fleet: each scan "
        "task holds every key of its job (~150 bytes each for Feast keys, so ~300 MB at the "
        "default); read_mode auto reads a larger job with BatchGetItem, and scan refuses it.",
    )
    scan_task_bytes: int = Field(
        default=8 * 1024**2, ge=1,
        description="Table bytes a scan job's scan task reads at least (its share of the "
        "Scan's segments), and 100 per unique key of the job: each task first loads every "
        "key of the job. A job has at most one scan task per shard.",
    )
    redelivery_check_s: int = Field(
        default=10, ge=1, le=600,
        description="How often a worker looks for shards whose worker died (past "
        "visibility_timeout_s) and puts them back on the queue.",
    )
    submitter_timeout_s: float = Field(
        default=60.0, ge=1,
        description="A job still being submitted whose submitting process showed no sign of "
        "life for this long (killed, or its machine died) is failed by the workers' "
        "watchdog; the process shows one every third of it.",
    )

    @field_validator("allowed_inputs", "allowed_outputs")
    @classmethod
    def _locations(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if entry.startswith("s3://"):
                if not entry[len("s3://"):].split("/")[0]:
                    raise ValueError(f"{entry!r} names no bucket; write s3://bucket/prefix/")
            elif not entry.startswith("/"):
                raise ValueError(f"{entry!r} is neither an absolute directory nor an "
                                 "s3://bucket/prefix/")
        return value

    @field_validator("allowed_endpoints")
    @classmethod
    def _endpoints(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if not re.match(r"^https?://[^/?#]+", entry):
                raise ValueError(f"{entry!r} is not an http:// or https:// URL")
        return value

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
        if self.max_shard_size is not None and self.max_shard_size < self.shard_size:
            raise ValueError(
                f"max_shard_size ({self.max_shard_size}) must not be below shard_size "
                f"({self.shard_size})"
            )
        return self

    @property
    def largest_shard(self) -> int:
        """The largest shard a job may be cut into for its fleet: max_shard_size; unset,
        DEFAULT_MAX_SHARD_SIZE, or shard_size when that was set (a user's shard size is
        not overridden by a default). A copy made from a dump of these settings counts
        every field as set: it keeps shard_size, as before fleet-sized shards."""
        if self.max_shard_size is not None:
            return self.max_shard_size
        if "shard_size" in self.model_fields_set:
            return self.shard_size
        return DEFAULT_MAX_SHARD_SIZE


# DynamoDB settings a job may choose for itself; credentials and pools stay the worker's.
JOB_DYNAMO_OVERRIDES = frozenset({"region", "endpoint_url", "table_name_template", "batch_size",
                                  "max_read_workers", "consistent_reads", "retry_deadline_s",
                                  "max_rcu_per_s", "read_mode"})
READ_MODES = ("batch-get", "scan", "auto")


class Notify(BaseModel):
    """The Celery task a job sends, by name, when it ends: ``{"task", "queue"}``."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200, pattern=NOTIFY_TASK_PATTERN)
    queue: str = Field(default="celery", min_length=1, max_length=200,
                       pattern=NOTIFY_QUEUE_PATTERN)

    @field_validator("task")
    @classmethod
    def _not_ours(cls, value: str) -> str:
        if value.startswith(RESERVED_TASK_PREFIXES) or value in ("featurepull", "celery"):
            raise ValueError(f"{value!r} is a featurepull or Celery task; notify names a task "
                             "of your own app (e.g. 'scoring.features_ready')")
        return value


class RequestFields(BaseModel):
    """What a pull reads — the fields a job request and a schedule share."""

    # Its validator is built where one is validated (a pull): a submit validates only its
    # subclasses (JobRequest; ScheduleSettings, within Settings), which build their own.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    features: list[str] = Field(default_factory=list)
    entities: str = Field(min_length=1)
    overwrite: bool = False
    layout: Literal["feast", "plain"] = "feast"
    join_keys: list[str] = Field(default_factory=list)
    join_key_types: dict[str, str] = Field(default_factory=dict)
    event_ts_attribute: str | None = "event_ts"
    project: str | None = None
    dynamodb: dict[str, Any] = Field(default_factory=dict)
    notify: Notify | None = None
    # A requested feature no found item holds is refused (a typo would be an all-null
    # column); True reads it as null instead (featurepull.dynamo.features).
    allow_missing_features: bool = False
    feature_store_yaml: str | None = None
    feature_service: str | None = None
    full_feature_names: bool = False
    respect_ttl: bool = False
    # Without Feast references: the table (feature view or table name) of the features.
    # With them (``view:feature`` or ``feature_service``): none; the registry of
    # ``feature_store_yaml`` names each view's table and keys. Declared after the fields
    # it depends on: pydantic validates fields in order.
    table: str = Field(default="", validate_default=True)

    @field_validator("table")
    @classmethod
    def _table_unless_references(cls, value: str, info: ValidationInfo) -> str:
        if not value and not uses_registry(info.data.get("features") or [],
                                           info.data.get("feature_service")):
            raise PydanticCustomError("missing", "Field required")
        return value

    @field_validator("features")
    @classmethod
    def _distinct_features(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not all(value):
            raise ValueError("feature names must be non-empty and distinct")
        return value

    @model_validator(mode="after")
    def _one_way_to_name_features(self) -> RequestFields:
        problem = reference_problem(self.table, self.features, self.feature_service,
                                    self.join_keys or self.join_key_types, self.layout,
                                    self.full_feature_names or self.respect_ttl)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def uses_registry(self) -> bool:
        """Whether features are Feast references read through the registry."""
        return uses_registry(self.features, self.feature_service)

    @field_validator("dynamodb")
    @classmethod
    def _safe_overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - JOB_DYNAMO_OVERRIDES)
        if unknown:
            raise ValueError(f"a job may not set {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(JOB_DYNAMO_OVERRIDES))}")
        if "read_mode" in value and value["read_mode"] not in READ_MODES:
            raise ValueError(f"read_mode {value['read_mode']!r} is not one of "
                             f"{', '.join(READ_MODES)} (auto: the cheaper of the two)")
        if "max_rcu_per_s" in value:  # refused with the request, not when a shard runs
            try:
                parse_budget(value["max_rcu_per_s"])
            except ValueError as exc:
                raise ValueError(f"max_rcu_per_s {exc}") from None
        return value


def uses_registry(features: list[str], feature_service: str | None) -> bool:
    """Feast references (``view:feature``) or a feature service: read through the registry."""
    return feature_service is not None or any(":" in name for name in features)


def reference_problem(table: str, features: list[str], feature_service: str | None,
                      join_keys: object, layout: str, registry_flags: bool) -> str | None:
    """Why a request's way of naming features does not hold together (None: it does).
    ``registry_flags``: full_feature_names or respect_ttl is set."""
    if not uses_registry(features, feature_service):
        if registry_flags:
            return ("full_feature_names and respect_ttl apply to Feast references; name "
                    "features as view:feature (or a feature_service)")
        if not table or not features:
            return ("name a table and its features, or Feast references view:feature "
                    "(or a feature_service) with a feature_store_yaml")
        return None
    if feature_service is not None and features:
        return "name either features (view:feature,...) or a feature_service, not both"
    plain = [name for name in features if ":" not in name]
    if plain:
        return (f"feature {plain[0]!r} is not a Feast reference view:feature; with "
                "references, name every feature so")
    if table or join_keys or layout != "feast":
        return ("with Feast references the registry names each view's table, join keys "
                "and their types: leave out table, join_keys, join_key_types and layout")
    return None


class ScheduleSettings(RequestFields):
    """A pull that Celery beat starts on a cron expression or an interval (``[[schedules]]``).

    The fields after the timing are those of a job request; ``output`` is a template with
    ``{name}``, ``{date}`` and ``{datetime}``. Cron fields are checked against Celery's
    crontab parser where the schedule is used (``featurepull.tasks.schedules``).
    """

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    cron: str | None = None
    every_s: float | None = Field(default=None, ge=1)
    output: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleSettings:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError(f"schedule {self.name!r}: set exactly one of cron (e.g. "
                             "'0 2 * * *') and every_s (seconds)")
        if self.cron is not None and len(self.cron.split()) != len(CRON_FIELDS):
            raise ValueError(f"schedule {self.name!r}: cron {self.cron!r} must have 5 fields: "
                             f"{' '.join(CRON_FIELDS)}")
        return self

    @model_validator(mode="after")
    def _output_template(self) -> ScheduleSettings:
        allowed = ", ".join("{" + name + "}" for name in OUTPUT_PLACEHOLDERS)
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.output) if f is not None]
        except ValueError as exc:
            raise ValueError(f"schedule {self.name!r}: output {self.output!r} is not a valid "
                             f"template ({exc}); write literal braces as {{{{ }}}}") from None
        unknown = sorted({f or "{}" for f in fields if f not in OUTPUT_PLACEHOLDERS})
        if unknown:
            raise ValueError(f"schedule {self.name!r}: output {self.output!r} uses unknown "
                             f"placeholders {', '.join(unknown)}; allowed: {allowed}")
        return self


class ScorerSettings(BaseModel):
    """A scoring function jobs may name (``[[scorers]]``): ``name`` is what a job carries,
    ``path`` (``package.module:function``) is imported by the workers, never sent by a job."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=SCORER_NAME_PATTERN)
    path: str = Field(min_length=1)

    @field_validator("path")
    @classmethod
    def _module_colon_function(cls, value: str) -> str:
        if not re.fullmatch(SCORER_PATH_PATTERN, value):
            raise ValueError("must be 'package.module:function' (dotted module path, a colon, "
                             "then the function's name), e.g. 'myteam.scoring:churn_risk'")
        return value


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
    join_key_name_length: Literal["bytes", "chars"] | None = Field(
        default=None,
        description="How serialization version 3 packs the length of a non-ASCII join-key "
        "name: bytes (UTF-8 bytes, as recent Feast writes) or chars (characters, as older "
        "Feast wrote). Unset: a non-ASCII join-key name is refused; ASCII names need nothing.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis broker and job store."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="Worker log lines: json, console, or auto (console on a terminal, else "
        "json). Secrets are masked in both.",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="A worker serves Prometheus /metrics on this port (unset: no metrics).",
    )
    dynamodb: DynamoSettings = Field(default_factory=DynamoSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    schedules: list[ScheduleSettings] = Field(
        default_factory=list,
        description="Pulls that `featurepull beat` starts on a cron or an interval "
        "(docs/schedules.md).",
    )
    scorers: list[ScorerSettings] = Field(
        default_factory=list,
        description="Scoring functions a job may name: name and package.module:function "
        "path, imported by each worker at start (docs/scoring.md).",
    )

    @field_validator("schedules", "scorers")
    @classmethod
    def _unique_names(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        names = [entry.name for entry in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            kind = str(info.field_name).removesuffix("s")
            raise ValueError(f"{kind} names must be unique; repeated: {', '.join(repeated)}")
        return value

    @field_validator("entity_key_serialization_version", mode="before")
    @classmethod
    def _version_from_text(cls, value: Any) -> Any:
        # An environment variable is text, and a Literal of ints takes no text: "3" from
        # FEATUREPULL_ENTITY_KEY_SERIALIZATION_VERSION would be refused as "not 2 or 3".
        if isinstance(value, str) and value.strip() in ("2", "3"):
            return int(value)
        return value
