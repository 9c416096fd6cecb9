"""Sending a job's task messages through Celery, from a worker (a scan's last task, a
``submit_job`` task). A submitting process writes the same messages without Celery
(:mod:`featurepull.tasks.task_messages`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from featurepull.tasks import monitor

if TYPE_CHECKING:
    from celery import Celery

    from featurepull.tasks.store import JobMeta


class MessageSender:
    """Sends a job's messages over one producer; given to ``create_job`` (``Enqueue``) so
    that each shard is queued as soon as its keys are stored."""

    def __init__(self, app: Celery, queue: str, producer: Any) -> None:
        self.app, self.queue, self.producer = app, queue, producer

    def __call__(self, meta: JobMeta, shard: int) -> None:
        self.app.send_task("featurepull.read_shard", args=[meta.job_id, shard],
                           queue=self.queue, producer=self.producer,
                           argsrepr=monitor.shard_args(meta, shard))

    def scan(self, meta: JobMeta, part: int) -> None:
        self.app.send_task("featurepull.scan_segments", args=[meta.job_id, part],
                           queue=self.queue, producer=self.producer,
                           argsrepr=monitor.scan_args(meta, part))


@contextmanager
def shard_sender(app: Celery, queue: str) -> Iterator[MessageSender]:
    """A :class:`MessageSender` over one producer."""
    with app.producer_or_acquire() as producer:
        yield MessageSender(app, queue, producer)
