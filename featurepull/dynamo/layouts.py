"""Table layouts: how entity rows become DynamoDB keys, which attributes a request projects,
and how a returned item becomes a row ``(event_timestamp, feature, ...)``.

- :class:`FeastLayout` reads tables written by Feast's DynamoDB online store: hash key
  ``entity_id`` (hex MurmurHash3 of the serialized entity key), ``event_ts`` (S) and a
  ``values`` map of serialized Feast ``Value`` protobufs, decoded into Python values or, with
  ``value_decoder``, by the caller's function (Feast's own ``Value.FromString`` in
  :mod:`featurepull.feast_store`).
- :class:`PlainLayout` reads any table: keys from its key schema, features are top-level
  attributes.
"""

from __future__ import annotations

import re
from binascii import a2b_base64
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any, Protocol

import orjson

from featurepull.arrow_columns import python_columns, time_column
from featurepull.dynamo.attributes import canonical_number, decode_attribute
from featurepull.dynamo.errors import EntityKeyError, ItemDecodeError, TableError
from featurepull.dynamo.feast_keys import EntityKeyEncoder
from featurepull.dynamo.feast_values import (
    EPOCH,
    decode_base64_values,
    decode_value,
    decode_values,
)

Row = tuple[Any, ...]
RowDecoder = Callable[[dict[str, Any]], Row]
RowsDecoder = Callable[[list[dict[str, Any]]], list[Row]]
# All items of one answer as columns: the event times, then each feature's values.
ColumnsDecoder = Callable[[list[dict[str, Any]]], list[list[Any]]]
ValueDecoder = Callable[[bytes], Any]  # one serialized Feast Value -> what a row holds
# DynamoDB's size limits for key attribute values (UTF-8 bytes for strings).
_NOTHING: dict[str, Any] = {}
HASH_KEY_MAX_BYTES = 2048
RANGE_KEY_MAX_BYTES = 1024
# DynamoDB's number range: a magnitude from 1E-130 to 9.99...E+125 (38 digits), or zero.
N_MIN_MAGNITUDE, N_MAX_MAGNITUDE = Decimal("1E-130"), Decimal("1E+126")
# A Feast key list as JSON: [{"entity_id":{"S":"<id>"}},...].
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_KEYS_BEFORE, _KEYS_BETWEEN, _KEYS_AFTER = '[{"entity_id":{"S":"', '"}},{"entity_id":{"S":"', '"}}]'
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Layout(Protocol):
    """What the reader needs to know about a table's shape."""

    name: str
    # Whether row_decoder(base64_values=True) exists: items whose B values are still the
    # base64 text of the wire, decoded only where the decoder reads them.
    decodes_base64: bool

    def check_table(self, table: str, description: Mapping[str, Any]) -> None:
        """Raise TableError when the table's key schema does not fit this layout."""

    def keys_for(self, columns: Mapping[str, Sequence[Any]], source: str = "") -> list[Hashable]:
        """One hashable key per entity row (equal entities give equal keys)."""

    def check_keys(self, columns: Mapping[str, Sequence[Any]], source: str = "") -> None:
        """Raise what :meth:`keys_for` would raise for these columns, without the keys."""

    def wire_key(self, key: Hashable) -> dict[str, Any]:
        """The DynamoDB key (low-level attribute form) of a key from :meth:`keys_for`."""

    def wire_keys_json(self, keys: list[Hashable]) -> Any:
        """The JSON array of :meth:`wire_key` of these keys as an ``orjson.Fragment``
        (serialized once, without a dict per key), or None where only the dicts will do."""

    def key_of(self, item: Mapping[str, Any]) -> Hashable:
        """The key of a returned item (or of an UnprocessedKeys entry)."""

    def item_key(self, item: Mapping[str, Any]) -> Hashable:
        """The key of a scanned item, equal to the one :meth:`keys_for` makes for its
        entity (a Scan's items are joined to the entity rows by it)."""

    def features_of(self, item: Mapping[str, Any]) -> Iterable[str]:
        """The names of the features a returned item holds (of those projected)."""

    def projection(self, features: Sequence[str]) -> dict[str, Any]:
        """ProjectionExpression and ExpressionAttributeNames for these features."""

    def row_decoder(self, features: Sequence[str], base64_values: bool = False) -> RowDecoder:
        """A function from a returned item to ``(event_timestamp, *features)``; with
        ``base64_values`` (only if :attr:`decodes_base64`) B values arrive as base64 text."""

    def rows_decoder(self, features: Sequence[str], base64_values: bool = False) -> RowsDecoder:
        """:meth:`row_decoder` for all items of one answer at once (same rows, same order)."""

    def columns_decoder(self, features: Sequence[str],
                        base64_values: bool = False) -> ColumnsDecoder:
        """The rows of :meth:`rows_decoder` as columns (the same values, not zipped)."""


def parse_event_ts(text: str) -> datetime:
    """Feast writes ``str(aware datetime)``; a naive value is taken as UTC, as Feast does.
    OverflowError for a time whose UTC instant is outside the years 1 to 9999 (only an offset
    carries one there: 9999-12-31T23:00:00-05:00): an output could not be read back by Python
    or pandas, and a job's UTC text could not write it."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    if parsed.year in (1, 9999):
        parsed.astimezone(UTC)  # raises OverflowError past the range
    return parsed


def _outside_utc_years(name: str, shown: object, remedy: str = "") -> ItemDecodeError:
    return ItemDecodeError(f"attribute {name!r} holds {shown!r}, a time outside the years 1 "
                           "to 9999 in UTC: an output holding it could not be read back by "
                           f"Python or pandas; fix the value in the table{remedy}")


def _key_schema(description: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
    return [(k["AttributeName"], k["KeyType"], types[k["AttributeName"]])
            for k in description["KeySchema"]]


def _schema_text(schema: list[tuple[str, str, str]]) -> str:
    return ", ".join(f"{name} {kind} ({atype})" for name, kind, atype in schema)


def _missing_columns(needed: Sequence[str], columns: Mapping[str, Any], source: str) -> None:
    absent = [name for name in needed if name not in columns]
    if absent:
        raise EntityKeyError(
            f"{source or 'the entities'} has no column {', '.join(map(repr, absent))}; "
            f"its columns are {', '.join(map(repr, columns)) or 'none'}"
        )


def _row_error(source: str, row: int, column: str, problem: object) -> EntityKeyError:
    where = f"{source}, " if source else ""
    return EntityKeyError(f"{where}entity row {row + 1}, column {column!r}: {problem}")


class FeastLayout:
    """Tables written by Feast's DynamoDB online store."""

    name = "feast"
    decodes_base64 = True

    def __init__(self, key_types: Mapping[str, str], serialization_version: int = 3,
                 value_decoder: ValueDecoder | None = None,
                 name_length: str | None = None) -> None:
        if not key_types:
            raise EntityKeyError("the feast layout needs at least one join key (--join-keys)")
        self.key_types = dict(key_types)
        self.serialization_version = serialization_version
        self.name_length = name_length
        self.encoder = EntityKeyEncoder(self.key_types, serialization_version, name_length)
        # None: featurepull's own Python values (decode_value, a column of doubles at once).
        self.value_decoder = value_decoder

    def check_table(self, table: str, description: Mapping[str, Any]) -> None:
        schema = _key_schema(description)
        if schema != [("entity_id", "HASH", "S")]:
            raise TableError(
                f"table {table} is keyed by {_schema_text(schema)}, but the feast layout needs "
                "entity_id HASH (S) as Feast's DynamoDB online store writes it; "
                "read this table with --layout plain"
            )

    def keys_for(self, columns: Mapping[str, Sequence[Any]], source: str = "") -> list[Hashable]:
        names = self.encoder.names
        _missing_columns(names, columns, source)
        fast = self.encoder.entity_ids([columns[n] for n in names])
        if fast is not None:
            return list(fast)
        columns = python_columns(columns)
        entity_id = self.encoder.entity_id
        keys: list[Hashable] = []
        for row, values in enumerate(zip(*(columns[n] for n in names), strict=True)):
            try:
                if None in values:
                    raise TypeError("null key value")
                keys.append(entity_id(values))
            except (TypeError, ValueError) as exc:
                name, problem = self.encoder.failing_key(values) or (names[0], exc)
                raise _row_error(source, row, name, problem) from None
        return keys

    def unique_keys_for(self, columns: Mapping[str, Sequence[Any]], source: str = "",
                        ahead: int = 0) -> tuple[Sequence[Hashable], Any]:
        """The distinct keys of :meth:`keys_for`, and for each row the index of its key
        (``BatchReader.read(keys, positions=...)``); None instead of the index when the keys
        could not be de-duplicated before hashing (the reader then does it). With ``ahead``
        the keys past the first ``ahead`` may be hashed as they are read
        (:mod:`featurepull.dynamo.keys_ahead`)."""
        names = self.encoder.names
        _missing_columns(names, columns, source)
        fast = self.encoder.unique_entity_ids([columns[n] for n in names], ahead)
        if fast is not None:
            return fast
        return self.keys_for(columns, source), None

    def check_keys(self, columns: Mapping[str, Sequence[Any]], source: str = "") -> None:
        # Submitting a job checks every key: a pass per column is ~20x cheaper than hashing
        # each; only a column it cannot vouch for is encoded row by row, for the message.
        names = self.encoder.names
        _missing_columns(names, columns, source)
        if not self.encoder.columns_encodable([columns[n] for n in names]):
            self.keys_for(columns, source)

    def wire_key(self, key: Hashable) -> dict[str, Any]:
        return {"entity_id": {"S": key}}

    def wire_keys_json(self, keys: list[Hashable]) -> Any:
        if not keys:
            return orjson.Fragment(b"[]")
        try:
            plain = "".join(keys)  # type: ignore[arg-type]
        except TypeError:  # not all str
            return None
        # Feast ids are hex, which JSON takes as it is (anything else gets the dicts).
        if not plain.isascii() or plain.encode().translate(None, _HEX_DIGITS):
            return None
        joined = _KEYS_BETWEEN.join(keys)  # type: ignore[arg-type]
        return orjson.Fragment(f"{_KEYS_BEFORE}{joined}{_KEYS_AFTER}")

    def key_of(self, item: Mapping[str, Any]) -> Hashable:
        return str(item["entity_id"]["S"])

    def item_key(self, item: Mapping[str, Any]) -> Hashable:
        # keys_for makes the hex entity_id, which is what the table's hash key holds.
        return str(item["entity_id"]["S"])

    def features_of(self, item: Mapping[str, Any]) -> Iterable[str]:
        values = item.get("values")
        return values["M"].keys() if values is not None else ()

    def projection(self, features: Sequence[str]) -> dict[str, Any]:
        names = {"#k": "entity_id", "#t": "event_ts", "#v": "values"}
        paths = ["#k", "#t"]
        for i, feature in enumerate(features):
            names[f"#f{i}"] = feature
            paths.append(f"#v.#f{i}")
        return {"ProjectionExpression": ", ".join(paths), "ExpressionAttributeNames": names}

    def row_decoder(self, features: Sequence[str], base64_values: bool = False) -> RowDecoder:
        wanted = tuple(features)
        # Base64 text straight to the value: one C call per value read, nothing else walked.
        raw: Callable[[Any], bytes] = a2b_base64 if base64_values else bytes
        value = self.value_decoder or decode_value

        def decode(item: dict[str, Any]) -> Row:
            ts = item.get("event_ts")
            stored = item["values"]["M"] if "values" in item else {}
            try:
                # A list comprehension, not a generator: this runs once per row read.
                values = [value(raw(stored[f]["B"])) if f in stored else None
                          for f in wanted]
                return (parse_event_ts(ts["S"]) if ts is not None else None, *values)
            except DECODE_ERRORS as exc:
                error = _feast_item_error(ts, stored, wanted, raw, value)
                if error is None:
                    raise
                raise error from exc

        return decode

    def rows_decoder(self, features: Sequence[str], base64_values: bool = False) -> RowsDecoder:
        columns = self.columns_decoder(features, base64_values)
        return lambda items: list(zip(*columns(items), strict=True))

    def columns_decoder(self, features: Sequence[str],
                        base64_values: bool = False) -> ColumnsDecoder:
        wanted = tuple(features)
        column = _column_decoder(self.value_decoder, base64_values)

        def decode_columns(items: list[dict[str, Any]]) -> list[list[Any]]:
            # A feature at a time: a column of one kind is a few C calls (decode_values).
            stored = [item["values"]["M"] if "values" in item else _NOTHING for item in items]
            columns = [event_times(items)]
            for feature in wanted:
                try:
                    values = [values[feature]["B"] for values in stored]
                except KeyError:  # items without this feature (a sparse one): None there
                    held = [i for i, values in enumerate(stored) if feature in values]
                    found: list[Any] = [None] * len(stored)
                    for i, value in zip(held, column([stored[i][feature]["B"] for i in held]),
                                        strict=True):
                        found[i] = value
                    columns.append(found)
                    continue
                columns.append(column(values))
            return columns

        return decode_columns


# What decoding a malformed item raises (the reader falls back item by item on these).
DECODE_ERRORS = (ValueError, TypeError, KeyError, OverflowError)


def _column_decoder(custom: ValueDecoder | None, base64_values: bool
                    ) -> Callable[[list[Any]], list[Any]]:
    """One feature's stored B values (base64 text or bytes) across an answer's items to
    their values, as the row decoder decodes each."""
    if custom is not None:
        raw: Callable[[Any], bytes] = a2b_base64 if base64_values else bytes
        return lambda values: list(map(custom, list(map(raw, values))))
    if base64_values:
        return decode_base64_values
    return lambda values: decode_values(list(map(bytes, values)))


def event_times(items: list[dict[str, Any]]) -> list[datetime | None]:
    """The ``event_ts`` of each item (None where it has none), as :func:`parse_event_ts`;
    a ``TimeColumn`` keeping the texts when every one is a time in UTC (Feast's own),
    for the Arrow output to parse all at once."""
    try:
        texts = [item["event_ts"]["S"] for item in items]
    except KeyError:  # an item without one
        return [parse_event_ts(item["event_ts"]["S"]) if "event_ts" in item else None
                for item in items]
    try:
        stamps = time_column(map(datetime.fromisoformat, texts), texts, "iso")
    except ValueError:  # a text that is not a time: each in order, to raise what it raises
        return list(map(parse_event_ts, texts))
    # A naive time is taken as UTC, as Feast does; a year 1 or 9999 may be outside them in UTC.
    found_zones = set(map(_zone, stamps))
    if None in found_zones or not _EDGE_YEARS.isdisjoint(map(_year, stamps)):
        return list(map(parse_event_ts, texts))
    return stamps if found_zones == _UTC_ONLY else list(stamps)


_zone = attrgetter("tzinfo")
_year = attrgetter("year")
_EDGE_YEARS = frozenset((1, 9999))
_UTC_ONLY = {UTC}


def _feast_item_error(ts: Any, stored: Mapping[str, Any], features: Sequence[str],
                      raw: Callable[[Any], bytes],
                      value: Callable[[bytes], Any]) -> ItemDecodeError | None:
    """Which part of a Feast item cannot be decoded, and what to do (None: not found)."""
    try:
        if ts is not None:
            parse_event_ts(ts["S"])
    except DECODE_ERRORS as exc:
        shown = next(iter(ts.values()), ts) if isinstance(ts, dict) else ts
        if isinstance(exc, OverflowError):
            return _outside_utc_years("event_ts", shown)
        return ItemDecodeError(f"attribute 'event_ts' holds {shown!r}, which is not a "
                               "date-time as Feast writes it (e.g. '2024-05-01 "
                               "12:00:00+00:00')")
    for feature in features:
        try:
            if feature in stored:
                value(raw(stored[feature]["B"]))
        except DECODE_ERRORS as exc:
            return ItemDecodeError(f"feature {feature!r}: {exc}; fix the value in the table, "
                                   "or leave the feature out of --features")
    return None


class PlainLayout:
    """Any table: key attributes from its key schema, features as top-level attributes."""

    name = "plain"
    decodes_base64 = False

    def __init__(self, key_schema: Sequence[tuple[str, str]],
                 event_ts_attribute: str | None = "event_ts") -> None:
        self.key_schema = list(key_schema)  # [(name, "S"|"N"|"B")], hash key first
        self.event_ts_attribute = event_ts_attribute

    @classmethod
    def from_description(cls, description: Mapping[str, Any],
                         event_ts_attribute: str | None = "event_ts") -> PlainLayout:
        """The layout of a table from its DescribeTable ``Table`` block."""
        schema = sorted(_key_schema(description), key=lambda k: k[1] != "HASH")
        return cls([(name, atype) for name, _, atype in schema], event_ts_attribute)

    def check_table(self, table: str, description: Mapping[str, Any]) -> None:
        schema = sorted(_key_schema(description), key=lambda k: k[1] != "HASH")
        if [(n, t) for n, _, t in schema] != self.key_schema:
            raise TableError(f"table {table} is keyed by {_schema_text(schema)}, "
                             f"not {self.key_schema}")

    def keys_for(self, columns: Mapping[str, Sequence[Any]], source: str = "") -> list[Hashable]:
        names = [name for name, _ in self.key_schema]
        _missing_columns(names, columns, source)
        columns = python_columns(columns)
        limits = (HASH_KEY_MAX_BYTES, RANGE_KEY_MAX_BYTES)
        whole = [_plain_key_column(columns[name], atype, limit)
                 for (name, atype), limit in zip(self.key_schema, limits, strict=False)]
        vouched = [column for column in whole if column is not None]
        if len(vouched) == len(whole):
            return list(vouched[0] if len(vouched) == 1 else zip(*vouched, strict=True))
        return self._keys_by_row(columns, source)

    def _keys_by_row(self, columns: Mapping[str, Sequence[Any]], source: str) -> list[Hashable]:
        """`keys_for` a value at a time: the path whose messages name the row at fault."""
        names = [name for name, _ in self.key_schema]
        limits = (HASH_KEY_MAX_BYTES, RANGE_KEY_MAX_BYTES)
        converters = [_key_converter(atype, limit)
                      for (_, atype), limit in zip(self.key_schema, limits, strict=False)]
        keys: list[Hashable] = []
        single = len(names) == 1
        for row, values in enumerate(zip(*(columns[n] for n in names), strict=True)):
            parts = []
            for name, convert, value in zip(names, converters, values, strict=True):
                try:
                    parts.append(convert(value))
                except (TypeError, ValueError) as exc:
                    raise _row_error(source, row, name, exc) from None
            keys.append(parts[0] if single else tuple(parts))
        return keys

    def check_keys(self, columns: Mapping[str, Sequence[Any]], source: str = "") -> None:
        self.keys_for(columns, source)  # converting is the check (number forms, key sizes)

    def wire_key(self, key: Hashable) -> dict[str, Any]:
        parts = (key,) if len(self.key_schema) == 1 else key
        assert isinstance(parts, tuple)
        return {name: {atype: _wire_value(atype, value)}
                for (name, atype), value in zip(self.key_schema, parts, strict=True)}

    def wire_keys_json(self, keys: list[Hashable]) -> Any:
        return None  # numbers, binaries and any text: orjson serializes the dicts

    def key_of(self, item: Mapping[str, Any]) -> Hashable:
        parts = []
        for name, atype in self.key_schema:
            raw = item[name][atype]
            parts.append(canonical_number(raw) if atype == "N" else raw)
        return parts[0] if len(parts) == 1 else tuple(parts)

    def item_key(self, item: Mapping[str, Any]) -> Hashable:
        # keys_for makes canonical Decimals of N keys, as key_of does of an item's N text.
        return self.key_of(item)

    def features_of(self, item: Mapping[str, Any]) -> Iterable[str]:
        # Every attribute, keys included: a feature may be requested under any name.
        return item.keys()

    def projection(self, features: Sequence[str]) -> dict[str, Any]:
        # Each attribute once: DynamoDB refuses overlapping paths (a feature that is also
        # the key or the event time attribute).
        attributes = [name for name, _ in self.key_schema]
        attributes += [self.event_ts_attribute] if self.event_ts_attribute else []
        attributes += features
        names = {f"#a{i}": name for i, name in enumerate(dict.fromkeys(attributes))}
        return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}

    def row_decoder(self, features: Sequence[str], base64_values: bool = False) -> RowDecoder:
        if base64_values:
            raise ValueError("the plain layout decodes items with bytes values only")
        wanted = tuple(features)
        ts_name = self.event_ts_attribute

        def decode(item: dict[str, Any]) -> Row:
            ts = item.get(ts_name) if ts_name else None
            return (
                _plain_timestamp(ts_name, ts) if ts is not None else None,
                *(decode_attribute(item[f]) if f in item else None for f in wanted),
            )

        return decode

    def rows_decoder(self, features: Sequence[str], base64_values: bool = False) -> RowsDecoder:
        decode = self.row_decoder(features, base64_values)
        return lambda items: [decode(item) for item in items]

    def columns_decoder(self, features: Sequence[str],
                        base64_values: bool = False) -> ColumnsDecoder:
        decode = self.rows_decoder(features, base64_values)
        width = 1 + len(features)
        return lambda items: [list(values) for values in zip(*decode(items), strict=True)] \
            if items else [[] for _ in range(width)]


_WITHOUT_TIMES = ", or pass --event-ts-attribute '' to read without one"


def _plain_timestamp(name: str | None, value: dict[str, Any]) -> datetime | None:
    try:
        if "S" in value:
            return parse_event_ts(value["S"])
        if "N" in value:
            return EPOCH + timedelta(seconds=float(Decimal(value["N"])))
    except DECODE_ERRORS as exc:
        shown = next(iter(value.values()))
        if isinstance(exc, OverflowError):
            raise _outside_utc_years(str(name), shown, _WITHOUT_TIMES) from None
        raise ItemDecodeError(
            f"attribute {name!r} holds {shown!r}, which is not a date-time (ISO 8601 text or "
            "Unix seconds); name the attribute that holds the event time with "
            f"--event-ts-attribute{_WITHOUT_TIMES}"
        ) from None
    return None


def _plain_key_column(values: Sequence[Any], atype: str, max_bytes: int) -> Sequence[Any] | None:
    """A whole key column converted as `_key_converter` converts each value, where a pass
    over the column vouches for every value: text of one to `max_bytes` UTF-8 bytes, bytes
    of that size, ints within 64 bits (a Decimal each, as the number's text would give).
    None: convert value by value, to name the row at fault."""
    kinds = set(map(type, values))
    if not kinds:
        return values
    if kinds == {int} and atype == "N":
        if min(values) >= -(2**63) and max(values) < 2**63:  # 19 digits at most
            return list(map(Decimal, values))
        return None
    if kinds != ({str} if atype == "S" else {bytes} if atype == "B" else None):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        sizes = pc.min_max(pc.binary_length(pa.array(values))).as_py()
    except (pa.ArrowException, ValueError):  # text that is not UTF-8 (a lone surrogate)
        return None
    return values if sizes["min"] > 0 and sizes["max"] <= max_bytes else None


def _wire_value(atype: str, value: Any) -> Any:
    return format(value, "f") if atype == "N" else value


def _key_converter(atype: str, max_bytes: int) -> Callable[[Any], Hashable]:
    def to_s(value: Any) -> str:
        if value is None or isinstance(value, bytes | bytearray):
            raise TypeError("null key value" if value is None else "bytes given for a string key")
        text = str(value)
        size = len(text.encode("utf8"))
        if size == 0:
            raise ValueError("empty string (DynamoDB keys cannot be empty)")
        if size > max_bytes:
            raise ValueError(f"key is {size} bytes; DynamoDB allows at most {max_bytes}")
        return text

    def to_n(value: Any) -> Decimal:
        if value is None or isinstance(value, bool):
            raise TypeError("null key value" if value is None else "a bool is not a number")
        number = canonical_number(str(value))
        if not number.is_finite():
            raise ValueError(f"{value} is not a finite number")
        if isinstance(value, str) and not _NUMBER_TEXT.fullmatch(value):
            # Decimal() also takes "1_00" (as 100), " 1" and non-ASCII digits.
            raise ValueError(f"{value!r} is not a number as DynamoDB writes one (digits, an "
                             "optional sign, point and exponent: no spaces or underscores)")
        if len(number.as_tuple().digits) > 38:
            raise ValueError(f"{value} has more than DynamoDB's 38 significant digits")
        if number and not N_MIN_MAGNITUDE <= number.copy_abs() < N_MAX_MAGNITUDE:
            raise ValueError(f"{value} is outside DynamoDB's number range (a magnitude from "
                             "1E-130 to below 1E+126, or 0)")
        return number

    def to_b(value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray):
            raise TypeError("binary keys need a binary Parquet column")
        if not 0 < len(value) <= max_bytes:
            raise ValueError(f"key is {len(value)} bytes; DynamoDB allows 1 to {max_bytes}")
        return bytes(value)

    return {"S": to_s, "N": to_n, "B": to_b}[atype]


class _KeysFor(Protocol):
    def keys_for(self, columns: Mapping[str, Sequence[Any]],
                 source: str = "") -> list[Hashable]: ...


def unique_keys(layout: _KeysFor, columns: Mapping[str, Sequence[Any]], source: str = "",
                ahead: int = 0) -> tuple[Sequence[Hashable], Any]:
    """``keys`` and ``positions`` for ``BatchReader.read``: the distinct keys and each row's
    index among them where the layout can tell before hashing (one Feast join key), else
    every row's key and None (the reader de-duplicates). With ``ahead`` (the keys of the
    read's first requests) the keys may be a ``KeysAhead``: the rest hashed by the read
    between turns of its loop, or on a thread if started (``BatchReader.read`` joins it)."""
    if isinstance(layout, FeastLayout):
        return layout.unique_keys_for(columns, source, ahead)
    return layout.keys_for(columns, source), None
