"""The event loops reads run on, and the ones kept between reads with their connections.

A read is a plain blocking call that runs its requests on an event loop in the calling
thread (:func:`run`). A fresh loop per read would open every connection again: ~32 TCP
connects a read (several ms; TLS handshakes against DynamoDB cost far more), five reads in a
row per pool process. So a read takes a :class:`KeptLoop` from this process's shelf
(:func:`kept_loop`) and gives it back when it ends: the next read, of any reader of this
process, finds the loop and the keep-alive connections to its endpoint waiting.

- Between reads a kept loop does not run: nothing happens in the background and no thread
  is kept. A connection idle past :data:`~featurepull.dynamo.http.IDLE_LIMIT_S`, or that the
  server closed meanwhile, is closed at the next read's start, not used.
- A read that fails (any exception, Celery's soft time limit and Ctrl-C included) closes
  its loop and every connection on it; the next read starts from a new one.
- One read at a time per loop: reads at the same time (a views read, threads) each take
  their own; at most :data:`LOOPS_KEPT` wait on the shelf.
- Fork: a child starts with an empty shelf and never touches its parent's loops (their
  connections are its parent's): no byte sent on them, no change to the parent's epoll.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import os
import selectors
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from featurepull.dynamo.http import ConnectionPool

T = TypeVar("T")
LOOPS_KEPT = 8  # idle loops kept per process (a views read takes one per view)
POOLS_KEPT = 4  # endpoints (URL, timeouts, TLS check) whose connections a loop keeps

__all__ = ["KeptLoop", "close_kept_loops", "kept_loop", "run"]


def run(work: Coroutine[Any, Any, None], runner: asyncio.Runner | None = None) -> None:
    """Run ``work`` on an event loop here (``runner``'s, else a new one), or — when this
    thread already runs one (a notebook, an async app) — on a thread of its own, so a read
    stays a plain blocking call."""
    off_the_running_loop(functools.partial(_run_here, work, runner))


def off_the_running_loop(call: Callable[[], T]) -> T:
    """``call()`` here, or on a thread of its own when this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(1, thread_name_prefix="featurepull-loop") as pool:
        return pool.submit(contextvars.copy_context().run, call).result()


def _run_here(work: Coroutine[Any, Any, None], runner: asyncio.Runner | None = None) -> None:
    """``asyncio.run(work)`` (``runner.run``), except that an exception raised inside one of
    the loop's callbacks ends the read with that exception instead of being logged and
    swallowed by asyncio — Celery's soft time limit is raised by a signal handler wherever
    the thread is."""
    escaped: list[BaseException] = []

    async def main() -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()

        def on_error(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if exc is None or task is None or task.done():
                loop.default_exception_handler(context)
                return
            escaped.append(exc)
            task.cancel()

        loop.set_exception_handler(on_error)
        await work

    try:
        if runner is None:
            asyncio.run(main())
        else:  # in the caller's context (log bindings), as asyncio.run
            runner.run(main(), context=contextvars.copy_context())
    except asyncio.CancelledError:
        if escaped:
            raise escaped[0] from None
        raise


class KeptLoop:
    """An event loop kept between reads, with the connection pools of the endpoints its
    reads sent to. One read at a time; :meth:`close` from no running loop's thread."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner(loop_factory=_new_loop)
        self._pools: OrderedDict[tuple[str, float, float, bool | str], ConnectionPool] = (
            OrderedDict())

    def pool(self, url: str, connect_timeout: float, read_timeout: float,
             verify: bool | str) -> ConnectionPool:
        """The connections to ``url`` kept on this loop (a new pool the first time)."""
        key = (url, connect_timeout, read_timeout, verify)
        pool = self._pools.pop(key, None) or ConnectionPool(url, connect_timeout,
                                                            read_timeout, verify)
        self._pools[key] = pool  # the most recent last
        while len(self._pools) > POOLS_KEPT:
            self._pools.popitem(last=False)[1].close()
        return pool

    def run(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on this loop (see :func:`run`). Host names are resolved on threads
        of this read's own, ended with it: no thread outlives a read."""
        resolver = ThreadPoolExecutor(thread_name_prefix="featurepull-resolve")
        try:
            run(self._fresh(work, resolver), self._runner)
        finally:
            resolver.shutdown(wait=True)

    async def _fresh(self, work: Coroutine[Any, Any, None],
                     resolver: ThreadPoolExecutor) -> None:
        asyncio.get_running_loop().set_default_executor(resolver)
        for pool in self._pools.values():
            pool.close_stale()
        await work

    def close(self) -> None:
        """Close every connection and the loop."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        off_the_running_loop(self._runner.close)


_shelf: list[KeptLoop] = []
_shelf_lock = threading.Lock()


@contextmanager
def kept_loop() -> Iterator[KeptLoop]:
    """A loop for one read: an idle one of this process's, else a new one. Given back when
    the read ends, closed if the read failed."""
    with _shelf_lock:
        loop = _shelf.pop() if _shelf else None
    if loop is None:
        loop = KeptLoop()
    try:
        yield loop
    except BaseException:
        _close(loop)
        raise
    with _shelf_lock:
        full = len(_shelf) >= LOOPS_KEPT
        if not full:
            _shelf.append(loop)
    if full:
        _close(loop)


def close_kept_loops() -> None:
    """Close the idle loops of this process and their connections."""
    with _shelf_lock:
        loops = _shelf[:]
        _shelf.clear()
    for loop in loops:
        _close(loop)


def _close(loop: KeptLoop) -> None:
    with suppress(Exception):  # the read's own exception, if any, is the one to raise
        loop.close()


def _forget_after_fork() -> None:
    """In a forked child: drop the parent's loops (their connections are the parent's; the
    fork-aware selector keeps their garbage collection off the parent's epoll), and a new
    lock (one held at fork time by another thread would stay held)."""
    global _shelf_lock
    _shelf_lock = threading.Lock()
    _shelf.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
# A process that ends normally says goodbye on its connections (a Celery pool process ends
# with os._exit: the kernel closes them).
atexit.register(close_kept_loops)


class _ForkAwareEpoll(selectors.EpollSelector):
    """epoll that a forked child leaves alone. A child shares its parent's epoll instance
    (the kernel object, not a copy): a socket the child unregisters (closing its copy of a
    loop, when it collects one) is gone from its parent's loop too. In another process this
    selector finds nothing registered and registers nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._pid = os.getpid()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        if os.getpid() != self._pid:
            raise KeyError(f"{fileobj!r} is registered in the parent process")
        return super().get_key(fileobj)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if os.getpid() != self._pid:
            raise RuntimeError("an event loop inherited across fork is not used")
        return super().register(fileobj, events, data)


def _new_loop() -> asyncio.AbstractEventLoop:
    """The default loop, on Linux with the fork-aware epoll (kqueue is not inherited by a
    child; poll and select keep nothing in the kernel)."""
    if hasattr(selectors, "EpollSelector"):
        return asyncio.SelectorEventLoop(_ForkAwareEpoll())
    return asyncio.new_event_loop()
