"""Entity rows from a JSONL file: one JSON object per line, one JSON type per column."""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from featurepull.io._entity_table import (
    INT64_MAX,
    INT64_MIN,
    EntityFileError,
    EntityTable,
    check_required_columns,
    empty_key_message,
)

_JSON_TYPE_NAMES = {
    "int64": "an integer",
    "string": "a string",
    "float": "a float",
    "bool": "a boolean",
}


def read_jsonl(stream: BinaryIO, source: str, required: tuple[str, ...]) -> EntityTable:
    """Read a JSONL entity file; the typing rules are in `featurepull.io.entities`."""
    builder = _JsonlColumns(source, required)
    for line_number, line in enumerate(stream, start=1):
        if line.strip():
            builder.add(_json_object(line, source, line_number), line_number)
    return builder.finish()


def _json_object(line: bytes, source: str, line_number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EntityFileError(
            f"{source}: line {line_number} is not valid JSON ({exc.msg} at column {exc.colno}); "
            "write one JSON object per line"
        ) from None
    except UnicodeDecodeError as exc:
        raise EntityFileError(
            f"{source}: line {line_number} is not UTF-8 text ({exc.reason}); save the file as UTF-8"
        ) from None
    if not isinstance(record, dict):
        raise EntityFileError(
            f"{source}: line {line_number} is a JSON {type(record).__name__}, not an object; "
            'write one object per line, e.g. {"driver_id": 1001}'
        )
    return record


class _JsonlColumns:
    """Columns built from JSONL records: the union of their keys, in order of first appearance."""

    def __init__(self, source: str, required: tuple[str, ...]) -> None:
        self.source = source
        self.required = required
        self.rows = 0
        self.columns: dict[str, list[Any]] = {}
        self.first_seen: dict[str, tuple[str, int]] = {}  # column -> (type, line it was seen)
        self.first_empty: dict[str, int] = {}  # required column -> first line it is empty
        self.left_out: dict[str, str] = {}  # columns holding arrays or objects: not keys

    def add(self, record: dict[str, Any], line_number: int) -> None:
        """Append one record; columns it lacks get a null."""
        for name, value in record.items():
            if isinstance(value, list | dict):
                self._leave_out(name, value, line_number)
            if name in self.left_out:
                continue
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = [None] * self.rows
            if value is not None:
                self._check_type(name, value, line_number)
            column.append(value)
        self.rows += 1
        for column in self.columns.values():
            if len(column) < self.rows:
                column.append(None)
        for name in self.required:
            if name not in self.first_empty and record.get(name) in (None, ""):
                self.first_empty[name] = line_number

    def _leave_out(self, name: str, value: Any, line_number: int) -> None:
        # Like a Parquet column of a non-key type: fine as payload, an error as a key column.
        kind = "array" if isinstance(value, list) else "object"
        if name in self.required:
            raise EntityFileError(
                f"{self.source}: line {line_number}: column {name!r} holds a JSON {kind}; "
                "entity keys must be numbers, strings or booleans"
            )
        self.left_out.setdefault(name, f"holds a JSON {kind} on line {line_number}")
        self.columns.pop(name, None)
        self.first_seen.pop(name, None)

    def _check_type(self, name: str, value: Any, line_number: int) -> None:
        kind = _json_value_type(value, self.source, name, line_number)
        seen = self.first_seen.setdefault(name, (kind, line_number))
        if seen[0] != kind:
            was, now = _JSON_TYPE_NAMES[seen[0]], _JSON_TYPE_NAMES[kind]
            raise EntityFileError(
                f"{self.source}: line {line_number}: column {name!r} holds {now}, but line "
                f"{seen[1]} holds {was}; a column needs one JSON type, so write every "
                f"{name!r} value as {was} (e.g. quote numbers that are ids)"
            )

    def finish(self) -> EntityTable:
        """The table, after the checks that need every line: rows exist, keys are present."""
        if self.rows == 0:
            raise EntityFileError(
                f"{self.source} has no entity rows, only blank lines; "
                "write one JSON object per line"
            )
        if not self.columns and self.left_out:
            found = "; ".join(f"{name!r} {note}" for name, note in self.left_out.items())
            raise EntityFileError(
                f"{self.source}: no column can hold entity keys ({found}); write each key "
                'as a JSON number or string, e.g. {"driver_id": 1001}'
            )
        check_required_columns(self.source, list(self.columns), self.required)
        if self.first_empty:
            name, line_number = min(self.first_empty.items(), key=lambda item: item[1])
            raise EntityFileError(empty_key_message(self.source, f"line {line_number}", name))
        types = {name: self.first_seen.get(name, ("null", 0))[0] for name in self.columns}
        return EntityTable(self.source, self.columns, types, dict(self.left_out))


def _json_value_type(value: Any, source: str, name: str, line_number: int) -> str:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "bool"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise EntityFileError(
                f"{source}: line {line_number}: column {name!r} value {value} does not fit in "
                "int64; write it as a string"
            )
        return "int64"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    # Arrays and objects never get here: add() leaves their columns out first.
    raise AssertionError(f"unexpected JSON value of type {type(value).__name__}")
