"""The plain layout against real tables on the moto endpoint: keys from the table's key
schema, every DynamoDB attribute type decoded to Python, event timestamps, awkward feature
names, and the key errors a user can act on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from featurepull.config import DynamoSettings
from featurepull.dynamo import (
    BatchReader,
    EntityKeyError,
    PlainLayout,
    TableError,
    UnknownFeatureError,
)
from featurepull.dynamo.errors import ItemDecodeError
from tests.conftest import REGION, unique_name

# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------

# Every DynamoDB type as a top-level attribute, with the Python value it must decode to.
# moto keeps number text as written ("1.0", "1E+2"); real DynamoDB normalizes it to "1"
# and "100". Either way the decoded value is the same.
TYPED_ATTRIBUTES: dict[str, tuple[dict[str, Any], Any]] = {
    "n_int": ({"N": "42"}, 42),
    "n_negative": ({"N": "-7"}, -7),
    "n_one_point_zero": ({"N": "1.0"}, 1),
    "n_exponent": ({"N": "1E+2"}, 100),
    "n_38_digits": ({"N": "12345678901234567890123456789012345678"},
                    12345678901234567890123456789012345678),
    "n_fraction": ({"N": "0.25"}, 0.25),
    "n_trailing_zero": ({"N": "2.50"}, 2.5),
    "s": ({"S": "héllo, wörld"}, "héllo, wörld"),
    "b": ({"B": b"\x00\xffbin"}, b"\x00\xffbin"),
    "bool_true": ({"BOOL": True}, True),
    "bool_false": ({"BOOL": False}, False),
    "null": ({"NULL": True}, None),
    "ss": ({"SS": ["pear", "apple", "fig"]}, ["apple", "fig", "pear"]),
    "ns": ({"NS": ["10", "2", "1.5", "-3"]}, [-3, 1.5, 2, 10]),
    "bs": ({"BS": [b"\x02", b"\x01\x00", b"\x01"]}, [b"\x01", b"\x01\x00", b"\x02"]),
    "m": (
        {"M": {"n": {"N": "3"}, "f": {"N": "0.5"}, "l": {"L": [{"S": "x"}, {"NULL": True}]},
               "inner": {"M": {"flag": {"BOOL": False}, "tags": {"SS": ["b", "a"]}}}}},
        {"n": 3, "f": 0.5, "l": ["x", None], "inner": {"flag": False, "tags": ["a", "b"]}},
    ),
    "l": (
        {"L": [{"N": "1"}, {"N": "2.5"}, {"S": "s"}, {"B": b"\x01"}, {"M": {"k": {"N": "1E+1"}}},
               {"L": []}]},
        [1, 2.5, "s", b"\x01", {"k": 10}, []],
    ),
}
TYPED_FEATURES = list(TYPED_ATTRIBUTES)

# Reserved words, a dotted name (one top-level attribute, not a path), and a space.
AWKWARD_FEATURES = ["size", "name", "status", "a.b", "trips today"]
AWKWARD_ATTRIBUTES = {
    "size": {"N": "3"},
    "name": {"S": "reserved"},
    "status": {"S": "active"},
    "a.b": {"S": "top-level a.b"},
    "a": {"M": {"b": {"S": "the path a.b"}}},
    "trips today": {"N": "11"},
}

ISO_TS = "2026-01-02T03:04:05.123456+00:00"
EPOCH_TS = 1_767_323_045


@pytest.fixture(scope="module")
def settings(endpoint_url: str) -> DynamoSettings:
    return DynamoSettings(region=REGION, endpoint_url=endpoint_url,
                          retry_base_delay_s=0.005, retry_max_delay_s=0.1)


def create_table(ddb: Any, keys: list[tuple[str, str, str]]) -> str:
    """A pay-per-request table keyed by ``[(name, "HASH"|"RANGE", "S"|"N"|"B")]``."""
    name = unique_name("plain")
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": n, "KeyType": kind} for n, kind, _ in keys],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, _, t in keys],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def put(ddb: Any, table: str, item: dict[str, Any]) -> None:
    ddb.put_item(TableName=table, Item=item)


@pytest.fixture(scope="module")
def composite_table(ddb: Any) -> str:
    """Hash ``id`` (N) + range ``sort`` (S); ``event_ts`` as ISO text."""
    table = create_table(ddb, [("id", "HASH", "N"), ("sort", "RANGE", "S")])
    put(ddb, table, {"id": {"N": "1"}, "sort": {"S": "typed"}, "event_ts": {"S": ISO_TS},
                     **{name: wire for name, (wire, _) in TYPED_ATTRIBUTES.items()}})
    put(ddb, table, {"id": {"N": "1"}, "sort": {"S": "awkward"},
                     "event_ts": {"S": "2026-01-02T03:04:05"}, **AWKWARD_ATTRIBUTES})
    put(ddb, table, {"id": {"N": "2"}, "sort": {"S": "typed"},
                     "event_ts": {"S": "2026-01-02T05:04:05+02:00"}, "n_int": {"N": "2"}})
    put(ddb, table, {"id": {"N": "5"}, "sort": {"S": "five"}, "s": {"S": "stored as 5"}})
    # Keys exactly at DynamoDB's range key limit are valid and readable.
    put(ddb, table, {"id": {"N": "3"}, "sort": {"S": "r" * 1024}, "s": {"S": "long range"}})
    return table


@pytest.fixture(scope="module")
def string_table(ddb: Any) -> str:
    """Hash ``id`` (S) only; ``event_ts`` as epoch seconds (N)."""
    table = create_table(ddb, [("id", "HASH", "S")])
    put(ddb, table, {"id": {"S": "u1"}, "event_ts": {"N": str(EPOCH_TS)}, "s": {"S": "one"}})
    put(ddb, table, {"id": {"S": "ünï-☃"}, "event_ts": {"N": "0"}, "s": {"S": "unicode"}})
    put(ddb, table, {"id": {"S": "no-ts"}, "s": {"S": "no event_ts"}})
    put(ddb, table, {"id": {"S": "x" * 2048}, "s": {"S": "long hash"}})
    return table


@pytest.fixture(scope="module")
def binary_table(ddb: Any) -> str:
    """Hash ``id`` (B) only, and no ``event_ts`` attribute on any item."""
    table = create_table(ddb, [("id", "HASH", "B")])
    put(ddb, table, {"id": {"B": b"\x00\x01"}, "s": {"S": "zero-one"}, "n_int": {"N": "1"}})
    put(ddb, table, {"id": {"B": b"\xff" * 2048}, "s": {"S": "long binary"}})
    return table


def plain_layout(table: str, settings: DynamoSettings) -> PlainLayout:
    """The layout the table's own DescribeTable answer gives."""
    return PlainLayout.from_description(BatchReader(table, PlainLayout([]), settings).describe())


def plain_reader(table: str, settings: DynamoSettings) -> BatchReader:
    """A reader of the table with the layout from its key schema."""
    return BatchReader(table, plain_layout(table, settings), settings)


def read_rows(reader: BatchReader, columns: dict[str, list[Any]],
              features: list[str], allow_missing_features: bool = False) -> list[Any]:
    keys = reader.layout.keys_for(columns, source="test")
    return reader.read(keys, features, allow_missing_features=allow_missing_features).rows


def exactly(value: Any) -> Any:
    """A value with its types spelled out, so 1 and 1.0 (or True and 1) never compare equal."""
    if isinstance(value, dict):
        return {k: exactly(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [exactly(v) for v in value]
    return (type(value).__name__, value)


# ---------------------------------------------------------------------------------------
# Layout from the table's key schema
# ---------------------------------------------------------------------------------------


def test_layout_from_description_lists_hash_then_range_with_types(
    composite_table: str, string_table: str, binary_table: str, settings: DynamoSettings
) -> None:
    assert plain_layout(composite_table, settings).key_schema == [("id", "N"), ("sort", "S")]
    assert plain_layout(string_table, settings).key_schema == [("id", "S")]
    assert plain_layout(binary_table, settings).key_schema == [("id", "B")]


def test_single_key_tables_use_the_bare_value_as_key_and_composite_a_tuple(
    composite_table: str, string_table: str, settings: DynamoSettings
) -> None:
    single = plain_layout(string_table, settings)
    composite = plain_layout(composite_table, settings)
    assert single.keys_for({"id": ["a", "b"]}) == ["a", "b"]
    assert composite.keys_for({"id": [1], "sort": ["x"]}) == [(Decimal(1), "x")]


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------


def test_every_attribute_type_decodes_to_its_python_value(
    composite_table: str, settings: DynamoSettings
) -> None:
    reader = plain_reader(composite_table, settings)
    [row] = read_rows(reader, {"id": [1], "sort": ["typed"]}, TYPED_FEATURES)
    assert row is not None
    decoded = dict(zip(TYPED_FEATURES, row[1:], strict=True))
    expected = {name: value for name, (_, value) in TYPED_ATTRIBUTES.items()}
    assert exactly(decoded) == exactly(expected)


def test_features_absent_from_a_found_item_are_none(
    composite_table: str, settings: DynamoSettings
) -> None:
    reader = plain_reader(composite_table, settings)
    # Held by no item found: refused as likely typos unless allowed.
    with pytest.raises(UnknownFeatureError, match="attributes 's', 'never_written' are held "
                       "by none of the 1 item found") as refused:
        read_rows(reader, {"id": [2], "sort": ["typed"]}, ["n_int", "s", "never_written"])
    assert refused.value.missing == ["s", "never_written"]
    assert refused.value.held is not None and {"id", "sort", "n_int"} <= set(refused.value.held)
    [row] = read_rows(reader, {"id": [2], "sort": ["typed"]}, ["n_int", "s", "never_written"],
                      allow_missing_features=True)
    assert row is not None and row[1:] == (2, None, None)


def test_reserved_dotted_and_spaced_feature_names_read_top_level_attributes(
    composite_table: str, settings: DynamoSettings
) -> None:
    reader = plain_reader(composite_table, settings)
    [row] = read_rows(reader, {"id": [1], "sort": ["awkward"]}, [*AWKWARD_FEATURES, "a"])
    assert row is not None
    assert row[1:] == (3, "reserved", "active", "top-level a.b", 11, {"b": "the path a.b"})


# ---------------------------------------------------------------------------------------
# Event timestamps
# ---------------------------------------------------------------------------------------


def test_event_ts_as_iso_text_becomes_an_aware_datetime(
    composite_table: str, settings: DynamoSettings
) -> None:
    reader = plain_reader(composite_table, settings)
    rows = read_rows(reader, {"id": [1, 1, 2], "sort": ["typed", "awkward", "typed"]}, ["s"])
    timestamps = [row[0] for row in rows]
    assert timestamps == [
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # naive text is taken as UTC
        datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
    ]
    assert all(ts.tzinfo is not None for ts in timestamps)
    assert timestamps[2] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_event_ts_as_epoch_seconds_becomes_an_aware_utc_datetime(
    string_table: str, settings: DynamoSettings
) -> None:
    reader = plain_reader(string_table, settings)
    rows = read_rows(reader, {"id": ["u1", "ünï-☃", "no-ts"]}, ["s"])
    assert rows == [
        (datetime.fromtimestamp(EPOCH_TS, UTC), "one"),
        (datetime(1970, 1, 1, tzinfo=UTC), "unicode"),
        (None, "no event_ts"),  # found, but this item has no event_ts
    ]
    assert rows[0][0].tzinfo is UTC


def test_table_without_event_ts_gives_none_timestamps_for_found_rows(
    binary_table: str, settings: DynamoSettings
) -> None:
    reader = plain_reader(binary_table, settings)
    rows = read_rows(reader, {"id": [b"\x00\x01", b"absent"]}, ["s", "n_int"])
    assert rows == [(None, "zero-one", 1), None]


# ---------------------------------------------------------------------------------------
# Order, duplicates, absent keys, number keys
# ---------------------------------------------------------------------------------------


def test_rows_follow_input_order_with_duplicates_and_absent_keys(
    composite_table: str, settings: DynamoSettings
) -> None:
    reader = plain_reader(composite_table, settings)
    ids = [2, 1, 99, 2, 1, 1, 5, 2]
    sorts = ["typed", "awkward", "typed", "typed", "nope", "awkward", "five", "nope"]
    keys = reader.layout.keys_for({"id": ids, "sort": sorts}, source="test")
    result = reader.read(keys, ["s", "status"])
    awkward = (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None, "active")
    two = (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None, None)
    assert result.rows == [two, awkward, None, two, None, awkward, (None, "stored as 5", None),
                           None]
    assert (result.stats.keys, result.stats.unique_keys) == (8, 6)
    assert (result.stats.found, result.stats.missing) == (5, 3)


@pytest.mark.parametrize("given", [5, "5", 5.0, "5.0", "5E0", "5.000", Decimal("5")],
                         ids=repr)
def test_number_key_in_any_spelling_finds_the_item_stored_as_n_5(
    composite_table: str, settings: DynamoSettings, given: Any
) -> None:
    reader = plain_reader(composite_table, settings)
    rows = read_rows(reader, {"id": [given], "sort": ["five"]}, ["s"])
    assert rows == [(None, "stored as 5")]


def test_number_keys_in_different_spellings_are_one_key_and_all_rows_found(
    composite_table: str, settings: DynamoSettings
) -> None:
    reader = plain_reader(composite_table, settings)
    # The float first: its "5.0" is what goes on the wire, and the item comes back as "5".
    spellings = [5.0, 5, "5", Decimal("5.00")]
    keys = reader.layout.keys_for({"id": spellings, "sort": ["five"] * 4})
    result = reader.read(keys, ["s"])
    assert result.rows == [(None, "stored as 5")] * 4
    assert result.stats.unique_keys == 1


def test_string_and_binary_hash_keys_read_found_and_absent(
    string_table: str, binary_table: str, settings: DynamoSettings
) -> None:
    strings = plain_reader(string_table, settings)
    assert [row and row[1] for row in read_rows(strings, {"id": ["ünï-☃", "U1", "u1"]}, ["s"])] \
        == ["unicode", None, "one"]
    binary = plain_reader(binary_table, settings)
    assert [row and row[1] for row in read_rows(binary, {"id": [b"\x00", b"\x00\x01"]}, ["s"])] \
        == [None, "zero-one"]


def test_keys_exactly_at_the_size_limits_are_accepted_and_read(
    composite_table: str, string_table: str, binary_table: str, settings: DynamoSettings
) -> None:
    found = [
        read_rows(plain_reader(string_table, settings), {"id": ["x" * 2048]}, ["s"]),
        read_rows(plain_reader(binary_table, settings), {"id": [b"\xff" * 2048]}, ["s"]),
        read_rows(plain_reader(composite_table, settings),
                  {"id": [3], "sort": ["r" * 1024]}, ["s"]),
    ]
    assert [rows[0][1] for rows in found] == ["long hash", "long binary", "long range"]


# ---------------------------------------------------------------------------------------
# Key errors: raised by keys_for, naming the row, the column and the limit
# ---------------------------------------------------------------------------------------

S_KEY = PlainLayout([("id", "S")])
N_KEY = PlainLayout([("id", "N")])
B_KEY = PlainLayout([("id", "B")])
N_S_KEYS = PlainLayout([("id", "N"), ("sort", "S")])


def key_error(layout: PlainLayout, columns: dict[str, list[Any]]) -> str:
    with pytest.raises(EntityKeyError) as caught:
        layout.keys_for(columns, source="test")
    return str(caught.value)


def test_hash_key_over_2048_bytes_names_row_column_and_limit() -> None:
    # 1,025 two-byte characters: under 2,048 characters, over 2,048 UTF-8 bytes.
    message = key_error(S_KEY, {"id": ["fine", "x" * 2048, "é" * 1025]})
    assert message == ("test, entity row 3, column 'id': key is 2050 bytes; "
                       "DynamoDB allows at most 2048")


def test_binary_hash_key_over_2048_bytes_names_the_limit() -> None:
    message = key_error(B_KEY, {"id": [b"\x01" * 2049]})
    assert message == "test, entity row 1, column 'id': key is 2049 bytes; DynamoDB allows 1 to 2048"


def test_range_key_over_1024_bytes_names_row_column_and_limit() -> None:
    message = key_error(N_S_KEYS, {"id": [1, 2], "sort": ["r" * 1024, "r" * 1025]})
    assert message == ("test, entity row 2, column 'sort': key is 1025 bytes; "
                       "DynamoDB allows at most 1024")


@pytest.mark.parametrize(
    ("layout", "value", "problem"),
    [
        (S_KEY, "", "empty string (DynamoDB keys cannot be empty)"),
        (S_KEY, None, "null key value"),
        (S_KEY, b"abc", "bytes given for a string key"),
        (N_KEY, None, "null key value"),
        (N_KEY, float("nan"), "nan is not a finite number"),
        (N_KEY, float("inf"), "inf is not a finite number"),
        (N_KEY, True, "a bool is not a number"),
        (N_KEY, "five", "'five' is not a number"),
        (B_KEY, "abc", "binary keys need a binary Parquet column"),
        (B_KEY, b"", "key is 0 bytes; DynamoDB allows 1 to 2048"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, PlainLayout) else v.key_schema[0][1],
)
def test_invalid_key_value_is_an_entity_key_error_naming_the_row(
    layout: PlainLayout, value: Any, problem: str
) -> None:
    message = key_error(layout, {"id": ["1" if layout is not B_KEY else b"1", value]})
    assert message == f"test, entity row 2, column 'id': {problem}"


@pytest.mark.parametrize("value", ["NaN", "nan", "sNaN", "Infinity", "-inf", Decimal("NaN")], ids=repr)
def test_non_finite_number_text_for_an_n_key_is_an_entity_key_error(value: Any) -> None:
    message = key_error(N_KEY, {"id": [value]})
    assert message.startswith("test, entity row 1, column 'id': ")
    assert "not a finite number" in message


def test_number_key_over_38_digits_is_refused() -> None:
    message = key_error(N_KEY, {"id": ["1" * 39]})
    assert "more than DynamoDB's 38 significant digits" in message


def test_feature_that_is_also_the_key_or_event_time_is_projected_once() -> None:
    projection = PlainLayout([("id", "N")]).projection(["id", "event_ts", "x"])
    assert sorted(projection["ExpressionAttributeNames"].values()) == ["event_ts", "id", "x"]


def test_missing_key_column_names_the_source_and_its_columns() -> None:
    message = key_error(N_S_KEYS, {"id": [1], "other": ["x"]})
    assert message == "test has no column 'sort'; its columns are 'id', 'other'"


# ---------------------------------------------------------------------------------------
# Table errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [PlainLayout([("id", "S")]), PlainLayout([("id", "N")]),
     PlainLayout([("id", "S"), ("sort", "S")]), PlainLayout([("sort", "S"), ("id", "N")])],
    ids=lambda layout: ",".join(f"{n}:{t}" for n, t in layout.key_schema),
)
def test_layout_with_another_key_schema_is_a_table_error(
    composite_table: str, settings: DynamoSettings, layout: PlainLayout
) -> None:
    description = BatchReader(composite_table, layout, settings).describe()
    expected = (f"table {composite_table} is keyed by id HASH (N), sort RANGE (S), "
                f"not {layout.key_schema}")
    with pytest.raises(TableError) as direct:
        layout.check_table(composite_table, description)
    assert str(direct.value) == expected
    # The reader checks before its first request.
    reader = BatchReader(composite_table, layout, settings)
    with pytest.raises(TableError) as via_read:
        reader.read([("1", "x")], ["s"])
    assert str(via_read.value) == expected


def test_matching_layout_passes_check_table(
    composite_table: str, settings: DynamoSettings
) -> None:
    reader = BatchReader(composite_table, N_S_KEYS, settings)
    N_S_KEYS.check_table(composite_table, reader.describe())
    reader.check_table()


@pytest.mark.parametrize(
    "attempt",
    [lambda r: r.describe(), lambda r: r.read(["k"], ["s"])],
    ids=["describe", "read"],
)
def test_reading_a_table_that_does_not_exist_names_table_region_and_endpoint(
    settings: DynamoSettings, endpoint_url: str, attempt: Callable[[BatchReader], object]
) -> None:
    table = unique_name("missing")
    reader = BatchReader(table, S_KEY, settings)
    with pytest.raises(TableError) as caught:
        attempt(reader)
    message = str(caught.value)
    assert message.startswith(f"table {table} (region {REGION}, endpoint {endpoint_url}) "
                              "does not exist")
    assert "--table" in message


def test_the_hash_key_comes_first_whatever_the_names_and_their_order() -> None:
    # The range key's name sorts first, and DescribeTable lists it first.
    description = {
        "KeySchema": [{"AttributeName": "a_when", "KeyType": "RANGE"},
                      {"AttributeName": "z_user", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "z_user", "AttributeType": "S"},
                                 {"AttributeName": "a_when", "AttributeType": "N"}],
    }
    layout = PlainLayout.from_description(description)
    assert layout.key_schema == [("z_user", "S"), ("a_when", "N")]
    layout.check_table("events", description)  # its own table fits
    with pytest.raises(TableError, match=r"table events is keyed by z_user HASH \(S\), "
                                         r"a_when RANGE \(N\), not \[\('a_when', 'N'\)"):
        PlainLayout([("a_when", "N"), ("z_user", "S")]).check_table("events", description)


def test_a_number_key_of_exactly_38_digits_is_accepted() -> None:
    layout = PlainLayout([("n", "N")])
    assert layout.keys_for({"n": [int("9" * 38)]}) == [Decimal("9" * 38)]


# ---------------------------------------------------------------------------------------
# Wire forms, and what the layout says about items it cannot take (word for word)
# ---------------------------------------------------------------------------------------

def test_plain_wire_forms() -> None:
    plain = PlainLayout([("id", "N")], event_ts_attribute=None)
    key = plain.keys_for({"id": [Decimal("1E+3")]})[0]
    assert plain.wire_key(key) == {"id": {"N": "1000"}}
    assert plain.projection(["x", "id"]) == {"ProjectionExpression": "#a0, #a1",
                                            "ExpressionAttributeNames": {"#a0": "id",
                                                                         "#a1": "x"}}
    timed = PlainLayout([("id", "N"), ("s", "S")])
    assert timed.projection(["x"]) == {
        "ProjectionExpression": "#a0, #a1, #a2, #a3",
        "ExpressionAttributeNames": {"#a0": "id", "#a1": "s", "#a2": "event_ts", "#a3": "x"}}


def test_plain_decodes_bytes_values_only() -> None:
    with pytest.raises(ValueError) as caught:
        PlainLayout([("id", "S")]).row_decoder(["x"], base64_values=True)
    assert str(caught.value) == "the plain layout decodes items with bytes values only"


NOT_A_DATE = ("which is not a date-time (ISO 8601 text or Unix seconds); name the attribute "
              "that holds the event time with --event-ts-attribute")
# Year 10000 or 0 in UTC: an output would hold what Python cannot read back.
OUTSIDE = ("a time outside the years 1 to 9999 in UTC: an output holding it could not be read "
           "back by Python or pandas; fix the value in the table")


@pytest.mark.parametrize(("ts", "problem"), [
    ({"S": "yesterday"}, NOT_A_DATE), ({"N": "NaN"}, NOT_A_DATE),
    ({"S": "9999-12-31T23:00:00-05:00"}, OUTSIDE), ({"S": "0001-01-01T00:00:00+05:00"}, OUTSIDE),
    ({"N": "253402300800"}, OUTSIDE), ({"N": "1e400"}, OUTSIDE)])
def test_plain_event_time_that_is_not_a_date(ts: dict[str, str], problem: str) -> None:
    layout = PlainLayout([("id", "S")], event_ts_attribute="seen")
    with pytest.raises(ItemDecodeError) as caught:
        layout.row_decoder(["x"])({"id": {"S": "k"}, "seen": ts})
    assert str(caught.value) == (
        f"attribute 'seen' holds {next(iter(ts.values()))!r}, {problem}, or pass "
        "--event-ts-attribute '' to read without one")
    edge = {"S": "9999-12-31T23:00:00+05:00"}  # 18:00 in UTC
    assert layout.row_decoder(["x"])({"id": {"S": "k"}, "seen": edge})[0].year == 9999


def test_plain_rows_decoder_decodes_each_item() -> None:
    layout = PlainLayout([("id", "S")])
    items = [{"id": {"S": "a"}, "x": {"N": "1"}}, {"id": {"S": "b"}, "event_ts": {"BOOL": True}}]
    assert layout.rows_decoder(["x"])(items) == [(None, 1), (None, None)]


def test_plain_columns_decoder_gives_the_rows_as_columns() -> None:
    layout = PlainLayout([("id", "S")], event_ts_attribute="seen")
    items = [{"id": {"S": "a"}, "x": {"N": "1"}, "seen": {"N": "60"}},
             {"id": {"S": "b"}, "y": {"S": "t"}}]
    decode = layout.columns_decoder(["x", "y"])
    assert decode(items) == [[datetime(1970, 1, 1, 0, 1, tzinfo=UTC), None], [1, None],
                             [None, "t"]]
    assert decode([]) == [[], [], []]  # one empty column per feature and the event time
    assert layout.columns_decoder([])([]) == [[]]
    with pytest.raises(ValueError, match=r"^the plain layout decodes items with bytes values"):
        layout.columns_decoder(["x"], base64_values=True)


def test_a_bad_key_without_a_source_names_only_the_row() -> None:
    with pytest.raises(EntityKeyError) as caught:
        PlainLayout([("id", "S")]).keys_for({"id": ["a", None]})
    assert str(caught.value) == "entity row 2, column 'id': null key value"


@pytest.mark.parametrize(("value", "problem"), [
    ("1_00", "'1_00' is not a number as DynamoDB writes one (digits, an optional sign, point "
             "and exponent: no spaces or underscores)"),
    (Decimal("1E+126"), "1E+126 is outside DynamoDB's number range (a magnitude from 1E-130 "
                        "to below 1E+126, or 0)"),
    (Decimal("9E-131"), "9E-131 is outside DynamoDB's number range (a magnitude from 1E-130 "
                        "to below 1E+126, or 0)"),
])
def test_number_keys_dynamodb_cannot_hold(value: Any, problem: str) -> None:
    with pytest.raises(EntityKeyError) as caught:
        PlainLayout([("id", "N")]).keys_for({"id": [value]}, "ids.csv")
    assert str(caught.value) == f"ids.csv, entity row 1, column 'id': {problem}"


def test_number_keys_at_the_ends_of_the_range() -> None:
    layout = PlainLayout([("id", "N")])
    assert layout.keys_for({"id": [Decimal("1E-130"), Decimal("-9.9E+125"), 0]}) == [
        Decimal("1E-130"), Decimal("-9.9E+125"), Decimal(0)]


def test_the_layout_of_a_description_keeps_its_event_time_attribute() -> None:
    description = {"KeySchema": [{"AttributeName": "s", "KeyType": "RANGE"},
                                 {"AttributeName": "id", "KeyType": "HASH"}],
                   "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "N"},
                                            {"AttributeName": "s", "AttributeType": "S"}]}
    layout = PlainLayout.from_description(description, "seen")
    assert (layout.key_schema, layout.event_ts_attribute) == ([("id", "N"), ("s", "S")], "seen")
    assert PlainLayout.from_description(description).event_ts_attribute == "event_ts"
