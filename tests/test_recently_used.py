"""The per-process cache of the most recently used objects (featurepull._recently_used)."""

from __future__ import annotations

import gc
import os
import weakref

from featurepull._recently_used import RecentlyUsed


def test_it_keeps_the_most_recently_used_and_drops_the_least() -> None:
    cache: RecentlyUsed[str, list[str]] = RecentlyUsed(2)
    built: list[str] = []

    def get(key: str) -> list[str]:
        return cache.get(key, lambda: built.append(key) or [key])

    a = get("a")
    get("b")
    assert get("a") is a  # used again: now the most recent
    get("c")  # drops "b", the least recently used
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2
    assert cache.peek("b") is None and cache.peek("a") is a
    get("b")  # built again; drops "a" (peek did not make it recent)
    assert built == ["a", "b", "c", "b"] and "a" not in cache
    cache.clear()
    assert len(cache) == 0


def test_an_object_it_may_not_reuse_is_built_again() -> None:
    # As per-process objects: one another pid built is replaced, in its slot.
    cache: RecentlyUsed[str, tuple[int, object]] = RecentlyUsed(8)
    cache.get("client", lambda: (-1, object()))
    mine = cache.get("client", lambda: (os.getpid(), object()),
                     lambda kept: kept[0] == os.getpid())
    assert mine[0] == os.getpid() and cache.peek("client") is mine and len(cache) == 1
    assert cache.get("client", lambda: (0, object()), lambda kept: kept[0] == os.getpid()) is mine


class _CountingLocks(RecentlyUsed[str, object]):
    made = 0

    def _new_lock(self) -> None:
        _CountingLocks.made += 1
        super()._new_lock()


def test_a_forked_child_gets_new_locks_for_live_caches_only() -> None:
    # A lock the parent holds at fork would stay locked in the child; a cache dropped is
    # gone, not kept alive (and reset in every child) by the fork hook.
    dropped = _CountingLocks(2)
    gone = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert gone() is None
    live = _CountingLocks(2)
    live.get("kept", object)
    _CountingLocks.made = 0
    with live._lock:  # held, as by another thread, at fork time
        pid = os.fork()
        if pid == 0:  # the child: its exit code says what it found
            free = live._lock.acquire(blocking=False)
            os._exit(10 * _CountingLocks.made + free + 2 * ("kept" in live))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 13  # one new lock, free; the object kept
    assert _CountingLocks.made == 0 and "kept" in live
