"""The submitting process's sign of life, so that a job it stops submitting midway (it was
killed, or its machine died) fails instead of waiting for shards that never come.

From the job's record on, while ``create_job`` stores and sends its shards, the job's meta
names the submitter (``submitting``: "host:pid") and its ``submitter`` key lives for
``jobs.submitter_timeout_s``, set again by a thread of the submitting process every third
of that (a thread: a shard that takes long to store is no sign of death). The submit's end
removes both; a submit that fails fails or removes its job itself. A job still submitting
whose key expired is failed by the workers' watchdog (``featurepull.tasks.watchdog``), with
an error that says to submit it again.
"""

from __future__ import annotations

import os
import socket
import threading

from featurepull.tasks._lazy_log import LazyLogger
from featurepull.tasks.store import JobStore

log = LazyLogger(__name__)  # structlog at the first line: a submit imports this module


class SubmitterHeartbeat(threading.Thread):
    """Shows the submitting process alive for one job, until `stop`."""

    def __init__(self, store: JobStore, job_id: str, timeout_s: float) -> None:
        super().__init__(name=f"featurepull-submitter-{job_id}", daemon=True)
        self.store = store
        self.job_id = job_id
        self.timeout_s = timeout_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.timeout_s / 3):
            try:
                self.store.submitter_alive(self.job_id, self.owner, self.timeout_s)
            except Exception as exc:  # Redis away for a moment: the next beat tries again
                log.warning("submitter_heartbeat_failed", job_id=self.job_id,
                            error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """No more signs of life (the submit has ended, one way or the other)."""
        self.stopped.set()
        if self.is_alive():
            self.join()
