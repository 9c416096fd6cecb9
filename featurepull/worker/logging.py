"""Worker logging: every line — featurepull's, Celery's, the read engine's — one renderer.

``log_format`` (``FEATUREPULL_LOG_FORMAT``) picks JSON lines, a readable console format, or
``auto``: console when the log goes to a terminal, JSON otherwise. structlog renders its own
events and stdlib records (Celery, billiard, ``featurepull.dynamo``) with one
``ProcessorFormatter`` on the root logger, so a log shipper parses every line the same way.

Every line carries the context bound in its thread (contextvars). Inside a task that is
``task_id``, ``task``, ``job_id`` and ``shard`` (:func:`bind_task`); the reader runs each
request in a copy of its caller's context, so lines from its threads carry the same keys.

Secrets are masked last, after exceptions are formatted into text: the AWS credentials in the
environment, the Redis password, any URL password or ``NAME=secret`` assignment.

Levels: a worker started without ``--loglevel`` logs featurepull's own lines at INFO (ready,
``shard_start``, ``shard_done``, the job's end) and everything else — Celery's per-task
chatter, libraries — at WARNING; ``--loglevel`` sets one level for all.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TextIO

import structlog
from structlog.processors import CallsiteParameter
from structlog.typing import EventDict, Processor, WrappedLogger

from featurepull.config import Settings
from featurepull.redact import Redactor, secrets_from_env, url_password

LogFormat = Literal["json", "console"]
# Per-request chatter at INFO/DEBUG (botocore's DEBUG lines even carry request headers).
QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer")
# billiard's logger does not propagate to the root; like Celery, give it ERROR and up.
MULTIPROCESSING_LOGGER = "multiprocessing"
# featurepull's own loggers (its task modules' loggers hang under Celery's "celery.task").
OWN_LOGGERS = ("featurepull", "celery.task")
# The level of those when the worker was not given --loglevel: its job lines show.
DEFAULT_OWN_LEVEL = logging.INFO
# Task arguments bound into the log context by name (see bind_task).
TASK_ARGUMENTS = ("job_id", "shard")
# What a person reads first, in this order; the task context next, then the fields.
_FIRST_KEYS = ("timestamp", "level", "event", "job_id", "shard", "task", "task_id")

_active_format: LogFormat | None = None
_active_handler: logging.Handler | None = None


def resolve_format(log_format: str, stream: TextIO | None) -> LogFormat:
    """``json`` or ``console``; ``auto`` means console on a terminal, JSON otherwise."""
    if log_format == "auto":
        return "console" if stream is not None and _isatty(stream) else "json"
    if log_format in ("json", "console"):
        return "json" if log_format == "json" else "console"
    raise ValueError(f"log_format must be auto, json or console, not {log_format!r}")


class RedactSecrets:
    """structlog processor: every string in the event dict with secrets masked."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        redacted: EventDict = self._redactor.value(event_dict)
        return redacted


def _drop_celery_data(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Celery passes its format arguments again as extra={"data": ...} (task args, return
    # values, tracebacks); the message already holds them, so the copy is noise.
    event_dict.pop("data", None)
    return event_dict


def _first_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _shared_processors() -> list[Processor]:
    """Run on every line, structlog's or a stdlib record: context, level, time, where."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.CallsiteParameterAdder(
            {CallsiteParameter.PROCESS, CallsiteParameter.THREAD_NAME}
        ),
    ]


def _formatter(chosen: LogFormat, shared: list[Processor], redactor: Redactor,
               colors: bool) -> structlog.stdlib.ProcessorFormatter:
    """The one formatter: stdlib records get the shared processors first, then every line is
    masked and rendered."""
    renderer: Processor = (
        structlog.processors.JSONRenderer() if chosen == "json" else
        structlog.dev.ConsoleRenderer(colors=colors,
                                      exception_formatter=structlog.dev.plain_traceback)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_celery_data],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Exceptions become text before masking, so a secret in a message is caught.
            structlog.processors.format_exc_info,
            RedactSecrets(redactor),
            _first_keys,
            renderer,
        ],
    )


def configure_logging(log_format: str, level: int | str = logging.INFO, *,
                      logfile: str | None = None, stream: TextIO | None = None,
                      secrets: Iterable[str] = (), own_level: int | None = None) -> LogFormat:
    """Send every log line of this process through one renderer; returns the format used.

    Lines go to ``logfile`` when given, else to ``stream`` (default stderr). ``secrets`` are
    values masked wherever they appear, on top of URL passwords and secret assignments.
    ``own_level``, when given, is the level of featurepull's own loggers (else ``level``).
    """
    global _active_format, _active_handler
    stream = stream if stream is not None else sys.stderr
    chosen = resolve_format(log_format, None if logfile else stream)
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    numeric = numeric if isinstance(numeric, int) and numeric > 0 else logging.WARNING
    shared = _shared_processors()
    formatter = _formatter(chosen, shared, Redactor(secrets),
                           colors=not logfile and _isatty(stream))
    handler: logging.Handler = (logging.FileHandler(logfile, encoding="utf-8") if logfile
                                else logging.StreamHandler(stream))
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    billiard = logging.getLogger(MULTIPROCESSING_LOGGER)
    billiard.handlers = [handler]
    billiard.setLevel(max(numeric, logging.ERROR))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own_level or logging.NOTSET)
    logging.captureWarnings(True)  # warnings.warn() output becomes a log line too
    if _active_handler is not None:
        _active_handler.close()  # configured again (Celery's signals): don't leak the file
    _active_handler = handler
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a process may configure again (a pool child, a test) and loggers
        # created at import must follow.
        cache_logger_on_first_use=False,
    )
    _active_format = chosen
    return chosen


def known_secrets(settings: Settings) -> list[str]:
    """Values to mask literally: the AWS credentials in the environment (boto3 reads them
    there, not from settings) and the Redis password."""
    secrets = secrets_from_env(os.environ)
    password = url_password(settings.redis_url)
    if password:
        secrets.append(password)
    return secrets


def configure_worker_logging(settings: Settings, level: int | str | None,
                             logfile: str | None = None) -> LogFormat:
    """Logging for a worker or beat process (Celery's ``setup_logging`` signal). ``level``
    counts only when the user chose it: else Celery's default (WARNING) for the rest, and
    featurepull's own lines at INFO."""
    if level is None or not loglevel_given():
        return configure_logging(settings.log_format, logging.WARNING, logfile=logfile,
                                 secrets=known_secrets(settings), own_level=DEFAULT_OWN_LEVEL)
    return configure_logging(settings.log_format, level, logfile=logfile,
                             secrets=known_secrets(settings))


@functools.cache
def loglevel_given() -> bool:
    """Whether the Celery command running this process was given ``--loglevel`` (or its
    environment variable), rather than falling back to its default.

    Read from the running click command, first in the main process (cached, so pool
    processes, forked later, agree); a process started without Celery's command line
    (``app.Worker(...)``) counts as given: its caller chose the level.
    """
    import click
    from click.core import ParameterSource

    context = click.get_current_context(silent=True)
    while context is not None and "loglevel" not in context.params:
        context = context.parent
    if context is None:
        return True
    return context.get_parameter_source("loglevel") not in (ParameterSource.DEFAULT, None)


def bind_task(task_id: str, task: Any, args: Sequence[Any] | None = None,
              kwargs: dict[str, Any] | None = None) -> None:
    """Start a task's log context: ``task_id``, ``task`` (its name), ``job_id``, ``shard``.

    ``job_id`` and ``shard`` come from the task's arguments of those names, so they are on
    every line of ``read_shard``; ``shard`` is None for tasks that have no shard
    (``finish_job``, ``submit_job``), and ``job_id`` is None until ``submit_job`` or a
    schedule run has created the job (they bind it then).
    """
    structlog.contextvars.clear_contextvars()
    context: dict[str, Any] = {"task_id": task_id, "task": getattr(task, "name", str(task)),
                               "job_id": None, "shard": None}
    try:
        bound = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (AttributeError, TypeError, ValueError):
        bound = None  # a malformed message: Celery reports it; keep the defaults
    if bound is not None:
        context.update({k: v for k, v in bound.arguments.items() if k in TASK_ARGUMENTS})
    structlog.contextvars.bind_contextvars(**context)


def unbind_task() -> None:
    """End a task's log context (a pool process runs many tasks in one thread)."""
    structlog.contextvars.clear_contextvars()


def worker_ready(hostname: str, concurrency: int, queues: list[str],
                 metrics_port: int | None) -> None:
    """One ``worker_ready`` line (at INFO, shown by default): the worker takes tasks now."""
    structlog.get_logger(__name__).info(
        "worker_ready", hostname=hostname, concurrency=concurrency, queues=queues,
        metrics=f"http://{socket.gethostname()}:{metrics_port}/metrics" if metrics_port else None)


def unbounded_jobs(warning: str) -> None:
    """One ``jobs_unbounded`` warning at start: the job settings that leave a message free
    to name any input, output or endpoint (``featurepull.tasks.confine``)."""
    structlog.get_logger(__name__).warning("jobs_unbounded", message=warning)


def announce_worker(worker: Any) -> None:
    """In JSON mode, one ``worker_starting`` line instead of Celery's banner.

    Celery prints its multi-line banner to stdout right after ``celeryd_after_setup`` unless
    the worker is quiet; a JSON log should hold only JSON lines, so the banner's facts (broker
    and result URLs with the password masked by kombu, queues, concurrency) become fields.
    """
    if _active_format != "json":
        return
    from celery import __version__ as celery_version

    worker.quiet = True
    app = worker.app
    connection = app.connection()
    try:
        broker = connection.as_uri()
    finally:
        connection.release()
    structlog.get_logger(__name__).info(
        "worker_starting", hostname=worker.hostname, celery=celery_version, broker=broker,
        results=app.backend.as_uri(), concurrency=worker.concurrency,
        queues=sorted(app.amqp.queues.consume_from or app.amqp.queues),
        tasks=sorted(name for name in app.tasks if name.startswith("featurepull.")),
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
