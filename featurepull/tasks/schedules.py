"""Scheduled pulls: each ``[[schedules]]`` entry becomes a Celery beat entry and, on each
tick, an ordinary job — unless the job of its previous run is still going.

Beat sends ``featurepull.run_schedule`` with the schedule's name only; the worker finds the
schedule in its own settings, renders the output template, and starts the job through the
same path as ``featurepull.submit_job`` (``create_job``, then one message per shard).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from celery.schedules import crontab
from celery.schedules import schedule as interval
from celery.utils.log import get_task_logger
from pydantic import ValidationError

from featurepull.config import ConfigError, ScheduleSettings, Settings
from featurepull.config.loading import with_yaml_key_encoding
from featurepull.config.settings import CRON_FIELDS
from featurepull.tasks.create import create_job
from featurepull.tasks.requests import JobRequest, check_notify
from featurepull.tasks.store import TERMINAL, JobMeta, JobStore

RUN_SCHEDULE_TASK = "featurepull.run_schedule"
# Long enough to cover create_job on a large entity file (the lock spans check and start);
# short enough that a worker dying while it holds the lock delays the schedule only briefly.
START_LOCK_TTL_S = 300
_CRON_ALLOWED = {"minute": "0-59", "hour": "0-23", "day_of_month": "1-31",
                 "month_of_year": "1-12", "day_of_week": "0-6 (0 is Sunday) or sun-sat"}

logger = get_task_logger(__name__)


def celery_schedule(schedule: ScheduleSettings) -> crontab | interval:
    """Celery's schedule for a configured one: a crontab (UTC) or a fixed interval.

    Raises ConfigError naming the schedule and the cron field Celery's parser refused.
    """
    if schedule.every_s is not None:
        return interval(timedelta(seconds=schedule.every_s))
    cron = schedule.cron or ""
    fields = dict(zip(CRON_FIELDS, cron.split(), strict=True))
    for field, value in fields.items():
        try:
            crontab(**{field: value})
        except ValueError as exc:
            raise ConfigError(
                f"schedule {schedule.name!r}: cron {cron!r}: {field} {value!r} is not valid "
                f"({exc}); allowed: {_CRON_ALLOWED[field]}, *, */N, A-B, A-B/N, A,B"
            ) from None
    return crontab(**fields)


def render_output(template: str, name: str, now: datetime) -> str:
    """A schedule's output for a run at ``now``: ``{date}`` is YYYY-MM-DD and ``{datetime}``
    YYYYMMDDTHHMMSSZ, both in UTC."""
    utc = now.astimezone(UTC)
    return template.format(name=name, date=utc.strftime("%Y-%m-%d"),
                           datetime=utc.strftime("%Y%m%dT%H%M%SZ"))


def schedule_request(schedule: ScheduleSettings, now: datetime) -> JobRequest:
    """The job request of one run of ``schedule`` at ``now``."""
    fields = schedule.model_dump(exclude={"name", "cron", "every_s", "output"})
    output = render_output(schedule.output, schedule.name, now)
    try:
        return JobRequest(**fields, output=output)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in exc.errors(include_url=False))
        raise ConfigError(f"schedule {schedule.name!r}: {problems}") from None


def beat_entry(schedule: ScheduleSettings, queue: str) -> dict[str, Any]:
    """A Celery beat entry that sends the schedule's name, nothing else, to ``queue``."""
    options: dict[str, Any] = {"queue": queue}
    if schedule.every_s is not None:
        # A tick that waited a whole interval (workers down) is dropped: the next one
        # covers it, so a backlog of ticks never turns into back-to-back runs.
        options["expires"] = schedule.every_s
    return {"task": RUN_SCHEDULE_TASK, "args": [schedule.name],
            "schedule": celery_schedule(schedule), "options": options}


def check_schedules(settings: Settings) -> None:
    """Refuse at startup any schedule beat could not time or a worker could not start."""
    for schedule in settings.schedules:
        celery_schedule(schedule)
        schedule_request(schedule, datetime.now(UTC))
        try:
            check_notify(schedule, settings)
        except ConfigError as exc:
            raise ConfigError(f"schedule {schedule.name!r}: {exc}") from None


def find_schedule(settings: Settings, name: str) -> ScheduleSettings:
    """The schedule called ``name`` in these settings."""
    for schedule in settings.schedules:
        if schedule.name == name:
            return schedule
    known = ", ".join(s.name for s in settings.schedules) or "none"
    raise ConfigError(f"schedule {name!r} is not in this worker's settings (it has: {known}); "
                      "give beat and the workers the same config file (FEATUREPULL_CONFIG)")


def _skipped(name: str, running_job: str | None, reason: str) -> dict[str, Any]:
    logger.warning("schedule_skipped schedule=%s running_job=%s reason=%s",
                   name, running_job, reason)
    return {"schedule": name, "skipped": True, "running_job": running_job, "reason": reason}


def start_scheduled_job(name: str, settings: Settings, store: JobStore, owner: str,
                        enqueue: Callable[[JobMeta], None],
                        now: datetime | None = None) -> dict[str, Any]:
    """Start one run of schedule ``name`` as a job, or skip it while the job of its previous
    run is not finished. A lock makes check-and-start atomic across racing ticks."""
    schedule = find_schedule(settings, name)
    if not store.lock_schedule(name, owner, START_LOCK_TTL_S):
        return _skipped(name, None, "another run is starting")
    try:
        last = store.schedule_last_job(name)
        state = store.state(last) if last else None  # None: no run yet, or it expired
        if state is not None and state not in TERMINAL:
            return _skipped(name, last, f"job {state}")
        request = schedule_request(schedule, now or datetime.now(UTC))
        if request.output and "://" not in request.output:
            # A template may name a new directory per run ({date}/...); pull and submit
            # refuse a missing directory, a schedule makes it.
            Path(request.output).parent.mkdir(parents=True, exist_ok=True)
        meta = create_job(request, with_yaml_key_encoding(settings, request.feature_store_yaml),
                          store)
        # Recorded before enqueueing: a run is never stacked on one whose shards are queued.
        store.record_schedule_run(name, meta.job_id)
        enqueue(meta)
    finally:
        store.unlock_schedule(name, owner)
    logger.info("schedule_started schedule=%s job_id=%s rows=%s output=%s",
                name, meta.job_id, meta.rows, request.output)
    return {"schedule": name, "job_id": meta.job_id, "shards": meta.shards, "rows": meta.rows,
            "output": request.output}
