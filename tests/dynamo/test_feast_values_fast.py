"""decode_value's byte-level fast path gives exactly what the protobuf path gives: the same
values of the same types for every scalar kind it reads itself, and for anything else
(lists, maps, bytes, extra fields, malformed or cut input) it defers to protobuf."""

from __future__ import annotations

import math
import random
import struct
from datetime import UTC, datetime
from typing import Any

import pytest

from featurepull.dynamo import feast_values
from featurepull.dynamo.feast_values import ValueProto, decode_value

SEED = 20240611
RNG = random.Random(SEED)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "value", decode(data)
    except Exception as exc:  # the exception type is what is compared
        return "error", type(exc)


def _same(fast: Any, slow: Any) -> bool:
    if type(fast) is not type(slow):
        return False
    if isinstance(fast, float):
        if math.isnan(slow):
            return math.isnan(fast)
        return fast == slow and math.copysign(1.0, fast) == math.copysign(1.0, slow)
    if isinstance(fast, datetime):
        return fast == slow and fast.tzinfo == slow.tzinfo and fast.utcoffset() == slow.utcoffset()
    if isinstance(fast, list | tuple):
        return len(fast) == len(slow) and all(map(_same, fast, slow))
    if isinstance(fast, dict):
        return fast.keys() == slow.keys() and all(_same(fast[k], slow[k]) for k in fast)
    return bool(fast == slow)


def _check(data: bytes) -> None:
    slow = _outcome(feast_values._decode_proto, data)
    fast = _outcome(decode_value, data)
    assert fast[0] == slow[0], (data.hex(), fast, slow)
    if fast[0] == "error":
        assert fast[1] is slow[1], (data.hex(), fast, slow)
    else:
        assert _same(fast[1], slow[1]), (data.hex(), fast, slow)


def _random_int(bits: int) -> int:
    kind = RNG.random()
    if kind < 0.3:
        return RNG.randrange(-200, 20_000)
    if kind < 0.6:
        return RNG.randrange(0, 2 ** min(35, bits - 1))
    return RNG.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1))


def _random_double() -> float:
    kind = RNG.random()
    if kind < 0.4:
        return RNG.uniform(-1e6, 1e6)
    if kind < 0.6:
        return RNG.random()
    bits = RNG.getrandbits(64)  # any bit pattern, NaN payloads and subnormals included
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


def _random_text() -> str:
    alphabet = "abcXYZ09 -_éüßøЖж中文日本語🙂\u0000\u007f\u0080\uffff"
    return "".join(RNG.choice(alphabet) for _ in range(RNG.choice([0, 1, 5, 40, 63, 64, 200])))


INT_EDGES = [0, 1, -1, 127, 128, 255, 16_383, 16_384, 2**21 - 1, 2**21, 2**28 - 1, 2**28,
             2**31 - 1, 2**31, 2**32, 2**35 - 1, 2**35, 2**53 + 1, -(2**53) - 1,
             INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1]
INT32_EDGES = [0, 1, -1, 127, 128, 16_384, 2**28, INT32_MIN, INT32_MAX, -128]
DOUBLE_EDGES = [0.0, -0.0, 1.0, -1.0, math.nan, -math.nan, math.inf, -math.inf, 5e-324,
                1.7976931348623157e308, 0.1, 2.0**53 + 1, 1 / 3]
FLOAT_EDGES = [*DOUBLE_EDGES, 0.5123, 3.4028235e38, 3.5e38, 1e-45, 1e-46, 16_777_217.0]
STRING_EDGES = ["", "a", "x" * 127, "x" * 128, "é" * 63, "é" * 64, "Montréal", "São Paulo",
                "中文" * 100, "🙂", "\u0000", "x" * 20_000]
TIMESTAMP_EDGES = [0, 1, -1, 1_780_000_000, 2**31 - 1, 2**31, 2**32, 2**35 - 1, 2**35,
                   -86_400 * 365 * 100, 253_402_300_799, 253_402_300_800, -62_135_596_800,
                   -62_135_596_801, 10**12, INT64_MAX, INT64_MIN, 2**28 - 1, 2**28]


def _cases() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    cases += [("int64_val", v) for v in INT_EDGES + [_random_int(64) for _ in range(3000)]]
    cases += [("int32_val", v) for v in INT32_EDGES + [_random_int(32) for _ in range(2000)]]
    cases += [("double_val", v) for v in DOUBLE_EDGES + [_random_double() for _ in range(3000)]]
    cases += [("float_val", v) for v in FLOAT_EDGES + [_random_double() for _ in range(3000)]]
    cases += [("bool_val", v) for v in (True, False)]
    cases += [("string_val", v) for v in STRING_EDGES + [_random_text() for _ in range(2000)]]
    cases += [("unix_timestamp_val", v)
              for v in TIMESTAMP_EDGES + [_random_int(64) for _ in range(2000)]
              + [RNG.randrange(-(2**34), 2**35) for _ in range(2000)]]
    cases += [("null_val", 0)]
    return cases


def _encode(kind: str, value: Any) -> bytes:
    if kind == "float_val" and math.isfinite(value) and abs(value) > 3.4028235e38:
        value = math.copysign(math.inf, value)  # protobuf would refuse the out-of-range float
    return bytes(ValueProto(**{kind: value}).SerializeToString())


CASES = _cases()


def test_every_scalar_kind_decodes_as_protobuf_does() -> None:
    for kind, value in CASES:
        _check(_encode(kind, value))


def test_the_fast_path_takes_the_common_encodings() -> None:
    """Not protobuf: these never reach it."""
    calls = []
    real = feast_values._decode_proto
    try:
        feast_values._decode_proto = lambda data: calls.append(data)  # type: ignore[assignment]
        for kind, value in [("double_val", 0.25), ("float_val", 0.5), ("int64_val", 400),
                            ("int64_val", 2**35 - 1), ("int32_val", 7), ("bool_val", True),
                            ("string_val", "Montréal"), ("string_val", "x" * 1000),
                            ("unix_timestamp_val", 1_780_000_000), ("null_val", 0),
                            # zeros, and varints of 1 to 4 bytes (values of 2 to 5 bytes)
                            ("int64_val", 0), ("int64_val", 1), ("int64_val", 2**14),
                            ("int64_val", 2**21), ("int32_val", 0), ("int32_val", 300),
                            ("bool_val", False), ("unix_timestamp_val", 0), ("string_val", "")]:
            decode_value(_encode(kind, value))
        decode_value(b"")
        decode_value(b"\x38\x80\x01")  # true as a 2-byte varint (128)
    finally:
        feast_values._decode_proto = real  # type: ignore[assignment]
    assert calls == []


def test_default_values_and_an_empty_value() -> None:
    # proto3 oneof members are written even when they hold the default value.
    for kind, value in [("int64_val", 0), ("double_val", 0.0), ("string_val", ""),
                        ("bool_val", False), ("unix_timestamp_val", 0), ("int32_val", 0)]:
        data = _encode(kind, value)
        assert data != b""
        _check(data)
    assert decode_value(b"") is None
    _check(b"")


@pytest.mark.parametrize("value", [
    ValueProto(double_list_val={"val": [1.0, math.nan]}),
    ValueProto(int64_list_val={"val": [1, -1, INT64_MAX]}),
    ValueProto(string_list_val={"val": ["a", ""]}),
    ValueProto(unix_timestamp_list_val={"val": [0, 1_780_000_000]}),
    ValueProto(bytes_val=b"\x00\xff"),
    ValueProto(uuid_val="0b7e2a0c-1111-4f6a-9a3e-0b0b0b0b0b0b"),
    ValueProto(map_val={"val": {"k": ValueProto(int64_val=3)}}),
    ValueProto(null_val=0),
])
def test_other_kinds_go_to_protobuf(value: Any) -> None:
    _check(bytes(value.SerializeToString()))


def test_extra_and_repeated_fields_decode_as_protobuf_does() -> None:
    double = _encode("double_val", 0.25)
    text = _encode("string_val", "Oslo")
    small = _encode("int64_val", 5)
    for data in (double + double, double + small, small + double, text + small, small + text,
                 small + small, text + b"\x00", double + b"\x08\x01", b"\x98\x01\x05",
                 b"\x98\x01\x80\x00", b"\x20\x80\x00", b"\x20\x80\x80\x80\x80\x00",
                 b"\x18\xff\xff\xff\xff\x7f", b"\x38\x80\x01", b"\x38\x02",
                 b"\x12\x80\x00", b"\x12\x00\x20\x01"):
        _check(data)


def test_malformed_or_cut_input_decodes_as_protobuf_does() -> None:
    encoded = [_encode(kind, value) for kind, value in CASES[::7]]
    for data in encoded:
        for cut in range(len(data)):
            _check(data[:cut])
    for data in encoded[:2000]:
        mutated = bytearray(data)
        for _ in range(RNG.randrange(1, 4)):
            mutated[RNG.randrange(len(mutated))] = RNG.randrange(256)
        _check(bytes(mutated))
    for tag in (0x29, 0x35, 0x20, 0x18, 0x38, 0x12, 0x40, 0x98):
        for _ in range(300):
            _check(bytes([tag]) + RNG.randbytes(RNG.randrange(0, 12)))
    invalid_utf8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"a\x80"]
    for raw in invalid_utf8:
        _check(b"\x12" + bytes([len(raw)]) + raw)
        long_raw = b"x" * 200 + raw
        _check(b"\x12" + bytes([len(long_raw) & 0x7F | 0x80, len(long_raw) >> 7]) + long_raw)
    # Lengths that are not what they seem: a one-byte length of 128 (a varint goes on), 200
    # with a 0x80 byte after it (the varint goes on into the text), and 3 bytes whose third
    # counts 2^14 times (not 2^7): protobuf refuses each.
    for prefix, size in ((b"\x80", 128), (b"\xc8\x81\x80", 200), (b"\x80\x82\x01", 384)):
        _check(b"\x12" + prefix + b"a" * size)


def test_out_of_range_timestamps_use_the_same_fallback() -> None:
    for seconds in (10**12, -(10**12), INT64_MAX, INT64_MIN, 2**35 - 1):
        data = _encode("unix_timestamp_val", seconds)
        _check(data)
    assert decode_value(_encode("unix_timestamp_val", 2**35 - 1)).year == 3058


class _NarrowCTime(datetime):
    """A platform whose C time takes no seconds at all (a 32-bit ``time_t`` takes 1901-2038)."""

    @classmethod
    def fromtimestamp(cls, t: float, tz: Any = None) -> Any:
        raise OverflowError("timestamp out of range for platform time_t")


def test_seconds_the_c_time_refuses_are_added_to_the_epoch(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    seconds = [-62_135_596_800, -86_400 * 365 * 100, -1, 0, 1_780_000_000, 253_402_300_799]
    expected = [datetime.fromtimestamp(s, UTC) for s in seconds]
    monkeypatch.setattr(feast_values, "datetime", _NarrowCTime)
    assert [feast_values.timestamp_from_seconds(s) for s in seconds] == expected
    assert feast_values.timestamps_from_seconds(seconds) == expected
    with pytest.raises(ValueError) as raised:
        feast_values.timestamp_from_seconds(10**12)
    assert str(raised.value) == ("Unix timestamp 1000000000000 (seconds) is outside the dates "
                                 "a datetime can hold (years 1 to 9999)")


# ---------------------------------------------------------------------------------------
# decode_values: a column at a time gives what decode_value gives value by value
# ---------------------------------------------------------------------------------------


def _doubles(count: int) -> list[bytes]:
    return [ValueProto(double_val=_random_double()).SerializeToString() for _ in range(count)]


def _floats(count: int) -> list[bytes]:
    return [ValueProto(float_val=RNG.uniform(-1e6, 1e6)).SerializeToString()
            for _ in range(count)]


COLUMNS = {
    "doubles": _doubles(100),
    "floats": _floats(100),
    "one double": _doubles(1),
    "empty": [],
    "doubles and floats": _doubles(50) + _floats(50),
    # 9 bytes each, like a double, with another tag: the tags must be checked, not the sizes.
    "an int among doubles": [*_doubles(40), ValueProto(int64_val=2**50).SerializeToString(),
                             *_doubles(40)],
    "a string among doubles": [*_doubles(3),
                               ValueProto(string_val="abcdefg").SerializeToString()],
    "a cut double": [*_doubles(10), _doubles(1)[0][:8], *_doubles(10)],
    "ints": [ValueProto(int64_val=_random_int(64)).SerializeToString() for _ in range(50)],
    "strings": [ValueProto(string_val=_random_text()).SerializeToString() for _ in range(50)],
    "empty values": [b""] * 30,
    "default doubles": [ValueProto(double_val=0.0).SerializeToString()] * 30,
}


@pytest.mark.parametrize("name", COLUMNS)
def test_a_column_decodes_as_each_of_its_values(name: str) -> None:
    column = COLUMNS[name]
    assert name not in ("an int among doubles", "a string among doubles") or len(
        set(map(len, column))) == 1
    _decodes_as_each_value(column)


def _decodes_as_each_value(column: list[bytes]) -> None:
    """decode_values gives what decode_value gives for each value, or its first error."""
    slow = [_outcome(decode_value, value) for value in column]
    if any(kind == "error" for kind, _ in slow):
        with pytest.raises(Exception) as raised:
            feast_values.decode_values(column)
        assert type(raised.value) is next(value for kind, value in slow if kind == "error")
        return
    fast = feast_values.decode_values(column)
    assert len(fast) == len(slow), column
    assert all(_same(f, s) and type(f) is type(s)
               for f, (_, s) in zip(fast, slow, strict=True)), column


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


# One-varint kinds by tag: int32_val, int64_val, bool_val, unix_timestamp_val.
VARINT_TAGS = (0x18, 0x20, 0x38, 0x40)


def _varint_column(rng: random.Random) -> list[bytes]:
    """A column of one-varint Values, mostly of one size, sometimes damaged: cut, a byte
    changed, an overlong or longer varint, another tag, an early end."""
    tag, bits = rng.choice(VARINT_TAGS), rng.choice([7, 14, 21, 28, 31, 32, 35, 40, 64])
    column = [bytes((tag,)) + _varint(rng.randrange(1 << bits))
              for _ in range(rng.randint(2, 12))]
    at = rng.randrange(len(column))
    value = bytearray(column[at])
    damage = rng.randrange(8)
    if damage == 0:
        value[rng.randrange(len(value))] = rng.randrange(256)
    elif damage == 1 and len(value) > 2:
        value[1] &= 0x7F  # the varint ends early; the rest reads as another field
    elif damage == 2:
        value[0] = rng.choice(VARINT_TAGS)
    elif damage == 3:
        value = value[:-1] + bytes((value[-1] | 0x80, 0))  # overlong: one byte more
    column[at] = bytes(value)
    return column


def test_varint_columns_decode_as_each_of_their_values() -> None:
    rng = random.Random(SEED)
    for _ in range(3000):
        _decodes_as_each_value(_varint_column(rng))


@pytest.mark.parametrize("kind,values", [
    ("unix_timestamp_val", [1_780_000_000 + n for n in range(10)]),
    ("int64_val", [128 + n for n in range(20)]),
    ("int64_val", [2**35 - 1, 2**34]),
    ("int32_val", [2**28 + 5, 2**30, 2**31 - 1]),
    ("bool_val", [True, True]),
])
def test_a_varint_column_is_read_at_once(kind: str, values: list[Any]) -> None:
    """Every value of one size: one parse for the column, not one per value."""
    column = [_encode(kind, value) for value in values]
    assert len(set(map(len, column))) == 1
    slow = [decode_value(value) for value in column]
    real = feast_values.decode_value
    try:
        feast_values.decode_value = None  # type: ignore[assignment]
        fast = feast_values.decode_values(column)
    finally:
        feast_values.decode_value = real
    assert fast == slow
    assert [type(value) for value in fast] == [type(value) for value in slow]
