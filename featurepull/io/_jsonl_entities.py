"""Entity rows from a JSONL file: one JSON object per line, one JSON type per column.

Streamed in two passes, as a CSV file is: the first types every column (a type is known
only once every value was seen) and raises any refusal with its line; the second reads the
rows a batch of lines at a time. Memory does not grow with the file.

Lines are parsed by orjson (ten times the json module's speed). The json module's result
and messages stay the rules: a line orjson refuses (bad JSON, or what only the json module
takes: NaN, a byte order mark, a lone surrogate) or that is not an object is parsed again
by it, and so is, in the first pass, a line with a float value (orjson reads an integer
beyond 64 bits as a float; its floats are the json module's, both round correctly).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import orjson

from featurepull.io._entity_table import (
    INT64_MAX,
    INT64_MIN,
    EntityFileError,
    EntityStream,
    EntityTable,
    check_required_columns,
    empty_key_message,
)

_CHUNK_BYTES = 1 << 18  # a batch: this many bytes of lines, a few MB once parsed

_KINDS: dict[type, str] = {bool: "bool", int: "int64", float: "float", str: "string"}

_JSON_TYPE_NAMES = {
    "int64": "an integer",
    "string": "a string",
    "float": "a float",
    "bool": "a boolean",
}


def read_jsonl(stream: BinaryIO, source: str, required: tuple[str, ...]) -> EntityTable:
    """Read a JSONL entity file; the typing rules are in `featurepull.io.entities`."""
    return stream_jsonl(stream, source, required).table()


def stream_jsonl(stream: BinaryIO, source: str, required: tuple[str, ...] = ()
                 ) -> EntityStream:
    """The file as an EntityStream: a first pass types its columns and refuses it as a
    whole read would (the first bad line, then the checks that need every line)."""
    types = _JsonlTypes(source, required)
    for first, lines, parsed in _chunks(stream):
        for line_number, (line, record) in enumerate(zip(lines, parsed, strict=True), first):
            exact = type(record) is not dict
            if exact and (record := _json_line(line, source, line_number)) is None:
                continue
            try:
                types.add(record, line_number, exact)
            except _InexactFloat:  # added again whole: each step of `add` can be repeated
                types.add(_json_object(line, source, line_number), line_number, exact=True)
    kinds = types.finish()

    def batches(names: Sequence[str]) -> Iterator[dict[str, list[Any]]]:
        for first, lines, parsed in _chunks(stream):
            if not all(type(record) is dict for record in parsed):
                parsed = _json_records(first, lines, parsed, source)
            yield {name: [record.get(name) for record in parsed] for name in names}

    return EntityStream(source, kinds, types.rows, batches, notes=dict(types.left_out))


class _InexactFloat(Exception):
    """orjson read a value as a float, which it also makes of an integer beyond 64 bits:
    the json module's reading of its line tells which it was."""


def _chunks(stream: BinaryIO) -> Iterator[tuple[int, list[bytes], list[Any]]]:
    """The file's lines from the start, a chunk at a time: the first one's number, the
    lines, and each line as orjson reads it (None where it refuses the line)."""
    stream.seek(0)
    first = 1
    while lines := stream.readlines(_CHUNK_BYTES):
        try:
            parsed = list(map(orjson.loads, lines))
        except orjson.JSONDecodeError:  # a blank or bad line: each line on its own
            parsed = [_orjson_or_none(line) for line in lines]
        yield first, lines, parsed
        first += len(lines)


def _orjson_or_none(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _json_records(first: int, lines: list[bytes], parsed: list[Any],
                  source: str) -> list[Any]:
    """A chunk's records, each line orjson did not read as an object read by the json
    module instead; blank lines dropped."""
    records = []
    for line_number, (line, record) in enumerate(zip(lines, parsed, strict=True), first):
        if type(record) is dict:
            records.append(record)
        elif (exact := _json_line(line, source, line_number)) is not None:
            records.append(exact)
    return records


def _json_line(line: bytes, source: str, line_number: int) -> dict[str, Any] | None:
    """The line's object by the json module; None for a blank line."""
    return None if not line.strip() else _json_object(line, source, line_number)


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


class _JsonlTypes:
    """Column types from JSONL records: the union of their keys, in order of first
    appearance, each typed by its first non-null value; no value is kept."""

    def __init__(self, source: str, required: tuple[str, ...]) -> None:
        self.source = source
        self.required = required
        self.rows = 0
        # column -> (type, line it was first seen), or None while only nulls were seen
        self.first_seen: dict[str, tuple[str, int] | None] = {}
        self.first_empty: dict[str, int] = {}  # required column -> first line it is empty
        self.left_out: dict[str, str] = {}  # columns holding arrays or objects: not keys

    def add(self, record: dict[str, Any], line_number: int, exact: bool = False) -> None:
        """Type one record's values; a column a record lacks is null there. A float raises
        _InexactFloat unless the record is the json module's (``exact``)."""
        first_seen = self.first_seen
        for name, value in record.items():
            kind = _KINDS.get(type(value))
            if kind is None:
                if value is not None:
                    self._leave_out(name, value, line_number)
                elif name not in self.left_out:
                    first_seen.setdefault(name, None)
                continue
            if kind == "float" and not exact:
                raise _InexactFloat
            seen = first_seen.get(name)
            # The common case first: a column seen before with this type (never left out).
            if seen is None or seen[0] != kind or (
                    kind == "int64" and not INT64_MIN <= value <= INT64_MAX):
                self._check_type(name, kind, value, line_number)
        self.rows += 1
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
        self.first_seen.pop(name, None)

    def _check_type(self, name: str, kind: str, value: Any, line_number: int) -> None:
        if name in self.left_out:
            return
        if kind == "int64" and not INT64_MIN <= value <= INT64_MAX:
            raise EntityFileError(
                f"{self.source}: line {line_number}: column {name!r} value {value} does not "
                "fit in int64; write it as a string"
            )
        seen = self.first_seen.get(name)
        if seen is None:
            self.first_seen[name] = (kind, line_number)
        elif seen[0] != kind:
            was, now = _JSON_TYPE_NAMES[seen[0]], _JSON_TYPE_NAMES[kind]
            raise EntityFileError(
                f"{self.source}: line {line_number}: column {name!r} holds {now}, but line "
                f"{seen[1]} holds {was}; a column needs one JSON type, so write every "
                f"{name!r} value as {was} (e.g. quote numbers that are ids)"
            )

    def finish(self) -> dict[str, str]:
        """Each column's type, after the checks that need every line: rows exist, keys
        are present."""
        if self.rows == 0:
            raise EntityFileError(
                f"{self.source} has no entity rows, only blank lines; "
                "write one JSON object per line"
            )
        if not self.first_seen and self.left_out:
            found = "; ".join(f"{name!r} {note}" for name, note in self.left_out.items())
            raise EntityFileError(
                f"{self.source}: no column can hold entity keys ({found}); write each key "
                'as a JSON number or string, e.g. {"driver_id": 1001}'
            )
        check_required_columns(self.source, list(self.first_seen), self.required)
        if self.first_empty:
            name, line_number = min(self.first_empty.items(), key=lambda item: item[1])
            raise EntityFileError(empty_key_message(self.source, f"line {line_number}", name))
        return {name: "null" if seen is None else seen[0]
                for name, seen in self.first_seen.items()}
