"""A read's rows held as columns: what the found items decoded to, feature by feature, and
for each input row which found item (if any) is its row.

Decoding an answer gives a column per feature; zipping them into one tuple per item, and
fanning the tuples out to one per input row, is per-row Python that the Arrow output does
not need: it takes the columns as they are and puts them in input order with one ``take``
(:mod:`featurepull.io._columnar`). :class:`FoundRows` is still the ``Sequence`` of
``(event_timestamp, *features)`` tuples or None that ``ReadResult.rows`` always was; the
tuples are made only when something indexes or iterates it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import pyarrow as pa

Row = tuple[Any, ...]


class FoundRows(Sequence[Row | None]):
    """Rows in input order. Input row ``i`` is the found item of unique key
    ``positions[i]``, if one was found: ``slots[s]`` is the unique key of found item ``s``,
    whose values are ``columns[c][s]`` (column 0 the event time, then the features).

    Each unique key has at most one found item (:meth:`repeated_slot` says which breaks
    that): the count, the Arrow index and the tuples all rest on it."""

    def __init__(self, positions: Sequence[int] | pa.Array, unique: int, slots: list[int],
                 columns: list[list[Any]]) -> None:
        self.positions = positions
        self.unique = unique
        self.slots = slots
        self.columns = columns
        self._rows: list[Row | None] | None = None

    @property
    def found_count(self) -> int:
        """How many input rows have a found item (duplicates counted each time)."""
        if len(self.slots) == self.unique:
            return len(self)
        if len(self) == self.unique:  # no key twice: each found item is one row
            return len(self.slots)
        found = bytearray(self.unique)
        for slot in self.slots:
            found[slot] = 1
        positions = self.positions
        if not isinstance(positions, Sequence):  # an Arrow array
            positions = positions.to_pylist()
        return sum(map(found.__getitem__, positions))

    def repeated_slot(self) -> int | None:
        """The first unique key with more than one found item, or None. DynamoDB answers
        each key at most once; an endpoint that answers one twice (a proxy or emulator
        with a bug) leaves two rows for one key, so its reader refuses the read."""
        slots = self.slots
        if len(set(slots)) == len(slots):  # one C pass: the common case
            return None
        seen: set[int] = set()
        for slot in slots:
            if slot in seen:
                return slot
            seen.add(slot)
        raise AssertionError("unreachable: a repeated slot was counted")

    def found_index(self) -> pa.Array:
        """For each input row, the found item that is its row (an index into ``columns``),
        null where none was found: the index array of one Arrow ``take``."""
        import pyarrow as pa  # only the Arrow output asks: the read itself needs no Arrow

        positions = self.positions
        if not isinstance(positions, pa.Array):
            positions = pa.array(positions, type=pa.int64())
        try:
            import numpy as np
        except ImportError:  # the console pull runs pyarrow without numpy: a hash table
            import pyarrow.compute as pc

            return pc.index_in(positions, value_set=pa.array(self.slots, type=positions.type))
        # Each unique key's found item (the first, should one be found twice), scattered
        # into an array of the unique keys, then taken by row: two C passes, no hash table.
        of_key = np.full(self.unique, -1, dtype=np.int64)
        found = np.arange(len(self.slots), dtype=np.int64)
        of_key[np.asarray(self.slots, dtype=np.int64)[::-1]] = found[::-1]
        by_key = pa.array(of_key, mask=of_key < 0)
        return by_key.take(positions)

    def found_mask(self) -> list[bool]:
        """For each input row, whether an item was found (without making the rows)."""
        mask: list[bool] = self.found_index().is_valid().to_pylist()
        return mask

    def _materialized(self) -> list[Row | None]:
        if self._rows is None:
            by_key: list[Row | None] = [None] * self.unique
            for slot, row in zip(self.slots, zip(*self.columns, strict=True), strict=True):
                by_key[slot] = row
            positions = self.positions
            if not isinstance(positions, Sequence):  # an Arrow array
                positions = positions.to_pylist()
            self._rows = [by_key[p] for p in positions]
        return self._rows

    def __len__(self) -> int:
        return len(self.positions)

    @overload
    def __getitem__(self, index: int) -> Row | None: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Row | None]: ...

    def __getitem__(self, index: int | slice) -> Row | Sequence[Row | None] | None:
        return self._materialized()[index]

    def __iter__(self) -> Iterator[Row | None]:
        return iter(self._materialized())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FoundRows):
            other = other._materialized()
        return self._materialized() == other

    __hash__ = None  # type: ignore[assignment]  # a mutable view, like a list

    def __repr__(self) -> str:
        return repr(self._materialized())


def found_mask(rows: Sequence[Row | None]) -> list[bool]:
    """For each row, whether its entity has an item (a scorer's ``found``)."""
    if isinstance(rows, FoundRows):
        return rows.found_mask()
    return [row is not None for row in rows]
