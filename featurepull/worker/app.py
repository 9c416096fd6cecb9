"""Building the Celery app from settings, and the worker process lifecycle."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, NoReturn

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.nodenames import node_format

from featurepull.config import ConfigError, Settings, load_settings
from featurepull.dynamo.client import preload_botocore, process_client
from featurepull.tasks import celery_tasks, scoring
from featurepull.tasks.confine import start_warning
from featurepull.tasks.jobs import reset_process_state
from featurepull.tasks.schedules import beat_entry, check_schedules
from featurepull.tasks.watchdog import Watchdog
from featurepull.worker import logging as worker_logging
from featurepull.worker import metrics as worker_metrics

CONFIG_ENV = "FEATUREPULL_CONFIG"
# Result-backend writes retried through a Redis outage: full-jitter backoff from 10 ms,
# doubling to at most 10 s, about two minutes in all (as long as a shard waits for Redis).
RESULT_BACKEND_RETRIES = 30


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, one message at a time, events for Flower."""
    jobs = settings.jobs
    transport = {
        # Longer than a shard may run, or Redis hands a running shard to a second worker.
        "visibility_timeout": jobs.visibility_timeout_s,
        "unacked_restore_interval": jobs.redelivery_check_s,
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "task_default_queue": jobs.queue,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": jobs.visibility_timeout_s},
        "result_expires": jobs.ttl_s,
        # Celery stores STARTED before a task's body runs (and its result after): failing
        # there, outside the body, the task is failed and its message acked (acks_late) —
        # a shard lost for good. So these writes wait out an outage, as the body does.
        "result_backend_always_retry": True,
        "result_backend_max_retries": RESULT_BACKEND_RETRIES,
        "broker_connection_retry_on_startup": True,
        "task_annotations": {
            "featurepull.read_shard": {
                "soft_time_limit": jobs.shard_soft_time_limit_s,
                "time_limit": jobs.shard_time_limit_s,
            },
            "featurepull.finish_job": {"time_limit": jobs.shard_time_limit_s},
        },
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery beat's entries, one per configured schedule; a bad one fails at startup."""
    check_schedules(settings)
    return {f"featurepull.schedule.{schedule.name}": beat_entry(schedule, settings.jobs.queue)
            for schedule in settings.schedules}


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``, with featurepull's tasks registered."""
    app = Celery("featurepull", set_as_current=True)
    app.conf.update(celery_config(settings))
    app.conf.beat_schedule = beat_schedule(settings)
    celery_tasks.configure(settings)
    app.finalize()
    return app


def producer_app(settings: Settings) -> Celery:
    """A Celery app that only sends featurepull tasks (a submitting process, not a worker)."""
    app = Celery("featurepull-producer", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Nothing network-bound crosses a fork: readers and Redis clients are rebuilt per child.
    reset_process_state()
    # Each child has its scorers before its first shard (imported by the main process
    # already, so this finds them in sys.modules).
    settings = celery_tasks.configured_settings()
    scoring.load_scorers(settings)
    # And its DynamoDB client, so the first shard does not pay for building it.
    with contextlib.suppress(ConfigError):  # a missing region: the first shard says so
        process_client(settings.dynamodb)


@celeryd_init.connect
def _preload_before_fork(**_: Any) -> None:
    # botocore's model and modules, loaded once here, are inherited by every pool child.
    preload_botocore()


@celeryd_init.connect
def _load_scorers(**_: Any) -> None:
    # In the main process, before the pool forks: a scorer that cannot be imported stops the
    # worker now, with its name, path and the ImportError, rather than failing every job
    # that names it. SystemExit, because Celery logs and swallows a receiver's Exception.
    try:
        scoring.load_scorers(celery_tasks.configured_settings())
    except scoring.ScorerImportError as exc:
        _cannot_start(exc, 1)


@celeryd_init.connect
def _prepare_metrics(**_: Any) -> None:
    # Before the pool forks: every pool process must find PROMETHEUS_MULTIPROC_DIR set.
    try:
        worker_metrics.prepare(celery_tasks.configured_settings())
    except worker_metrics.MetricsError as exc:
        _cannot_start(exc, 2)


def _cannot_start(exc: Exception, code: int) -> NoReturn:
    print(f"featurepull worker: cannot start: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(code) from exc


@worker_ready.connect
def _serve_metrics_and_say_ready(sender: Any, **_: Any) -> None:
    settings = celery_tasks.configured_settings()
    port = worker_metrics.serve(settings)
    controller = sender.controller
    worker_logging.worker_ready(
        controller.hostname, controller.concurrency,
        sorted(q.name for q in sender.app.amqp.queues.consume_from.values()), port)


@worker_ready.connect
def _warn_unbounded_jobs(**_: Any) -> None:
    # Once per worker instance: what a message on its queue could make it touch.
    warning = start_warning(celery_tasks.configured_settings())
    if warning:
        worker_logging.unbounded_jobs(warning)


_watchdogs: list[Watchdog] = []


@worker_ready.connect
def _start_watchdog(sender: Any, **_: Any) -> None:
    # In the main process, after the pool forked: re-sends what stalled jobs wait for.
    watchdog = Watchdog(sender.app, celery_tasks.configured_settings())
    watchdog.start()
    _watchdogs.append(watchdog)


@worker_shutdown.connect
def _stop_watchdog(**_: Any) -> None:
    while _watchdogs:
        _watchdogs.pop().stop()


@worker_process_shutdown.connect
def _pool_process_exits(pid: int | None = None, **_: Any) -> None:
    worker_metrics.process_exited(pid or os.getpid())


@worker_shutdown.connect
def _remove_metrics_files(**_: Any) -> None:
    worker_metrics.cleanup()


@celeryd_init.connect
def _early_logging(sender: str, options: dict[str, Any], **_: Any) -> None:
    # Celery warns (running as root, ...) before it sets logging up; render those too.
    logfile = options.get("logfile")
    worker_logging.configure_worker_logging(celery_tasks.configured_settings(),
                                            options.get("loglevel"),
                                            node_format(logfile, sender) if logfile else None)


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, logfile: str | None = None,
                   **_: Any) -> None:
    # With a receiver here Celery configures no logging of its own: its lines, ours and the
    # the reader's all go through one renderer (json or console, secrets masked).
    worker_logging.configure_worker_logging(celery_tasks.configured_settings(), loglevel,
                                            logfile)


@celeryd_after_setup.connect
def _announce_worker(instance: Any, **_: Any) -> None:
    worker_logging.announce_worker(instance)


@task_prerun.connect
def _bind_task_log_context(task_id: str, task: Any, args: Any = None, kwargs: Any = None,
                           **_: Any) -> None:
    worker_logging.bind_task(task_id, task, args, kwargs)


@task_postrun.connect
def _unbind_task_log_context(**_: Any) -> None:
    worker_logging.unbind_task()


app = create_app(load_settings(os.environ.get(CONFIG_ENV)))
