"""MurmurHash3 x64-128 (seed 0) of many fixed-width keys at once, as hex: byte for byte
``mmh3.hash_bytes(key).hex()``, computed in Arrow compute over whole columns.

For Feast ids of int join keys: every key is the same head and an 8- or 4-byte number, so
each 8-byte word of every key is the head's word OR the number shifted into it: one uint64
column, and each step of the hash (multiply, rotate, xor, add) is one pass over all keys. A
word the same for every key stays an Arrow scalar, so steps on the head cost nothing per
key: a 37-byte key (`driver_id`) is 45 passes and 41 steps on scalars. No numpy: the
console pull runs pyarrow without it (cli._lean_pull). Little-endian machines only: the
caller checks. Text keys gain nothing this way (docs/whole-process.md, "Tried").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_U64 = pa.uint64()


def _u64(value: int) -> Any:
    return pa.scalar(value, _U64)


_C1, _C2 = _u64(0x87C37B91114253D5), _u64(0x4CF5AD432745937F)
_FIVE, _N1, _N2 = _u64(5), _u64(0x52DCE729), _u64(0x38495AB5)
_F1, _F2 = _u64(0xFF51AFD7ED558CCD), _u64(0xC4CEB9FE1A85EC53)
_SHIFTS = {amount: _u64(amount) for amount in range(64)}
# Keys hashed at once: 64 Ki uint64 words (512 KiB) stay in cache from one pass to the next.
_CHUNK = 1 << 16


def _rotl(x: Any, r: int) -> Any:
    return pc.bit_wise_or(pc.shift_left(x, _SHIFTS[r]), pc.shift_right(x, _SHIFTS[64 - r]))


def _mix(k: Any, first: Any, r: int, second: Any) -> Any:
    return pc.multiply(_rotl(pc.multiply(k, first), r), second)


def _fmix(k: Any) -> Any:
    k = pc.multiply(pc.bit_wise_xor(k, pc.shift_right(k, _SHIFTS[33])), _F1)
    k = pc.multiply(pc.bit_wise_xor(k, pc.shift_right(k, _SHIFTS[33])), _F2)
    return pc.bit_wise_xor(k, pc.shift_right(k, _SHIFTS[33]))


def _hash(word: Callable[[int], Any], size: int) -> tuple[Any, Any]:
    """h1 and h2 of keys of ``size`` bytes, ``word(i)`` being every key's i-th little-endian
    8-byte word (zero past the key's end): a uint64 array, or a scalar where all keys agree."""
    h1: Any = _u64(0)
    h2: Any = _u64(0)
    for j in range(-(-size // 16)):
        k1 = _mix(word(2 * j), _C1, 31, _C2)
        k2 = _mix(word(2 * j + 1), _C2, 33, _C1)
        if 16 * (j + 1) > size:  # the tail: its words, zero-padded, go in without the rest
            return _final(pc.bit_wise_xor(h1, k1), pc.bit_wise_xor(h2, k2), size)
        h1 = pc.add(pc.multiply(pc.add(_rotl(pc.bit_wise_xor(h1, k1), 27), h2), _FIVE), _N1)
        h2 = pc.add(pc.multiply(pc.add(_rotl(pc.bit_wise_xor(h2, k2), 31), h1), _FIVE), _N2)
    return _final(h1, h2, size)


def _final(h1: Any, h2: Any, size: int) -> tuple[Any, Any]:
    h1 = pc.bit_wise_xor(h1, _u64(size))
    h2 = pc.bit_wise_xor(h2, _u64(size))
    h1 = pc.add(h1, h2)
    h2 = pc.add(h2, h1)
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = pc.add(h1, h2)
    return h1, pc.add(h2, h1)


def _hex(h1: Any, h2: Any, count: int) -> list[str]:
    """Each key's 16-byte digest (h1 then h2, little-endian, as mmh3.hash_bytes) in hex:
    one hex text of them all, split (the cheapest way found to a million Python strings)."""
    digests = bytearray(16 * count)
    words = memoryview(digests).cast("Q")
    for half, h in enumerate((h1, h2)):
        words[half::2] = memoryview(h.buffers()[1]).cast("Q")[h.offset:h.offset + count]
    return digests.hex(" ", 16).split()


def fixed_width_hex(head: bytes, values: Any, width: int) -> list[str]:
    """The hex digests of ``head`` followed by each value's ``width`` bytes: ``values`` an
    Arrow uint64 array (no nulls) of those bytes read as one little-endian number (an int64
    as uint64, an int32 zero-extended). A word is the head's, OR the value shifted into it."""
    ids: list[str] = []
    for start in range(0, len(values), _CHUNK):
        ids += _fixed_width_chunk(head, values.slice(start, _CHUNK), width)
    return ids


def _fixed_width_chunk(head: bytes, values: Any, width: int) -> list[str]:
    template = head + bytes(width)  # a word past its end reads as zeros
    offset = len(head)

    def word(i: int) -> Any:
        start = 8 * i
        constant = _u64(int.from_bytes(template[start:start + 8], "little"))
        if offset + width <= start or offset >= start + 8:
            return constant  # the value is wholly outside this word
        shift = 8 * (offset - start)
        moved = (pc.shift_left(values, _SHIFTS[shift]) if shift >= 0
                 else pc.shift_right(values, _SHIFTS[-shift]))
        return pc.bit_wise_or(constant, moved)

    return _hex(*_hash(word, len(template)), len(values))
