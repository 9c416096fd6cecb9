"""A small per-process cache of the most recently used objects (clients, TLS contexts,
readers), for the layers that keep one per key and must not keep one per key ever seen.

``functools.lru_cache`` does not fit: the objects are built from arguments that are not the
key, and a forked child must rebuild what its parent built. This module imports only the
standard library, so every layer may import it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class RecentlyUsed(Generic[_K, _V]):
    """At most ``kept`` objects by key; using one makes it the most recent, and a new one
    past ``kept`` drops the least recent. One dropped is not closed (a read may still hold
    it): it closes its connections when garbage collected. Thread-safe."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._objects: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()
        _instances.add(self)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def get(self, key: _K, build: Callable[[], _V],
            reusable: Callable[[_V], bool] | None = None) -> _V:
        """The object for ``key``: the kept one if any (and ``reusable`` accepts it), else
        ``build()`` (called under the lock: built once)."""
        with self._lock:
            kept = self._objects.pop(key, None)
            if kept is None or (reusable is not None and not reusable(kept)):
                kept = build()
            self._objects[key] = kept  # the most recent last
            while len(self._objects) > self.kept:
                self._objects.popitem(last=False)
            return kept

    def peek(self, key: _K) -> _V | None:
        """The object kept for ``key``, if any, without making it the most recent."""
        return self._objects.get(key)

    def clear(self) -> None:
        """Forget every object (not closed)."""
        self._objects.clear()

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: object) -> bool:
        return key in self._objects


# A lock held by another thread at fork time stays locked forever in the child: each live
# instance gets a new one there (kept objects stay: `get`'s ``reusable`` judges them). One
# hook for all, over weak references: a hook per instance would keep each one alive, and
# run, in every child, forever.
_instances: weakref.WeakSet[RecentlyUsed[Any, Any]] = weakref.WeakSet()


def _new_locks() -> None:
    for cache in _instances:
        cache._new_lock()


os.register_at_fork(after_in_child=_new_locks)
