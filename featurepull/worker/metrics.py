"""Prometheus ``/metrics`` for a prefork worker (``metrics_port``), with prometheus_client's
multiprocess mode: each pool process writes its values to files in one directory, and the
worker's main process serves their sum.

The directory is made fresh when the worker starts — under ``PROMETHEUS_MULTIPROC_DIR`` when
that is set, else in the temporary directory — and ``PROMETHEUS_MULTIPROC_DIR`` is pointed at
it before the pool forks; it is removed when the worker stops. A pool process that exits,
even SIGKILLed, keeps its counts (its files stay and are summed); its live gauges
(``featurepull_shards_running``) are dropped with ``mark_process_dead``, at its own exit or,
for a process that could not run its exit code, at the next scrape.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import structlog

from featurepull.config import Settings
from featurepull.errors import InputError
from featurepull.tasks.output import process_exists

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Served on every interface, as Prometheus scrapes from elsewhere; it only reads counters.
LISTEN_ADDRESS = "0.0.0.0"
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

log = structlog.get_logger(__name__)
_directory: str | None = None


class MetricsError(InputError, RuntimeError):
    """Metrics cannot be served: the port is taken or not allowed, or the multiprocess
    directory cannot be made."""


def prepare(settings: Settings) -> str | None:
    """In the worker's main process, before the pool forks: a fresh multiprocess directory,
    and a check that the port is free. Returns the directory (None without metrics_port)."""
    global _directory
    if settings.metrics_port is None:
        return None
    _check_port(settings.metrics_port)
    parent = os.environ.get(MULTIPROC_ENV) or None
    try:
        _directory = tempfile.mkdtemp(prefix="featurepull-metrics-", dir=parent)
    except OSError as exc:
        raise MetricsError(f"cannot make the metrics directory under {parent} ({exc.strerror}); "
                           f"point {MULTIPROC_ENV} at a writable directory, or unset it") from None
    os.environ[MULTIPROC_ENV] = _directory
    values = _imported_value_class()
    if values is not None and not getattr(values, "_multiprocess", False):
        # Something imported prometheus_client first, in single-process mode: pool
        # processes' counts would never reach /metrics. Switch it now (no metric exists yet).
        import prometheus_client.values as pv

        pv.ValueClass = pv.MultiProcessValue()  # type: ignore[no-untyped-call]
    return _directory


def _imported_value_class() -> Any:
    import sys

    module = sys.modules.get("prometheus_client.values")
    return getattr(module, "ValueClass", None) if module is not None else None


def _check_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LISTEN_ADDRESS, port))
        except OSError as exc:
            raise MetricsError(
                f"cannot serve metrics on port {port} ({exc.strerror}); choose another "
                "--metrics-port (FEATUREPULL_METRICS_PORT) or stop what listens there"
            ) from None


class _WorkerCollector:
    """Drops dead processes' live gauges, then reports the queue's depth from Redis."""

    def __init__(self, directory: str, settings: Settings) -> None:
        self.directory = directory
        self.settings = settings
        self._redis: Any = None

    def collect(self) -> Iterator[Any]:
        sweep_dead_processes(self.directory)
        import redis

        from featurepull.tasks.metrics import queue_depth
        from featurepull.tasks.store import connect

        try:
            if self._redis is None:
                self._redis = connect(self.settings.redis_url)
            yield queue_depth(self._redis, [self.settings.jobs.queue])
        except (redis.RedisError, RuntimeError) as exc:
            log.warning("metrics_queue_depth_unavailable", error=str(exc))


def serve(settings: Settings) -> int | None:
    """Start the ``/metrics`` HTTP server in this (the main) process; returns its port."""
    if settings.metrics_port is None or _directory is None:
        return None
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    registry.register(_WorkerCollector(_directory, settings))
    MultiProcessCollector(registry, path=_directory)  # type: ignore[no-untyped-call]
    start_http_server(settings.metrics_port, addr=LISTEN_ADDRESS, registry=registry)
    return settings.metrics_port


def process_exited(pid: int) -> None:
    """A pool process is exiting: drop its live gauges (its counters stay)."""
    if _directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, _directory)  # type: ignore[no-untyped-call]


def sweep_dead_processes(directory: str) -> None:
    """``mark_process_dead`` for every process that left live gauges and is gone (SIGKILL
    skips a process's own exit code)."""
    from prometheus_client import multiprocess

    pids = {int(m.group(1)) for path in glob.glob(os.path.join(directory, "gauge_live*.db"))
            if (m := _LIVE_FILE.match(os.path.basename(path)))}
    for pid in pids:
        if not process_exists(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def cleanup() -> None:
    """Remove the multiprocess directory (the worker is stopping)."""
    global _directory
    if _directory is not None:
        shutil.rmtree(_directory, ignore_errors=True)
        _directory = None
