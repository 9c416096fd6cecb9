"""A reading shard's progress reports, sent from a thread of their own.

A shard's read calls its progress callback in the read's event loop, after each batch of
answers. A report is Redis and broker round trips (the job's progress and state, Celery's
``PROGRESS`` state and event: 1 to 20 ms, more under load); made there, it would hold every
request the loop should send meanwhile. So the callback only hands what to report to
:class:`Reports`, whose thread sends it; a report that fails (the job ended: JobStopped,
UnknownJob; Redis gone) is raised back into the read at its next callback
(:meth:`Reports.check`), and by :meth:`Reports.finish`, which waits for the last report:
the shard calls it before it writes its part. No thread outlives the ``with`` block.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class Reports(Generic[T]):
    """Reports sent in order by a thread of their own: ``send(item)`` for each item posted.

    An item posted while the one before it waits unsent replaces it (the newer count says
    more), unless that one is the first: the first report and the last are always sent. A
    ``send`` that raises ends the thread; its exception is raised by :meth:`check` and
    :meth:`finish`. Leaving the ``with`` block waits for the report being sent, drops the
    others after an exception, and ends the thread."""

    def __init__(self, send: Callable[[T], object], name: str) -> None:
        self._send = send
        self._changed = threading.Condition()
        self._queue: deque[tuple[T, bool]] = deque()  # (item, may be replaced)
        self._posted = 0
        self._closing = False
        self._failure: BaseException | None = None
        # In a copy of the caller's context: log lines and bindings go with the reports.
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._work,), name=name, daemon=True)

    def __enter__(self) -> Reports[T]:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.finish()
        else:  # the shard failed: its error is the one to raise, not a report's
            self._close(drop=True)

    def post(self, item: T) -> None:
        """Have ``item`` sent (in the caller's thread: the read's loop, so no waiting)."""
        with self._changed:
            if self._queue and self._queue[-1][1]:
                self._queue.pop()
            self._queue.append((item, self._posted > 0))
            self._posted += 1
            self._changed.notify()

    def check(self) -> None:
        """Raise what a report raised, if one did (in the read: it stops there)."""
        if self._failure is not None:
            raise self._failure

    def finish(self) -> None:
        """Wait until every report posted is sent and the thread has ended; raise what a
        report raised."""
        self._close(drop=False)
        self.check()

    def _close(self, drop: bool) -> None:
        with self._changed:
            self._closing = True
            if drop:
                self._queue.clear()
            self._changed.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue:
                    return
                item, _ = self._queue.popleft()
            try:
                self._send(item)
            except BaseException as exc:  # raised in the shard's thread
                self._failure = exc
                return
