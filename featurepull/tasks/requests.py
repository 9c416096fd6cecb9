"""A job request: its model, and the checks made on it before anything is read.

``featurepull.submit_job`` parses its argument with :func:`parse_job_request`; the submit path
(``featurepull.tasks.create``) refuses a request over the size or row limits here.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError, model_validator

from featurepull._recently_used import RecentlyUsed
from featurepull.config import ConfigError, RequestFields, Settings
from featurepull.config.errors import request_error_text
from featurepull.config.loading import merge
from featurepull.config.settings import SCORER_NAME_PATTERN
from featurepull.errors import InputError
from featurepull.tasks.scoring import check_with_features


class JobRequest(RequestFields):
    """What a job reads: JSON-safe, the public argument of ``featurepull.submit_job``.

    ``entities`` is a reference, never the entities themselves: a local path, an ``s3://``
    URI, or ``redis-key:NAME`` for a Redis key holding a Parquet file's bytes. ``scorer``
    names a scorer registered in the workers' settings — a name, never code or an import
    path (see ``featurepull.tasks.scoring``); ``with_features`` keeps the features beside
    its scores. ``notify`` names a task of another Celery app that gets the job's summary
    when it ends (``featurepull.tasks.notify``).
    """

    output: str | None = None
    scorer: str | None = Field(default=None, min_length=1, max_length=100,
                               pattern=SCORER_NAME_PATTERN)
    with_features: bool = False

    @model_validator(mode="after")
    def _features_need_a_scorer(self) -> JobRequest:
        check_with_features(self.scorer, self.with_features, ("with_features", '"scorer"'))
        return self


def check_notify(request: RequestFields, settings: Settings) -> None:
    """Refuse a notification that would land on featurepull's own queue, where no worker
    runs it (the task name itself is checked by the request model)."""
    if request.notify is not None and request.notify.queue == settings.jobs.queue:
        raise ConfigError(f"notify.queue {request.notify.queue!r} is featurepull's own job "
                          "queue; name the queue your app's worker consumes (Celery's default "
                          "is 'celery')")


# Job settings as built, by what they are built from: the worker's settings, the job's
# project and DynamoDB choices, and the FEATUREPULL_ environment, which Settings() reads
# too (pydantic-settings; ~1 ms quiet, 2-4 ms at load, once per shard). Jobs of different
# settings never share one; a process keeps the few most recent.
_JOB_SETTINGS_KEPT = 8
_ENV_PREFIX = str(Settings.model_config.get("env_prefix", "")).upper()
_job_settings: RecentlyUsed[tuple[str, str, str, tuple[tuple[str, str], ...]], Settings] = (
    RecentlyUsed(_JOB_SETTINGS_KEPT))
# The worker's settings in that key, serialized once per settings object (a worker's lives as
# long as it does; settings are not changed in place once in use): by id, while it lives.
_settings_json: dict[int, tuple[weakref.ref[Settings], str]] = {}


def _serialized(settings: Settings) -> str:
    ident = id(settings)
    kept = _settings_json.get(ident)
    if kept is not None and kept[0]() is settings:
        return kept[1]
    text = settings.model_dump_json()
    _settings_json[ident] = (weakref.ref(settings, lambda _: _settings_json.pop(ident, None)),
                             text)
    return text


def job_settings(settings: Settings, request: JobRequest) -> Settings:
    """The worker's settings with the job's own project and DynamoDB choices on top (a copy
    of its own for each caller)."""
    key = (_serialized(settings), repr(request.project),
           json.dumps(request.dynamodb, sort_keys=True, default=repr),
           tuple(sorted((name, value) for name, value in os.environ.items()
                        if name.upper().startswith(_ENV_PREFIX))))

    def build() -> Settings:
        values = merge(settings.model_dump(), {"project": request.project,
                                               "dynamodb": request.dynamodb})
        return Settings(**values)

    return _job_settings.get(key, build).model_copy(deep=True)


class InvalidJobRequest(InputError, ValueError):
    """A job request that is not a JSON object or misses or mistypes a field; the message
    lists each one (a plain message, so it survives Celery's JSON result backend)."""


def parse_job_request(request: Any) -> JobRequest:
    """A ``featurepull.submit_job`` argument as a JobRequest, or InvalidJobRequest."""
    if not isinstance(request, Mapping):
        raise InvalidJobRequest(
            f"the featurepull.submit_job request is a {type(request).__name__}, not a JSON "
            'object; send {"table": ..., "features": [...], "entities": ...}')
    try:
        return JobRequest(**request)
    except ValidationError as exc:
        raise InvalidJobRequest(request_error_text(
            exc, "featurepull.submit_job request (see the task API in docs/fleet.md)")) from None


class OutputRequired(InputError, ValueError):
    """A job without an output (rows kept in Redis) over jobs.max_entities_without_output."""


def check_rows_kept(request: JobRequest, rows: int, settings: Settings) -> None:
    """Refuse a job whose rows would be kept in Redis (no output) when it is over the limit:
    Redis holds ~45 bytes per row until the job's TTL; an output holds them instead."""
    limit = settings.jobs.max_entities_without_output
    if request.output or rows <= limit:
        return
    raise OutputRequired(
        f"this job has {rows:,} entities and no output, so its rows would be kept in Redis; "
        f"jobs without an output are limited to {limit:,} entities "
        "(jobs.max_entities_without_output). Give an output: --output FILE (.parquet, .csv, "
        ".jsonl) or --output DIR/ (a Parquet dataset; a path or s3:// prefix ending in /)")


class RequestTooLarge(InputError, ValueError):
    """A job request over jobs.max_request_bytes (refused before it is validated)."""


def check_request_size(request: Mapping[str, Any], limit: int) -> None:
    """Refuse a job request whose JSON is over ``limit`` bytes (jobs.max_request_bytes).

    Entities travel by reference, so a request is a few hundred bytes; a bigger one is a
    mistake (entities inlined) or abuse, and would be stored in Redis and read by every shard.
    """
    size = len(json.dumps(request, default=str).encode())
    if size <= limit:
        return
    largest = ""
    if isinstance(request, Mapping) and request:
        name = max(request, key=lambda field: len(json.dumps(request[field], default=str)))
        largest = f" (largest field: {name!r})"
    raise RequestTooLarge(
        f"the job request is {size:,} bytes of JSON{largest}; this deployment accepts at "
        f"most {limit:,} (jobs.max_request_bytes). Entities go by reference (a path, s3:// "
        "or redis-key:), never inline; split a long feature list over several jobs, or "
        "raise the limit")
