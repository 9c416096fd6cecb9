"""Feast compatibility: a table built the way Feast's DynamoDB online store writes it — ids
and values encoded by tests/feast_writer.py independently of the reader's own code — reads
back to the same values, for compound join keys and every Value type."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from featurepull.dynamo import (
    BatchReader,
    EntityKeyEncoder,
    EntityKeyError,
    FeastLayout,
    PlainLayout,
)
from featurepull.dynamo.errors import ItemDecodeError, TableError
from featurepull.dynamo.feast_values import ValueProto
from tests.conftest import unique_name
from tests.dynamo.conftest import FeastTable
from tests.feast_writer import (
    KINDS,
    create_feast_table,
    entity_id,
    expected_event_ts,
    expected_python,
    same_python,
    write_feast_rows,
)

WRITTEN_AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
UUIDS = ["00000000-0000-0000-0000-000000000000", "6f1c3e2a-9b4d-4c8e-8f00-1a2b3c4d5e6f"]
TIME_UUIDS = ["1ed6b7e4-3c1a-11ee-be56-0242ac120002", "c232ab00-9414-11ec-b3c8-9f6bdeced846"]

# Hard cases of every scalar kind; each list and set kind holds [] and all of its scalar's cases.
SCALARS: dict[str, list[Any]] = {
    "bytes_val": [b"", b"\x00\xff\x80", bytes(range(256))],
    "string_val": ["", "plain", "héllo ✓ 漢字 🚕", "nul\x00inside"],
    "int32_val": [0, -1, 2**31 - 1, -(2**31)],
    "int64_val": [0, -1, 2**63 - 1, -(2**63), 2**53 + 1],
    "double_val": [0.0, -0.0, 1 / 3, math.nan, math.inf, -math.inf, 1.7976931348623157e308,
                   5e-324],
    "float_val": [0.1, -1.5, 3.4e38, math.inf, -math.inf, math.nan, 1e-45],
    "bool_val": [True, False],
    # 1900, one second before 1970, the epoch, 2038's int32 overflow, the last second of 9999
    "unix_timestamp_val": [-2_208_988_800, -1, 0, 2**31, 253_402_300_799],
    "uuid_val": UUIDS,
    "time_uuid_val": TIME_UUIDS,
    "json_val": ["", '{"a": [1, null]}', "3.5"],  # kept as the stored text
    "decimal_val": ["0", "-12345678901234567890.000000001", "NaN"],
}
NESTED_MAP = {
    "n": ("int64_val", -7),
    "é": ("string_val", "ü"),
    "nothing": ("null_val", None),
    "nan": ("double_val", math.nan),
    "inner": ("map_val", {"when": ("unix_timestamp_list_val", [-1, 0]), "empty": ("map_val", {})}),
    "rows": ("map_list_val", [{"ok": ("bool_val", False)}, {}]),
}
SPECIAL: dict[str, list[Any]] = {
    "null_val": [None],
    "map_val": [{}, NESTED_MAP],
    "map_list_val": [[], [{}, NESTED_MAP, {"f": ("float_list_val", [0.1, -0.0])}]],
    "struct_val": [{}, NESTED_MAP],
    "struct_list_val": [[], [NESTED_MAP, {}]],
    "list_val": [[], [("int64_list_val", [1, 2]), ("null_val", None), ("map_val", NESTED_MAP)]],
    "set_val": [[("string_set_val", ["a"]), ("decimal_set_val", ["1.5"])]],
    "scalar_map_val": [[], [(("int64_key", -3), ("string_val", "v")),
                            (("bytes_key", b"\x00"), ("map_val", NESTED_MAP)),
                            (("unix_timestamp_key", 0), ("zoned_timestamp_val", (5, "Asia/Kolkata"))),
                            (("bool_key", False), ("null_val", None)),
                            (("decimal_key", "2.50"), ("double_val", 0.5))]],
    # the epoch in UTC (both fields left out on the wire), a DST zone, before 1970
    "zoned_timestamp_val": [(0, ""), (1_710_054_000, "America/New_York"),
                            (-86_400, "Europe/Lisbon"), (1_700_000_000, "+05:30")],
}


def samples(kind: str) -> list[Any]:
    """The values stored for ``kind``, one feature each."""
    if kind in SCALARS or kind in SPECIAL:
        return {**SCALARS, **SPECIAL}[kind]
    element = kind.rsplit("_", 2)[0]  # "unix_timestamp_set_val" -> "unix_timestamp"
    return [[], SCALARS[f"{element}_val"]]


SLOTS = [f"c{i}" for i in range(max(len(samples(kind)) for kind in KINDS))]
EVENT_TIMES = {
    "utc-micro": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "india": datetime(2025, 6, 30, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    "pacific-whole-second": datetime(2024, 2, 29, 8, 0, tzinfo=timezone(timedelta(hours=-8))),
    "naive": datetime(2023, 12, 31, 23, 59, 59, 999999),
}


def kind_key(label: str) -> dict[str, tuple[str, object]]:
    return {"entity": ("string", label)}


@pytest.fixture(scope="module")
def values_table(ddb: Any, endpoint_url: str) -> FeastTable:
    table = FeastTable(unique_name("proj"), "every_kind", endpoint_url)
    create_feast_table(ddb, table.name)
    rows: list[Any] = [
        (kind_key(kind), WRITTEN_AT, {slot: (kind, value)
                                      for slot, value in zip(SLOTS, samples(kind), strict=False)})
        for kind in sorted(KINDS)
    ]
    rows += [(kind_key(f"ts-{label}"), ts, {"c0": ("int64_val", 1)})
             for label, ts in EVENT_TIMES.items()]
    rows.append((kind_key("other-features-only"), WRITTEN_AT, {"unrelated": ("bool_val", True)}))
    rows.append((kind_key("empty-values-map"), WRITTEN_AT, {}))
    write_feast_rows(ddb, table.name, rows)
    return table


def read_labels(table: FeastTable, labels: list[str], features: list[str],
                allow_missing_features: bool = False) -> list[Any]:
    layout = FeastLayout({"entity": "string"})
    keys = layout.keys_for({"entity": labels}, source="test")
    reader = BatchReader(table.name, layout, table.settings())
    return reader.read(keys, features, allow_missing_features=allow_missing_features).rows


def test_every_value_kind_reads_back_as_written(values_table: FeastTable) -> None:
    assert set(SCALARS) | set(SPECIAL) < KINDS
    kinds = sorted(KINDS)
    rows = read_labels(values_table, kinds, SLOTS)
    for kind, row in zip(kinds, rows, strict=True):
        assert row is not None, kind
        stored = samples(kind)
        # Slots past this kind's samples are absent from its `values` map: they read as None.
        expected = [expected_python(kind, v) for v in stored] + [None] * (len(SLOTS) - len(stored))
        assert row[0] == expected_event_ts(WRITTEN_AT)
        for slot, got, want in zip(SLOTS, row[1:], expected, strict=True):
            assert same_python(got, want), (kind, slot, got, want)


def test_item_without_any_requested_feature_is_a_row_of_nulls_not_a_missing_row(
    values_table: FeastTable,
) -> None:
    rows = read_labels(values_table, ["other-features-only", "empty-values-map", "never-written"],
                       ["c0", "c1"], allow_missing_features=True)
    stamp = expected_event_ts(WRITTEN_AT)
    assert rows == [(stamp, None, None), (stamp, None, None), None]


def test_event_ts_keeps_offset_and_microseconds_and_naive_means_utc(
    values_table: FeastTable,
) -> None:
    rows = read_labels(values_table, [f"ts-{label}" for label in EVENT_TIMES], ["c0"])
    for (label, written), row in zip(EVENT_TIMES.items(), rows, strict=True):
        assert row is not None, label
        want = expected_event_ts(written)
        assert row[0] == want and row[0].utcoffset() == want.utcoffset(), label
        assert row[0].microsecond == written.microsecond, label
    naive = rows[list(EVENT_TIMES).index("naive")]
    assert naive is not None and naive[0].utcoffset() == timedelta(0)


# --- Compound join keys ------------------------------------------------------------------

# (layout's key types, in another order than the writer's dicts, join keys as written, and
# a key whose values all occur in the written keys but never together: no item).
KEY_CASES: dict[str, tuple[dict[str, str], list[dict[str, tuple[str, object]]], dict[str, Any]]] = {
    "driver+city": ({"driver_id": "int64", "city": "string"}, [
        {"city": ("string", "Paris"), "driver_id": ("int64", 1001)},
        {"city": ("string", "São Paulo 東京"), "driver_id": ("int64", -(2**63))},
        {"city": ("string", ""), "driver_id": ("int64", 2**63 - 1)},
    ], {"driver_id": 1001, "city": ""}),
    "three-part": ({"shift": "int32", "driver_id": "int64", "badge": "bytes"}, [
        {"badge": ("bytes", b"\x00\xff"), "driver_id": ("int64", 7), "shift": ("int32", -(2**31))},
        {"badge": ("bytes", b""), "driver_id": ("int64", -1), "shift": ("int32", 2**31 - 1)},
    ], {"shift": -(2**31), "driver_id": 7, "badge": b""}),
    "timestamp-key": ({"day": "unix_timestamp", "city": "string"}, [
        {"city": ("string", "Oslo"), "day": ("unix_timestamp", -86_400 * 365 * 60)},
        {"city": ("string", "Bergen"), "day": ("unix_timestamp", 4_102_444_800)},
    ], {"day": 4_102_444_800, "city": "Oslo"}),
    "non-ascii-name": ({"driver_id": "int64", "città": "string", "運転手": "int32"}, [
        {"運転手": ("int32", 3), "città": ("string", "Zürich"), "driver_id": ("int64", 5)},
        {"運転手": ("int32", -3), "città": ("string", "Ελλάδα"), "driver_id": ("int64", 5)},
    ], {"driver_id": 5, "città": "Zürich", "運転手": -3}),
}


# A table of every KEY_CASES item, its key version and how it packs a name's length.
KeysTable = tuple[FeastTable, int, str]


@pytest.fixture(scope="module", params=[(2, "bytes"), (3, "bytes"), (3, "chars")],
                ids=["v2", "v3", "v3-chars"])
def keys_table(request: pytest.FixtureRequest, ddb: Any, endpoint_url: str) -> KeysTable:
    version, name_length = request.param
    table = FeastTable(unique_name("proj"), f"compound_v{version}", endpoint_url)
    create_feast_table(ddb, table.name)
    rows = [(keys, WRITTEN_AT, {"label": ("string_val", f"{case}/{i}")})
            for case, (_, written, _) in KEY_CASES.items() for i, keys in enumerate(written)]
    write_feast_rows(ddb, table.name, rows, version=version, name_length=name_length)
    return table, version, name_length


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_compound_join_keys_find_the_item_feast_wrote(keys_table: KeysTable, case: str) -> None:
    table, version, name_length = keys_table
    types, written, absent = KEY_CASES[case]
    columns = {name: [keys[name][1] for keys in written] + [absent[name]] for name in types}
    # The table packs a non-ASCII name's length as current Feast does (bytes) or as older
    # Feast did (chars): the layout is told which.
    layout = FeastLayout(types, serialization_version=version, name_length=name_length)
    keys = layout.keys_for(columns, source="test")
    rows = BatchReader(table.name, layout, table.settings()).read(keys, ["label"]).rows
    assert [row and row[1] for row in rows] == [f"{case}/{i}" for i in range(len(written))] + [None]
    # The other serialization version hashes to other ids: nothing is found.
    other = FeastLayout(types, serialization_version=5 - version, name_length=name_length)
    other_keys = other.keys_for(columns, source="test")
    assert BatchReader(table.name, other, table.settings()).read(other_keys, ["label"]).rows == [
        None] * len(rows)
    if version == 3 and case == "non-ascii-name":  # so does the other name-length convention
        other = FeastLayout(types, 3, name_length="chars" if name_length == "bytes" else "bytes")
        other_keys = other.keys_for(columns, source="test")
        assert BatchReader(table.name, other, table.settings()).read(
            other_keys, ["label"]).rows == [None] * len(rows)


# --- Key agreement without DynamoDB ------------------------------------------------------


def random_key_value(rng: random.Random, type_name: str) -> Any:
    text = "aZ09 _-é漢🚕\x00"
    return {
        "int64": lambda: rng.choice([-(2**63), 2**63 - 1, 0, rng.randint(-(2**63), 2**63 - 1)]),
        "int32": lambda: rng.choice([-(2**31), 2**31 - 1, rng.randint(-(2**31), 2**31 - 1)]),
        "unix_timestamp": lambda: rng.randint(-(2**40), 2**40),
        "string": lambda: "".join(rng.choices(text, k=rng.randint(0, 12))),
        "bytes": lambda: rng.randbytes(rng.randint(0, 12)),
    }[type_name]()


@pytest.mark.parametrize("name_length", ["bytes", "chars"])
@pytest.mark.parametrize("version", [2, 3])
def test_entity_ids_agree_with_the_writer_for_random_compound_keys(version: int,
                                                                   name_length: str) -> None:
    rng = random.Random(version)
    names = ["driver_id", "city", "a", "Z", "città", "運転手", "id_2", "é"]
    types = ["int64", "int32", "unix_timestamp", "string", "bytes"]
    for _ in range(300):
        key_types = {name: rng.choice(types) for name in rng.sample(names, rng.randint(1, 4))}
        values = {name: random_key_value(rng, t) for name, t in key_types.items()}
        written = {name: (key_types[name], value) for name, value in values.items()}
        encoder = EntityKeyEncoder(key_types, version, name_length)
        got = encoder.entity_id([values[name] for name in sorted(key_types)])
        assert got == entity_id(written, version, name_length), written


# --- Key-type errors -----------------------------------------------------------------------

ERROR_TYPES = {"driver_id": "int64", "city": "string", "shift": "int32"}
GOOD_ROW = {"driver_id": 1, "city": "Paris", "shift": 2}


@pytest.mark.parametrize(("column", "bad"), [
    ("driver_id", None),
    ("city", None),
    ("driver_id", "twelve"),
    ("driver_id", 1.5),
    ("shift", 2**31),
    ("city", b"Paris"),
], ids=["null-int64", "null-string", "word-in-int64", "fraction-in-int64", "int32-overflow",
        "bytes-for-string"])
def test_bad_key_value_names_its_column_and_row(column: str, bad: Any) -> None:
    columns = {name: [GOOD_ROW[name]] * 3 for name in ERROR_TYPES}
    columns[column][1] = bad
    with pytest.raises(EntityKeyError) as caught:
        FeastLayout(ERROR_TYPES).keys_for(columns, source="entities.csv")
    message = str(caught.value)
    assert "entities.csv" in message and "row 2" in message, message
    assert column in message and not any(other in message for other in ERROR_TYPES
                                         if other != column), message


def test_float_join_key_type_is_refused_naming_the_column() -> None:
    with pytest.raises(EntityKeyError, match=r"'rating'.*'float'"):
        FeastLayout({"driver_id": "int64", "rating": "float"})


# ---------------------------------------------------------------------------------------
# check_keys: the submit-time check says what keys_for says, without hashing every key
# ---------------------------------------------------------------------------------------

CHECK_CASES: list[tuple[str, dict[str, str], dict[str, list[Any]]]] = [
    ("ints", {"driver_id": "int64"}, {"driver_id": [1, 2, -(2**63), 2**63 - 1]}),
    ("null int", {"driver_id": "int64"}, {"driver_id": [1, None, 3]}),
    ("bool int", {"driver_id": "int64"}, {"driver_id": [1, True]}),
    ("float int", {"driver_id": "int64"}, {"driver_id": [1, 2.5]}),
    ("whole float int", {"driver_id": "int64"}, {"driver_id": [1, 2.0]}),
    ("int64 overflow", {"driver_id": "int64"}, {"driver_id": [1, 2**63]}),
    ("int32 overflow", {"driver_id": "int32"}, {"driver_id": [2**31 - 1, 2**31]}),
    ("int32 underflow", {"driver_id": "int32"}, {"driver_id": [-(2**31) - 1]}),
    ("strings", {"user": "string"}, {"user": ["a", "José", "東京"]}),
    ("ints for a string key", {"user": "string"}, {"user": ["a", 5]}),
    ("lone surrogate", {"user": "string"}, {"user": ["a", "\ud800"]}),
    ("null string", {"user": "string"}, {"user": ["a", None]}),
    ("bytes", {"blob": "bytes"}, {"blob": [b"\x00", b"x"]}),
    ("str for bytes", {"blob": "bytes"}, {"blob": [b"\x00", "x"]}),
    ("two keys", {"a": "int64", "b": "string"}, {"a": [1, 2], "b": ["x", None]}),
    ("missing column", {"a": "int64", "b": "string"}, {"a": [1, 2]}),
    ("empty", {"driver_id": "int64"}, {"driver_id": []}),
]


@pytest.mark.parametrize(("case", "types", "columns"), CHECK_CASES, ids=[c[0] for c in CHECK_CASES])
def test_check_keys_refuses_exactly_what_keys_for_refuses(
        case: str, types: dict[str, str], columns: dict[str, list[Any]]) -> None:
    layout = FeastLayout(types)
    try:
        layout.keys_for(columns, "e.csv")
    except EntityKeyError as exc:
        with pytest.raises(EntityKeyError) as checked:
            layout.check_keys(columns, "e.csv")
        assert str(checked.value) == str(exc)
    else:
        layout.check_keys(columns, "e.csv")


@pytest.mark.parametrize("version", [2, 3])
def test_whole_column_entity_ids_equal_row_by_row_ones(version: int) -> None:
    encoder = EntityKeyEncoder({"driver_id": "int64"}, version)
    ids = [0, 1, -1, 2**63 - 1, -(2**63), *(random.Random(7).randrange(-(2**63), 2**63) for _ in range(500))]
    assert encoder.entity_ids([ids]) == [encoder.entity_id([value]) for value in ids]
    assert encoder.entity_ids([[1, None]]) is None  # not vouched for: row by row
    pair = EntityKeyEncoder({"a": "int64", "b": "int64"}, version)  # two keys: Arrow-built
    assert pair.entity_ids([[1, 3], [2, 4]]) == [pair.entity_id([1, 2]), pair.entity_id([3, 4])]


def _wire_item(rng: random.Random, base64_text: bool) -> dict[str, Any]:
    import base64

    from featurepull.dynamo.feast_values import ValueProto

    values = {
        "rate": ValueProto(double_val=rng.random()),
        "share": ValueProto(float_val=rng.random()),
        "trips": ValueProto(int64_val=rng.randrange(-5, 10**12)),
        "city": ValueProto(string_val=rng.choice(["Zürich", "", "東京"])),
    }
    item: dict[str, Any] = {"entity_id": {"S": f"{rng.getrandbits(128):032x}"}}
    if rng.random() > 0.1:
        item["event_ts"] = {"S": "2026-11-01 05:17:54.349002+00:00"}
    if rng.random() > 0.05:
        kept = {name: value.SerializeToString() for name, value in values.items()
                if rng.random() > 0.03}
        item["values"] = {"M": {name: {"B": base64.b64encode(data).decode() if base64_text
                                       else data} for name, data in kept.items()}}
    return item


@pytest.mark.parametrize("base64_text", [True, False])
@pytest.mark.parametrize("seed", range(20))
def test_an_answer_decodes_as_each_of_its_items(seed: int, base64_text: bool) -> None:
    # Items with and without event_ts, values, or some features: a column of doubles is
    # decoded at once only where every item has it.
    rng = random.Random(seed)
    layout = FeastLayout({"driver_id": "int64"})
    features = ["rate", "share", "trips", "city", "absent"][:rng.randrange(1, 6)]
    items = [_wire_item(rng, base64_text) for _ in range(rng.randrange(0, 120))]
    one = layout.row_decoder(features, base64_values=base64_text)
    assert layout.rows_decoder(features, base64_values=base64_text)(items) == [
        one(item) for item in items]


# ---------------------------------------------------------------------------------------
# What the layout says about tables and items it cannot take (word for word: the CLI tests
# see these through whole reads in subprocesses, the mutation runs see them here)
# ---------------------------------------------------------------------------------------

FEAST = FeastLayout({"driver_id": "int64"})
GOOD = ValueProto(int64_val=7).SerializeToString()
BAD = b"\xff\xff\xff"  # not a serialized Value


def described(*keys: tuple[str, str, str]) -> dict[str, Any]:
    return {"KeySchema": [{"AttributeName": n, "KeyType": k} for n, k, _ in keys],
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t}
                                     for n, _, t in keys]}


def test_feast_layout_refuses_another_key_schema() -> None:
    FEAST.check_table("p.t", described(("entity_id", "HASH", "S")))
    with pytest.raises(TableError) as caught:
        FEAST.check_table("p.t", described(("id", "HASH", "N"), ("sort", "RANGE", "S")))
    assert str(caught.value) == (
        "table p.t is keyed by id HASH (N), sort RANGE (S), but the feast layout needs "
        "entity_id HASH (S) as Feast's DynamoDB online store writes it; read this table "
        "with --layout plain")


def feast_item(ts: dict[str, Any] | None, **values: bytes) -> dict[str, Any]:
    item: dict[str, Any] = {"entity_id": {"S": "k"},
                            "values": {"M": {n: {"B": v} for n, v in values.items()}}}
    if ts is not None:
        item["event_ts"] = ts
    return item


@pytest.mark.parametrize(("ts", "shown"), [({"S": "yesterday"}, "'yesterday'"),
                                           ({"N": "5"}, "'5'")])
def test_feast_event_time_that_is_not_a_date(ts: dict[str, Any], shown: str) -> None:
    with pytest.raises(ItemDecodeError) as caught:
        FEAST.row_decoder(["a"])(feast_item(ts, a=GOOD))
    assert str(caught.value) == (
        f"attribute 'event_ts' holds {shown}, which is not a date-time as Feast writes it "
        "(e.g. '2024-05-01 12:00:00+00:00')")


@pytest.mark.parametrize("text", ["9999-12-31 23:00:00-05:00", "0001-01-01 00:00:00+05:00"])
def test_feast_event_time_outside_the_utc_years_1_to_9999(text: str) -> None:
    # An answer's columns fail (the reader then decodes item by item, to name the one).
    fine = feast_item({"S": "9999-12-31 23:59:59+00:00"}, a=GOOD)
    with pytest.raises(OverflowError):
        FEAST.columns_decoder(["a"])([fine, feast_item({"S": text}, a=GOOD)])
    with pytest.raises(ItemDecodeError) as caught:
        FEAST.row_decoder(["a"])(feast_item({"S": text}, a=GOOD))
    assert str(caught.value) == (
        f"attribute 'event_ts' holds {text!r}, a time outside the years 1 to 9999 in UTC: an "
        "output holding it could not be read back by Python or pandas; fix the value in the "
        "table")


def test_feast_feature_that_does_not_decode_is_named() -> None:
    decode = FEAST.row_decoder(["absent", "a", "b"])
    item = feast_item({"S": "2026-01-01 00:00:00+00:00"}, a=GOOD, b=BAD, c=BAD)
    with pytest.raises(ItemDecodeError) as caught:
        decode(item)
    message = str(caught.value)
    assert message.startswith("feature 'b': ")
    assert message.endswith("; fix the value in the table, or leave the feature out of "
                            "--features")
    assert FEAST.row_decoder(["a"])(item)[1:] == (7,)  # c is bad, and not asked for


def test_feast_features_of_an_item() -> None:
    assert list(FEAST.features_of(feast_item(None, a=GOOD, b=GOOD))) == ["a", "b"]
    assert tuple(FEAST.features_of({"entity_id": {"S": "k"}})) == ()


def test_entity_messages_without_a_source() -> None:
    with pytest.raises(EntityKeyError) as caught:
        FEAST.check_keys({"driver": [1]})
    assert str(caught.value) == "the entities has no column 'driver_id'; its columns are 'driver'"
    plain = PlainLayout([("id", "N")])
    with pytest.raises(EntityKeyError) as caught:
        plain.check_keys({"id": [1, True]})
    assert str(caught.value) == "entity row 2, column 'id': a bool is not a number"
    with pytest.raises(EntityKeyError) as caught:
        plain.check_keys({"id": [1, True]}, "ids.csv")
    assert str(caught.value) == "ids.csv, entity row 2, column 'id': a bool is not a number"


def test_feast_layout_needs_a_join_key() -> None:
    with pytest.raises(EntityKeyError) as caught:
        FeastLayout({})
    assert str(caught.value) == "the feast layout needs at least one join key (--join-keys)"


def test_null_keys_and_absent_columns_are_named() -> None:
    with pytest.raises(EntityKeyError) as caught:
        FEAST.keys_for({"driver_id": [1, None]}, "f.csv")
    assert str(caught.value) == "f.csv, entity row 2, column 'driver_id': null key value"
    with pytest.raises(EntityKeyError) as caught:
        FeastLayout({"a": "int64", "b": "string"}).keys_for({"a": [1, 2], "b": ["x", None]})
    assert str(caught.value) == "entity row 2, column 'b': null key value"
    with pytest.raises(EntityKeyError) as caught:
        FeastLayout({"a": "int64", "b": "string"}).keys_for({})
    assert str(caught.value) == "the entities has no column 'a', 'b'; its columns are none"


def test_feast_rows_decoder_with_a_value_decoder_of_its_own() -> None:
    layout = FeastLayout({"driver_id": "int64"}, value_decoder=len)
    items = [feast_item({"S": "2026-01-01 00:00:00+00:00"}, a=b"xyz"), feast_item(None, a=b"z"),
             {"entity_id": {"S": "k"}}]
    assert layout.rows_decoder(["a"])(items) == [
        (datetime(2026, 1, 1, tzinfo=UTC), 3), (None, 1), (None, None)]
    assert layout.row_decoder(["a"])(items[0]) == (datetime(2026, 1, 1, tzinfo=UTC), 3)
