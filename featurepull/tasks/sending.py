"""Sending a job's task messages: the one place a submitting process touches Celery.

Apart from :mod:`featurepull.tasks.celery_tasks` (the tasks themselves, with the read and
finish machinery and the Feast registry they import) so that ``featurepull submit`` queues
its first shard without importing what only the workers run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from featurepull.tasks import monitor

if TYPE_CHECKING:
    from celery import Celery

    from featurepull.config import Settings
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


class LazySender:
    """A :class:`MessageSender` on ``settings.jobs.queue`` whose producer is made at its first
    message: a submit refused before it (a bad request, table or entity file) loads no Celery,
    and Celery's and kombu's imports come after the entity file is typed and the table
    described. The app has no result backend (``producer_app(results=False)``): a submit
    waits on its job's record, not on its messages' results."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._resources = ExitStack()
        self._sender: MessageSender | None = None

    def _ready(self) -> MessageSender:
        if self._sender is None:
            from featurepull.worker.producer import producer_app

            app = producer_app(self._settings, results=False)
            self._resources.callback(app.close)
            self._sender = self._resources.enter_context(
                shard_sender(app, self._settings.jobs.queue))
        return self._sender

    def __call__(self, meta: JobMeta, shard: int) -> None:
        self._ready()(meta, shard)

    def scan(self, meta: JobMeta, part: int) -> None:
        self._ready().scan(meta, part)

    def close(self) -> None:
        """Release the producer and close the app, if a message made them."""
        self._resources.close()
