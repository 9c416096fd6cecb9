"""Building the worker's Celery app from settings, and the worker process lifecycle.

Nothing happens at import: :func:`worker_app` builds the app and connects the receivers
the first time ``featurepull.worker:app`` is asked for (``celery -A featurepull.worker``,
``featurepull worker|beat|flower``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any, NoReturn

import pyarrow as pa
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
from featurepull.tasks.fleet import PoolRecord
from featurepull.tasks.schedules import beat_entry, check_schedules
from featurepull.tasks.shards import reset_process_state
from featurepull.tasks.watchdog import Watchdog
from featurepull.worker import CONFIG_ENV
from featurepull.worker import logging as worker_logging
from featurepull.worker import metrics as worker_metrics
from featurepull.worker.producer import celery_config
from featurepull.worker.producer import producer_app as producer_app  # where tests look


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


def _preload_before_fork(**_: Any) -> None:
    # botocore's model and modules, loaded once here, are inherited by every pool child.
    preload_botocore()
    # pyarrow imports pandas (when installed) at its first conversion of a Python list, to
    # recognise pandas objects: ~0.4 s of CPU that each child would pay in its first shard.
    pa.array([0])
    # What a shard and the finisher import at their first use (protobuf for Feast's varint
    # columns, the shard's table, the part's encoder, the finisher's splice; ~15 ms under
    # load), imported once here rather than by each pool process on the job's path.
    import featurepull.dynamo._feast_value_proto
    import featurepull.dynamo._murmur
    import featurepull.io._encoders
    import featurepull.io._parquet_splice
    import featurepull.io.sink
    import featurepull.io.tables  # noqa: F401


def _load_scorers(**_: Any) -> None:
    # In the main process, before the pool forks: a scorer that cannot be imported stops the
    # worker now, with its name, path and the ImportError, rather than failing every job
    # that names it. SystemExit, because Celery logs and swallows a receiver's Exception.
    try:
        scoring.load_scorers(celery_tasks.configured_settings())
    except scoring.ScorerImportError as exc:
        _cannot_start(exc, 1)


def _prepare_metrics(**_: Any) -> None:
    # Before the pool forks: every pool process must find PROMETHEUS_MULTIPROC_DIR set.
    try:
        worker_metrics.prepare(celery_tasks.configured_settings())
    except worker_metrics.MetricsError as exc:
        _cannot_start(exc, 2)


def _cannot_start(exc: Exception, code: int) -> NoReturn:
    print(f"featurepull worker: cannot start: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(code) from exc


def _serve_metrics_and_say_ready(sender: Any, **_: Any) -> None:
    settings = celery_tasks.configured_settings()
    port = worker_metrics.serve(settings)
    controller = sender.controller
    worker_logging.worker_ready(
        controller.hostname, controller.concurrency,
        sorted(q.name for q in sender.app.amqp.queues.consume_from.values()), port)


def _warn_unbounded_jobs(**_: Any) -> None:
    # Once per worker instance: what a message on its queue could make it touch.
    warning = start_warning(celery_tasks.configured_settings())
    if warning:
        worker_logging.unbounded_jobs(warning)


_watchdogs: list[Watchdog] = []


def _start_watchdog(sender: Any, **_: Any) -> None:
    # In the main process, after the pool forked: re-sends what stalled jobs wait for.
    watchdog = Watchdog(sender.app, celery_tasks.configured_settings())
    watchdog.start()
    _watchdogs.append(watchdog)


def _stop_watchdog(**_: Any) -> None:
    while _watchdogs:
        _watchdogs.pop().stop()


_pool_records: list[PoolRecord] = []


def _record_pool(sender: Any, **_: Any) -> None:
    # In the main process, once the pool is up, and before the worker answers a ping:
    # submitters cut a job's shards for the processes serving its queue.
    controller = sender.controller
    pool = controller.pool
    record = PoolRecord(celery_tasks.configured_settings().redis_url, controller.hostname,
                        sorted(q.name for q in sender.app.amqp.queues.consume_from.values()),
                        lambda: int(pool.num_processes))
    record.record()
    record.start()
    _pool_records.append(record)


def _forget_pool(**_: Any) -> None:
    while _pool_records:
        _pool_records.pop().stop()


def _pool_process_exits(pid: int | None = None, **_: Any) -> None:
    worker_metrics.process_exited(pid or os.getpid())


def _remove_metrics_files(**_: Any) -> None:
    worker_metrics.cleanup()


def _early_logging(sender: str, options: dict[str, Any], **_: Any) -> None:
    # Celery warns (running as root, ...) before it sets logging up; render those too.
    logfile = options.get("logfile")
    worker_logging.configure_worker_logging(celery_tasks.configured_settings(),
                                            options.get("loglevel"),
                                            node_format(logfile, sender) if logfile else None)


def _setup_logging(loglevel: int | str | None = None, logfile: str | None = None,
                   **_: Any) -> None:
    # With a receiver here Celery configures no logging of its own: its lines, ours and the
    # the reader's all go through one renderer (json or console, secrets masked).
    worker_logging.configure_worker_logging(celery_tasks.configured_settings(), loglevel,
                                            logfile)


def _announce_worker(instance: Any, **_: Any) -> None:
    worker_logging.announce_worker(instance)


def _bind_task_log_context(task_id: str, task: Any, args: Any = None, kwargs: Any = None,
                           **_: Any) -> None:
    worker_logging.bind_task(task_id, task, args, kwargs)


def _unbind_task_log_context(**_: Any) -> None:
    worker_logging.unbind_task()


# In the order Celery should call them (celeryd_init has several receivers).
_RECEIVERS = (
    (worker_process_init, _after_fork),
    (celeryd_init, _preload_before_fork),
    (celeryd_init, _load_scorers),
    (celeryd_init, _prepare_metrics),
    (worker_ready, _serve_metrics_and_say_ready),
    (worker_ready, _warn_unbounded_jobs),
    (worker_ready, _start_watchdog),
    (worker_ready, _record_pool),
    (worker_shutdown, _stop_watchdog),
    (worker_shutdown, _forget_pool),
    (worker_process_shutdown, _pool_process_exits),
    (worker_shutdown, _remove_metrics_files),
    (celeryd_init, _early_logging),
    (setup_logging, _setup_logging),
    (celeryd_after_setup, _announce_worker),
    (task_prerun, _bind_task_log_context),
    (task_postrun, _unbind_task_log_context),
)


def connect_signals() -> None:
    """Connect the worker's process-lifecycle receivers (once; a no-op after that)."""
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, weak=False,
                       dispatch_uid=f"featurepull.worker.{receiver.__name__}")


@functools.cache
def worker_app() -> Celery:
    """``featurepull.worker:app``: the worker's app, built on first use (not at import) from
    the environment and the TOML file ``FEATUREPULL_CONFIG`` names, with the process
    lifecycle receivers connected. Producers never need it: they use ``producer_app``."""
    connect_signals()
    app = create_app(load_settings(os.environ.get(CONFIG_ENV)))
    # The documented ``featurepull.worker:app`` is this app even once this module, also
    # called ``app``, has been imported and bound as the package's attribute.
    setattr(sys.modules["featurepull.worker"], "app", app)  # noqa: B010
    return app
