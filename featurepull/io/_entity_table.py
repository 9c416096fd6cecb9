"""The entity table, its error, and the checks every entity format shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurepull.errors import InputError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class EntityFileError(InputError, ValueError):
    """Bad entity input; the message names the file, the line or row, and the fix."""


class EntityFileChanged(EntityFileError):
    """The file changed while it was read (its passes saw different files): no other reader
    would do better, so a caller that retries other readers on an EntityFileError stops."""


class ArrowBackedColumns(Mapping[str, list[Any]]):
    """Columns of Python values, each made from its Arrow array when it is first asked for:
    a Feast pull takes the arrays (`EntityTable.arrays`) for its keys and its output and
    never asks, which spares a million Python values per column (~50 ms of CPU at 1M ids)."""

    def __init__(self, columns: dict[str, Any]) -> None:
        self._columns = columns  # a list, or an Arrow array not converted yet

    def __getitem__(self, name: str) -> list[Any]:
        column = self._columns[name]
        if not isinstance(column, list):
            column = self._columns[name] = column.to_pylist()
        return column  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return repr(dict(self))


class StreamDeclined(EntityFileError):
    """A streamed file found, past its first rows, to need the exact reader after all (a
    stream whose types are its first block's, `EntityStream.first_block_types`): read it
    whole, whose messages name the line."""


@dataclass(frozen=True)
class EntityTable:
    """The columns of one entity file: values in file order, and each column's logical type."""

    source: str
    columns: Mapping[str, list[Any]]
    types: dict[str, str]
    # Why a column cannot be a join key as read, for the messages of whoever picks the keys:
    # column -> "mixes integers (line 2: '1') and other text (line 3: 'abc')" (a CSV column
    # typed "mixed") or "holds a JSON object on line 4" (a JSONL column left out).
    notes: dict[str, str] = field(default_factory=dict)
    # The same columns as Arrow arrays of their logical type (int64, string), where the
    # reader made them (the CSV fast path): Feast keys are checked and hashed from them
    # without a pass over a million Python values (~60 ms at 1M ids).
    arrays: dict[str, Any] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        """How many entity rows the file holds (every column has this many values)."""
        for name in self.columns:
            return len(self.arrays[name] if name in self.arrays else self.columns[name])
        return 0


@dataclass(frozen=True)
class EntityStream:
    """An entity file whose column types are known before its rows are read, so that its
    rows can be taken a batch at a time (a submitter's memory then does not grow with the
    file). `batches(names)` reads those columns from the start, one {name: values} per
    batch, each value as `EntityTable.columns` would hold it; `notes` as the table's."""

    source: str
    types: dict[str, str]
    num_rows: int
    batches: Callable[[Sequence[str]], Iterator[dict[str, list[Any]]]]
    # The same batches as Arrow arrays of each column's logical type (int64, string, null),
    # where the reader has them: a submitter then stores shards without a Python value per
    # row. None where only `batches` is offered.
    arrow_batches: Callable[[Sequence[str]], Iterator[dict[str, Any]]] | None = None
    notes: dict[str, str] = field(default_factory=dict)
    # The types are those of the file's first block (a CSV file streamed with
    # ``first_block``): reading a column past it raises StreamDeclined where the whole
    # file's typing pass would have typed the column otherwise (or left the file to the
    # exact reader). `num_rows` is the whole file's all the same.
    first_block_types: bool = False

    def table(self) -> EntityTable:
        """Every row at once, for a caller that needs the whole table."""
        columns: dict[str, list[Any]] = {name: [] for name in self.types}
        for batch in self.batches(list(columns)):
            for name, values in batch.items():
                columns[name].extend(values)
        return EntityTable(self.source, columns, self.types, self.notes)


def check_unique(source: str, names: Sequence[str]) -> None:
    """Reject a header or schema that names a column twice."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise EntityFileError(f"{source}: column {name!r} appears twice; rename one of them")
        seen.add(name)


def check_required_columns(
    source: str, available: Sequence[str], required: tuple[str, ...]
) -> None:
    """Reject a file without a required column, listing the columns it does have."""
    missing = [name for name in required if name not in available]
    if missing:
        raise EntityFileError(
            f"{source}: required column(s) {', '.join(map(repr, missing))} not found; the file "
            f"has {', '.join(map(repr, available))}; rename the column in the file or ask for "
            "the key columns it has"
        )


def empty_key_message(source: str, where: str, name: str) -> str:
    """The error text for a null or empty value in a required column."""
    return (
        f"{source}: {where}: required column {name!r} is empty; every entity needs a value "
        "in each key column, so fill it in or drop that row"
    )
