"""One sample of every ``feast.types.Value`` kind in three independent forms: built with
Feast's own generated class, in tests/feast_writer.py's ``(kind, value)`` form, and the Python
value featurepull must decode it to (the table in docs/feast-values.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from feast.protos.feast.types.Value_pb2 import Value


class KindSample(NamedTuple):
    feast: Value
    writer: Any
    python: Any


_MAP = {"k": Value(int64_val=-7), "é": Value(string_val="ü"), "n": Value(null_val=0)}
_MAP_W = {"k": ("int64_val", -7), "é": ("string_val", "ü"), "n": ("null_val", None)}
_MAP_PY = {"k": -7, "é": "ü", "n": None}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T = 1_700_000_000  # 2023-11-14 22:13:20 UTC
_T_UTC = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
_UUID = "6f1c3e2a-9b4d-4c8e-8f00-1a2b3c4d5e6f"
_TIME_UUID = "1ed6b7e4-3c1a-11ee-be56-0242ac120002"


def _same_list(kind: str, values: list[Any], python: list[Any] | None = None) -> KindSample:
    return KindSample(Value(**{kind: {"val": values}}), values,
                      values if python is None else python)


SAMPLES: dict[str, KindSample] = {
    "bytes_val": KindSample(Value(bytes_val=b"\x00\xff"), b"\x00\xff", b"\x00\xff"),
    "string_val": KindSample(Value(string_val="Zürich 🚕"), "Zürich 🚕", "Zürich 🚕"),
    "int32_val": KindSample(Value(int32_val=-(2**31)), -(2**31), -(2**31)),
    "int64_val": KindSample(Value(int64_val=2**40 + 1), 2**40 + 1, 2**40 + 1),
    "double_val": KindSample(Value(double_val=0.1), 0.1, 0.1),
    "float_val": KindSample(Value(float_val=-1.5), -1.5, -1.5),
    "bool_val": KindSample(Value(bool_val=True), True, True),
    "unix_timestamp_val": KindSample(Value(unix_timestamp_val=_T), _T, _T_UTC),
    "bytes_list_val": _same_list("bytes_list_val", [b"a", b""]),
    "string_list_val": _same_list("string_list_val", ["", "x"]),
    "int32_list_val": _same_list("int32_list_val", [-1, 2**31 - 1]),
    "int64_list_val": _same_list("int64_list_val", [-(2**63), 3]),
    "double_list_val": _same_list("double_list_val", [0.25, -0.0]),
    "float_list_val": _same_list("float_list_val", [0.5]),
    "bool_list_val": _same_list("bool_list_val", [True, False]),
    "unix_timestamp_list_val": _same_list("unix_timestamp_list_val", [0, _T], [_EPOCH, _T_UTC]),
    "null_val": KindSample(Value(null_val=0), None, None),
    "map_val": KindSample(Value(map_val={"val": _MAP}), _MAP_W, _MAP_PY),
    "map_list_val": KindSample(Value(map_list_val={"val": [{"val": _MAP}, {}]}),
                               [_MAP_W, {}], [_MAP_PY, {}]),
    "bytes_set_val": _same_list("bytes_set_val", [b"q"]),
    "string_set_val": _same_list("string_set_val", ["a", "b"]),
    "int32_set_val": _same_list("int32_set_val", [7]),
    "int64_set_val": _same_list("int64_set_val", [8, 9]),
    "double_set_val": _same_list("double_set_val", [1e300]),
    "float_set_val": _same_list("float_set_val", [0.125]),
    "bool_set_val": _same_list("bool_set_val", [False]),
    "unix_timestamp_set_val": _same_list("unix_timestamp_set_val", [-1],
                                         [datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)]),
    # json stays the stored JSON text: a column of parsed JSON would mix types.
    "json_val": KindSample(Value(json_val='{"a": [1, null]}'), '{"a": [1, null]}',
                           '{"a": [1, null]}'),
    "json_list_val": _same_list("json_list_val", ["{}", "[2]"]),
    "struct_val": KindSample(Value(struct_val={"val": _MAP}), _MAP_W, _MAP_PY),
    "struct_list_val": KindSample(Value(struct_list_val={"val": [{"val": _MAP}]}),
                                  [_MAP_W], [_MAP_PY]),
    "uuid_val": KindSample(Value(uuid_val=_UUID), _UUID, _UUID),
    "time_uuid_val": KindSample(Value(time_uuid_val=_TIME_UUID), _TIME_UUID, _TIME_UUID),
    "uuid_list_val": _same_list("uuid_list_val", [_UUID, _UUID]),
    "time_uuid_list_val": _same_list("time_uuid_list_val", [_TIME_UUID]),
    "uuid_set_val": _same_list("uuid_set_val", [_UUID]),
    "time_uuid_set_val": _same_list("time_uuid_set_val", [_TIME_UUID]),
    "list_val": KindSample(
        Value(list_val={"val": [Value(int64_list_val={"val": [1, 2]}), Value(string_val="x"),
                                Value(map_val={"val": _MAP})]}),
        [("int64_list_val", [1, 2]), ("string_val", "x"), ("map_val", _MAP_W)],
        [[1, 2], "x", _MAP_PY]),
    "set_val": KindSample(Value(set_val={"val": [Value(decimal_set_val={"val": ["1.5"]})]}),
                          [("decimal_set_val", ["1.5"])], [["1.5"]]),
    # decimals stay their exact stored text: no sink takes decimal.Decimal.
    "decimal_val": KindSample(Value(decimal_val="-12345678901234567890.000000001"),
                              "-12345678901234567890.000000001",
                              "-12345678901234567890.000000001"),
    "decimal_list_val": _same_list("decimal_list_val", ["0.10", "NaN"]),
    "decimal_set_val": _same_list("decimal_set_val", ["2.50"]),
    # scalar_map keys need not be strings: a list of {"key", "value"} entries, stored order.
    "scalar_map_val": KindSample(
        Value(scalar_map_val={"val": [
            {"key": {"int64_key": -3}, "value": Value(string_val="v")},
            {"key": {"unix_timestamp_key": 0}, "value": Value(bool_val=False)},
            {"key": {"bytes_key": b"\x01"}, "value": Value(map_val={"val": _MAP})},
            {"key": {"decimal_key": "2.50"}, "value": Value(double_val=0.5)},
        ]}),
        [(("int64_key", -3), ("string_val", "v")),
         (("unix_timestamp_key", 0), ("bool_val", False)),
         (("bytes_key", b"\x01"), ("map_val", _MAP_W)),
         (("decimal_key", "2.50"), ("double_val", 0.5))],
        [{"key": -3, "value": "v"}, {"key": _EPOCH, "value": False},
         {"key": b"\x01", "value": _MAP_PY}, {"key": "2.50", "value": 0.5}]),
    "zoned_timestamp_val": KindSample(
        Value(zoned_timestamp_val={"unix_timestamp": _T, "zone": "America/Los_Angeles"}),
        (_T, "America/Los_Angeles"),
        datetime(2023, 11, 14, 14, 13, 20, tzinfo=ZoneInfo("America/Los_Angeles"))),
}
