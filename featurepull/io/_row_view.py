"""Feature rows as output columns: the one view every sink and the Arrow conversion read.

Columns: the entity key columns (in the order given), then `event_timestamp`, then the
features in the requested order. `rows[i]` is None for an entity with no item, else
`(event_timestamp, f1, f2, ...)`. Rows are numbered from 1 in messages (from `first_row`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from featurepull.errors import InputError

EVENT_TIMESTAMP = "event_timestamp"
CHUNK_ROWS = 65_536  # rows per Parquet row group, and per batch of CSV/JSONL lines


class OutputError(InputError, ValueError):
    """The rows cannot be written; the message names the path and what to do."""


def column_role(names: Sequence[str], index: int) -> str:
    """How messages name output column `index`: key columns come before event_timestamp."""
    if EVENT_TIMESTAMP not in names or names[index] == EVENT_TIMESTAMP:
        return "column"
    return "key column" if index < names.index(EVENT_TIMESTAMP) else "feature column"


@dataclass(frozen=True)
class RowView:
    """The output table of `write_rows` / `rows_to_table`, seen by column or by row.

    `source` starts every message: the output path, or what the rows are (a shard).
    """

    source: str
    key_columns: dict[str, list[Any]]
    rows: Sequence[tuple[Any, ...] | None]
    features: tuple[str, ...]
    first_row: int = 1  # the number messages give rows[0] (a shard's first entity row)

    @property
    def names(self) -> list[str]:
        """The output column names, in output order."""
        return [*self.key_columns, EVENT_TIMESTAMP, *self.features]

    def column(self, index: int, start: int, stop: int) -> list[Any]:
        """The values of output column `index` for rows [start, stop)."""
        keys = list(self.key_columns.values())
        if index < len(keys):
            return keys[index][start:stop]
        position = index - len(keys)  # 0 is event_timestamp, then the features
        return [None if row is None else row[position] for row in self.rows[start:stop]]

    def records(self, start: int, stop: int) -> Iterator[list[Any]]:
        """The output rows [start, stop), each as its values in column order."""
        keys = list(self.key_columns.values())
        missing = [None] * (1 + len(self.features))
        for index in range(start, stop):
            row = self.rows[index]
            values = [column[index] for column in keys]
            values.extend(missing if row is None else row)
            yield values

    def validate(self) -> None:
        """Reject duplicate names, short key columns and malformed rows before any write."""
        names = self.names
        for index, name in enumerate(names):
            if name in names[:index]:
                raise OutputError(
                    f"{self.source}: column {name!r} would appear twice in the output; key "
                    f"columns, {EVENT_TIMESTAMP!r} and the features need distinct names"
                )
        for name, values in self.key_columns.items():
            if len(values) != len(self.rows):
                raise OutputError(
                    f"{self.source}: key column {name!r} has {len(values)} values "
                    f"for {len(self.rows)} rows"
                )
        for number, row in enumerate(self.rows, start=self.first_row):
            if row is not None:
                self._validate_row(number, row)

    def _validate_row(self, number: int, row: tuple[Any, ...]) -> None:
        if len(row) != 1 + len(self.features):
            raise OutputError(
                f"{self.source}: row {number} has {len(row)} values; expected "
                f"{EVENT_TIMESTAMP} and {len(self.features)} features"
            )
        timestamp = row[0]
        # None: a found item without an event time (a plain table without that attribute).
        if timestamp is not None and (
            not isinstance(timestamp, datetime) or timestamp.utcoffset() is None
        ):
            raise OutputError(
                f"{self.source}: row {number}: {EVENT_TIMESTAMP} must be a timezone-aware "
                f"datetime or null, not {timestamp!r}"
            )
