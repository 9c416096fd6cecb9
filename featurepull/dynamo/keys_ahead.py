"""Distinct keys whose hashing goes on while the read that sends them has begun.

A shard's 100,000 Feast ids cost 11-16 ms of MurmurHash3 before its first request; its
first 32 requests need 3,200 of them. A :class:`KeysAhead` holds the first keys, hashed by
its caller, and hashes the rest in order, a chunk at a time, either

- in the read's own thread, between turns of its event loop (:meth:`KeysAhead.step`, called
  by ``BatchReader`` once the requests of a turn are written): the loop has nothing to do
  in the read's first round trip but wait, and a chunk (~2 ms) holds up the answers that
  come meanwhile no longer than one answer's decode does; or
- on a thread of its own (:meth:`KeysAhead.start`), for a process with a core to spare
  (a console pull): Arrow's passes hold no GIL, the hex text of the ids does.

The reader takes its batches from :attr:`KeysAhead.hashed` (a list that only grows) and waits
(:meth:`KeysAhead.wait`) only for a key not hashed yet, which it then hashes itself if no
thread does. Indexing and iterating wait the same way, so any other caller sees a plain
sequence of every key. :meth:`KeysAhead.close` (``BatchReader.read`` calls it) stops and joins
the thread: nothing hashes on after the read ends or raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, overload

# Keys hashed at a time: 16 Ki keys (~2 ms) cost no more per key than _murmur's 64 Ki, and
# hold up the answers that arrive meanwhile about as long as a decode of 200 items.
CHUNK = 1 << 14


class KeysAhead(Sequence[Hashable]):
    """``count`` keys: ``first`` already hashed, the rest by ``hash_range(start, n)`` (the
    ``n`` keys from ``start``, in order), a ``chunk`` at a time."""

    def __init__(self, count: int, first: list[Hashable],
                 hash_range: Callable[[int, int], list[Hashable]], chunk: int = CHUNK) -> None:
        self.hashed = first  # keys[:len(hashed)], grown in place (the reader keeps it)
        self._count = count
        self._hash_range = hash_range
        self._chunk = chunk
        self._changed = threading.Condition()
        self._stopping = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def unhashed(self) -> bool:
        """Keys are left to hash and no thread hashes them (:meth:`step` would)."""
        return self._thread is None and len(self.hashed) < self._count

    def step(self) -> None:
        """Hash the next chunk in the caller's thread (with no thread of its own)."""
        if self.unhashed:
            hashed = self.hashed
            start = len(hashed)
            hashed.extend(self._hash_range(start, min(self._chunk, self._count - start)))

    def start(self) -> KeysAhead:
        """Hash the rest on a thread (once; not after :meth:`close`)."""
        if self._thread is None and not self._stopping and len(self.hashed) < self._count:
            self._thread = threading.Thread(target=self._run, name="featurepull-keys-ahead",
                                            daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread after the chunk under way and join it (the caller's thread hashes
        whatever is asked for after that)."""
        self._stopping = True
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> KeysAhead:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        hashed = self.hashed
        try:
            while not self._stopping and len(hashed) < self._count:
                start = len(hashed)
                keys = self._hash_range(start, min(self._chunk, self._count - start))
                with self._changed:
                    hashed.extend(keys)
                    self._changed.notify_all()
        except BaseException as exc:  # raised by the wait that needs these keys
            with self._changed:
                self._error = exc
                self._changed.notify_all()

    def wait(self, end: int) -> list[Hashable]:
        """:attr:`hashed` once it holds the first ``end`` keys: waited for while the
        thread hashes them, hashed here when no thread does (not started, or stopped)."""
        hashed = self.hashed
        if len(hashed) >= end:
            return hashed
        thread = self._thread
        if thread is not None and not self._stopping:
            with self._changed:
                self._changed.wait_for(lambda: len(hashed) >= end or self._error is not None
                                       or not thread.is_alive())
            if self._error is not None:
                raise self._error
            if len(hashed) >= end:
                return hashed
        self.close()  # whatever the thread hashed, then nothing more there
        while len(hashed) < end:
            start = len(hashed)
            hashed.extend(self._hash_range(start, min(self._chunk, self._count - start)))
        return hashed

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Hashable: ...

    @overload
    def __getitem__(self, index: slice) -> list[Hashable]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.wait(self._count)[index]
        position = index + self._count if index < 0 else index
        if not 0 <= position < self._count:
            raise IndexError("key index out of range")
        return self.wait(position + 1)[position]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.wait(self._count))
