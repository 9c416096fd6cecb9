"""What the reader takes from a Feast layout besides keys and rows: the ready-made JSON of a
batch's keys (``wire_keys_json``, the same bytes as the key dicts) and the items of one
answer decoded a column at a time (``columns_decoder``: the rows of ``row_decoder``, with
the default and a caller's value decoder). In-process, no endpoint."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pytest

from featurepull.dynamo import layouts
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.feast_values import ValueProto
from featurepull.dynamo.layouts import FeastLayout, PlainLayout, python_columns, unique_keys

pytestmark = pytest.mark.mutation_first  # in-process and fast (scripts/mutation.sh)

LAYOUT = FeastLayout({"driver_id": "int64"})
TS = "2026-11-01 12:00:00+00:00"


def value(**field: Any) -> bytes:
    return bytes(ValueProto(**field).SerializeToString())


def item(ts: str | None = TS, **features: bytes) -> dict[str, Any]:
    found: dict[str, Any] = {"entity_id": {"S": "ab12"}}
    if ts is not None:
        found["event_ts"] = {"S": ts}
    if features:
        found["values"] = {"M": {name: {"B": data} for name, data in features.items()}}
    return found


def as_base64(found: dict[str, Any]) -> dict[str, Any]:
    """The item as the wire has it before decoding: B values as base64 text."""
    copy = dict(found)
    if "values" in found:
        copy["values"] = {"M": {name: {"B": base64.b64encode(v["B"]).decode()}
                                for name, v in found["values"]["M"].items()}}
    return copy


def test_the_keys_json_is_the_key_dicts_serialized() -> None:
    keys: list[Any] = LAYOUT.keys_for({"driver_id": [1, 2, 3]})
    assert orjson.dumps(LAYOUT.wire_keys_json(keys)) == orjson.dumps(
        [LAYOUT.wire_key(key) for key in keys])
    mixed_case = ["0aF9", "Bc"]
    assert orjson.dumps(LAYOUT.wire_keys_json(mixed_case)) == (
        b'[{"entity_id":{"S":"0aF9"}},{"entity_id":{"S":"Bc"}}]')
    assert orjson.dumps(LAYOUT.wire_keys_json([])) == b"[]"


@pytest.mark.parametrize("keys", [["ab", "g1"], ["ab", 'c"d'], ["ab", "é1"], ["ab", 12]],
                         ids=["not hex", "a quote", "not ascii", "not text"])
def test_keys_that_are_not_hex_text_get_the_dicts(keys: list[Any]) -> None:
    assert LAYOUT.wire_keys_json(keys) is None


def test_columns_are_the_rows_of_the_row_decoder() -> None:
    items = [item(f=value(double_val=1.5), g=value(string_val="x")),
             item(ts=None, f=value(double_val=-2.0), g=value(int64_val=7)),
             item(ts="2026-11-02T00:00:00", f=value(double_val=0.25), g=value())]
    rows = [LAYOUT.row_decoder(["f", "g"])(found) for found in items]
    assert rows[0] == (datetime(2026, 11, 1, 12, tzinfo=UTC), 1.5, "x")
    columns = LAYOUT.columns_decoder(["f", "g"])(items)
    assert columns == [list(values) for values in zip(*rows, strict=True)]
    assert LAYOUT.rows_decoder(["f", "g"])(items) == rows
    encoded = [as_base64(found) for found in items]
    assert LAYOUT.columns_decoder(["f", "g"], base64_values=True)(encoded) == columns


def test_an_item_without_a_feature_is_decoded_row_by_row_to_the_same_columns() -> None:
    items = [item(f=value(double_val=1.5)), item(g=value(string_val="y")), item(ts=None)]
    columns = LAYOUT.columns_decoder(["f", "g"])(items)
    assert columns == [[datetime(2026, 11, 1, 12, tzinfo=UTC)] * 2 + [None],
                       [1.5, None, None], [None, "y", None]]
    assert LAYOUT.columns_decoder(["f"])([]) == [[], []]


def test_a_callers_value_decoder_decodes_each_value_of_a_column() -> None:
    seen: list[bytes] = []

    def decode(data: bytes) -> tuple[str, bytes]:
        seen.append(data)
        return ("mine", data)

    layout = FeastLayout({"driver_id": "int64"}, value_decoder=decode)
    first, second = value(double_val=1.5), value(double_val=2.5)
    columns = layout.columns_decoder(["f"])([item(f=first), item(f=second)])
    assert columns[1] == [("mine", first), ("mine", second)]
    assert seen == [first, second]
    missing = layout.columns_decoder(["f"])([item(f=first), item()])
    assert missing[1] == [("mine", first), None]


def test_a_callers_value_decoder_gets_the_bytes_of_base64_values() -> None:
    layout = FeastLayout({"driver_id": "int64"}, value_decoder=lambda data: ("mine", data))
    first, second = value(double_val=1.5), value(string_val="x")
    items = [as_base64(item(f=first)), as_base64(item(f=second))]
    assert layout.columns_decoder(["f"], base64_values=True)(items)[1] == [
        ("mine", first), ("mine", second)]


class _NoRows(FeastLayout):
    def row_decoder(self, features: Any, base64_values: bool = False) -> Any:
        def refuse(found: dict[str, Any]) -> Any:
            raise AssertionError(f"decoded as a row: {found}")
        return refuse


def test_complete_items_are_decoded_a_column_at_a_time(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """Items that all have an event time and every feature: no row decoder, and no event
    time parsed on its own (what an item without one needs)."""
    items = [item(f=value(double_val=1.5), g=value(string_val="x")),
             item(ts="2026-11-02 00:00:00.250000+00:00", f=value(double_val=-2.0),
                  g=value(string_val="yz"))]
    expected = LAYOUT.columns_decoder(["f", "g"])(items)
    monkeypatch.setattr(layouts, "parse_event_ts", None)
    layout = _NoRows({"driver_id": "int64"})
    assert layout.columns_decoder(["f", "g"])(items) == expected
    encoded = [as_base64(found) for found in items]
    assert layout.columns_decoder(["f", "g"], base64_values=True)(encoded) == expected
    assert expected[0][1] == datetime(2026, 11, 2, 0, 0, 0, 250000, tzinfo=UTC)


def test_distinct_keys_and_each_rows_index_among_them() -> None:
    columns = {"driver_id": [7, 3, 7, 9, 3]}
    every = LAYOUT.keys_for(columns)
    for keys, positions in (LAYOUT.unique_keys_for(columns), unique_keys(LAYOUT, columns)):
        assert list(keys) == [every[0], every[1], every[3]]  # in order of first appearance
        assert [keys[p] for p in positions.to_pylist()] == every
    two = FeastLayout({"driver_id": "int64", "city": "string"})  # serialized, then distinct
    both = {"driver_id": [1, 2, 1], "city": ["a", "a", "a"]}
    each = two.keys_for(both)
    for keys, positions in (two.unique_keys_for(both, "e.csv"), unique_keys(two, both)):
        assert (list(keys), positions.to_pylist()) == ([each[0], each[1]], [0, 1, 0])
    blob = FeastLayout({"blob": "bytes"})  # one bytes key: not de-duplicated first
    same = {"blob": [b"a", b"a"]}
    assert blob.unique_keys_for(same, "e.csv") == (blob.keys_for(same), None)
    assert unique_keys(blob, same) == (blob.keys_for(same), None)
    plain = PlainLayout([("id", "N")])
    assert unique_keys(plain, {"id": [5, 5]}) == ([Decimal(5), Decimal(5)], None)


@pytest.mark.parametrize("layout", [LAYOUT, FeastLayout({"driver_id": "int64", "zone": "string"})],
                         ids=["one key", "two keys"])
def test_distinct_keys_of_entities_without_the_column_name_the_source(layout: FeastLayout
                                                                      ) -> None:
    with pytest.raises(EntityKeyError) as caught:
        unique_keys(layout, {"id": [1]}, "e.csv")
    assert str(caught.value).startswith("e.csv has no column 'driver_id'")
    with pytest.raises(EntityKeyError, match=r"^the entities has no column 'driver_id'"):
        layout.unique_keys_for({"id": [1]})


def test_bad_keys_name_their_source_and_row_in_distinct_keys_too() -> None:
    two = FeastLayout({"driver_id": "int64", "city": "string"})
    with pytest.raises(EntityKeyError, match=r"^e\.csv, entity row 2, column 'city': "):
        two.unique_keys_for({"driver_id": [1, 2], "city": ["a", None]}, "e.csv")
    with pytest.raises(EntityKeyError, match=r"^entity row 2, column 'city': "):
        unique_keys(two, {"driver_id": [1, 2], "city": ["a", None]})


def test_a_scanned_items_key_is_the_key_its_entity_gets() -> None:
    [key] = LAYOUT.keys_for({"driver_id": [42]})
    assert LAYOUT.wire_key(key) == {"entity_id": {"S": key}}
    assert LAYOUT.item_key(LAYOUT.wire_key(key)) == key
    assert LAYOUT.item_key({"entity_id": {"S": "ab"}, "event_ts": {"S": TS}}) == "ab"
    plain = PlainLayout([("id", "N"), ("day", "S")])
    [pair] = plain.keys_for({"id": ["5.0"], "day": ["mon"]})
    assert plain.item_key({"id": {"N": "5"}, "day": {"S": "mon"}, "x": {"N": "1"}}) == pair


def test_arrow_key_columns_are_read_as_the_lists_they_hold() -> None:
    lists = {"id": [5, 6], "day": ["mon", "tue"]}
    assert python_columns(lists) is lists  # nothing to convert
    converted = python_columns({"id": pa.array([5, None]), "day": ["mon", "tue"]})
    assert converted == {"id": [5, None], "day": ["mon", "tue"]}
    assert [type(column) for column in converted.values()] == [list, list]
    plain = PlainLayout([("id", "S")])
    assert plain.keys_for({"id": pa.array(["a", "b"])}) == ["a", "b"]
    with pytest.raises(EntityKeyError) as caught:
        plain.keys_for({"id": pa.array(["a", None])}, "e.parquet")
    assert str(caught.value) == "e.parquet, entity row 2, column 'id': null key value"


def test_distinct_keys_of_a_plain_layout_name_the_source_of_a_bad_key() -> None:
    with pytest.raises(EntityKeyError) as caught:
        unique_keys(PlainLayout([("id", "N")]), {"id": [1, None]}, "e.csv")
    assert str(caught.value) == "e.csv, entity row 2, column 'id': null key value"
