"""A column of Feast values decoded at once gives exactly what decoding each value gives:
``decode_values`` (bytes) against ``decode_value`` value by value, ``decode_base64_values``
(the wire's base64 text) against ``a2b_base64`` then ``decode_value``, and the layout's
``event_times`` against ``parse_event_ts`` — on generated columns, damaged at random (cut,
a byte or character changed, added or dropped, padding moved), including the first error's
type when a value cannot be decoded."""

from __future__ import annotations

import base64
import math
import random
from binascii import a2b_base64
from typing import Any

import pytest

from featurepull.dynamo import feast_values
from featurepull.dynamo.feast_values import ValueProto, decode_base64_values, decode_value
from featurepull.dynamo.layouts import event_times, parse_event_ts
from tests.dynamo.test_feast_values_fast import _outcome, _same

pytestmark = pytest.mark.mutation_first  # in-process and fast (scripts/mutation.sh)
SEED = 20261202
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@pytest.fixture(autouse=True)
def _short_columns_joined_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The joined paths for columns of any length, so that short generated columns (easy
    to read when one fails) go through them; no struct cached by an earlier test."""
    monkeypatch.setattr(feast_values, "MIN_JOINED", 2)
    monkeypatch.setattr(feast_values, "_column_structs", {})  # each test makes its own structs


def _column_as_each(column_decode: Any, one: Any, column: list[Any]) -> None:
    """The column decoder gives what ``one`` gives for each value, or its first error."""
    slow = [_outcome(one, value) for value in column]
    errors = [value for kind, value in slow if kind == "error"]
    fast = _outcome(column_decode, column)
    if errors:
        assert fast == ("error", errors[0]), (column, fast, errors[0])
        return
    assert fast[0] == "value", (column, fast)
    assert len(fast[1]) == len(slow), column
    assert all(_same(f, s) for f, (_, s) in zip(fast[1], slow, strict=True)), (column, fast)


def _encode(kind: str, value: Any) -> bytes:
    return bytes(ValueProto(**{kind: value}).SerializeToString())


def _random_value(rng: random.Random, kind: str, width: int) -> Any:
    if kind in ("double_val", "float_val"):
        return rng.choice([rng.uniform(-1e6, 1e6), rng.random(), 0.0, -0.0, math.nan, math.inf])
    if kind == "string_val":
        alphabet = "abcXYZ09 -éüßЖ中🙂\u0000"
        return "".join(rng.choice(alphabet) for _ in range(width))
    if kind == "bool_val":
        return rng.random() < 0.5
    if kind == "int32_val":
        return rng.choice([rng.randrange(1 << min(width, 31)), -rng.randrange(1 << 31)])
    value = rng.randrange(1 << width)
    return value if rng.random() < 0.9 else -value


KINDS = ("double_val", "float_val", "int64_val", "int32_val", "bool_val", "string_val",
         "unix_timestamp_val")


def _column(rng: random.Random) -> list[bytes]:
    """Values mostly of one kind and size (as a feature's column is), sometimes of several
    sizes, another kind, or empty; and then sometimes damaged."""
    kind = rng.choice(KINDS)
    widths = [rng.choice([3, 7, 14, 21, 28, 35, 40, 63]) for _ in range(rng.choice([1, 1, 2]))]
    if kind == "string_val":
        widths = [rng.choice([0, 1, 3, 8, 40, 127, 130]) for _ in widths]
    column = [_encode(kind, _random_value(rng, kind, rng.choice(widths)))
              for _ in range(rng.randint(2, 14))]
    if rng.random() < 0.1:
        other = rng.choice(KINDS)
        column[rng.randrange(len(column))] = _encode(other, _random_value(rng, other, 7))
    if rng.random() < 0.05:
        column[rng.randrange(len(column))] = b""
    if rng.random() < 0.5:
        at = rng.randrange(len(column))
        value = bytearray(column[at])
        damage = rng.randrange(5)
        if damage == 0 and value:
            value[rng.randrange(len(value))] = rng.randrange(256)
        elif damage == 1 and value:
            del value[rng.randrange(len(value))]
        elif damage == 2:
            value.insert(rng.randrange(len(value) + 1), rng.randrange(256))
        elif damage == 3 and len(value) > 1:
            value[-1] |= 0x80  # a varint (or a text) that runs on
        else:
            value[1:2] = bytes((value[1] | 0x80, 0)) if len(value) > 1 else b""  # overlong
        column[at] = bytes(value)
    return column


def test_generated_columns_decode_as_each_of_their_values() -> None:
    rng = random.Random(SEED)
    for _ in range(4000):
        _column_as_each(feast_values.decode_values, decode_value, _column(rng))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _damaged_text(rng: random.Random, text: str) -> str:
    chars = list(text)
    damage = rng.randrange(7)
    at = rng.randrange(len(chars)) if chars else 0
    if damage == 0 and chars:
        chars[at] = rng.choice(B64_ALPHABET)
    elif damage == 1:
        chars.insert(at, rng.choice("=,*\n é" + B64_ALPHABET))
    elif damage == 2 and chars:
        del chars[at]
    elif damage == 3 and chars:
        chars[at] = rng.choice("=,*é")
    elif damage == 4 and chars and chars[-1] == "=":
        chars[-1] = "A"  # padding dropped: not a multiple of 4, or a longer value
    elif damage == 5 and len(chars) > 1 and chars[-1] == "=":
        chars[-2] = rng.choice(B64_ALPHABET)  # bits the padding discards, set
    else:
        chars.extend(rng.choice(["=", "==", "AAAA", "A="]))
    return "".join(chars)


def _one_width_column(rng: random.Random) -> list[str]:
    """Base64 texts as the wire has them: mostly one width (the joined decode), sometimes
    one or two texts damaged."""
    texts = [_b64(value) for value in _column(rng)]
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        at = rng.randrange(len(texts))
        texts[at] = _damaged_text(rng, texts[at])
    return texts


def _each_text(texts: list[str]) -> list[Any]:
    """The column as the layout decoded it before: every text to bytes, then the values."""
    return feast_values.decode_values(list(map(a2b_base64, texts)))


def test_generated_base64_columns_decode_as_each_of_their_texts() -> None:
    rng = random.Random(SEED + 1)
    for _ in range(4000):
        texts = _one_width_column(rng)
        fast, slow = _outcome(decode_base64_values, texts), _outcome(_each_text, texts)
        assert fast[0] == slow[0], (texts, fast, slow)
        if fast[0] == "error":
            assert fast[1] is slow[1], (texts, fast, slow)
        else:
            assert all(_same(f, s) for f, s in zip(fast[1], slow[1], strict=True)), texts


@pytest.mark.parametrize("kind,values", [
    ("double_val", [0.5, -1.25, math.inf]),
    ("double_val", [0.5, -1.25]),  # exactly MIN_JOINED texts
    ("float_val", [0.5, 3.25, -2.0]),  # one "=" of padding each
    ("unix_timestamp_val", [1_780_000_000, 1_780_000_777, 1_780_086_400]),
    ("int64_val", [1, 127, 100]),  # one "=" each (2 bytes)
    ("int64_val", [20_000, 30_000, 2**21 - 1]),  # two "=" each (4 bytes)
    ("string_val", ["Oslo", "Rome", "Lima"]),
])
def test_texts_of_one_width_are_decoded_as_one(kind: str, values: list[Any]) -> None:
    """Not value by value: one base64 decode for the column, and no decode_value."""
    texts = [_b64(_encode(kind, value)) for value in values]
    assert len(set(map(len, texts))) == 1
    slow = [decode_value(a2b_base64(text)) for text in texts]
    fast = _value_by_value_off(decode_base64_values, texts, "decode_value", "decode_values")
    assert all(_same(f, s) for f, s in zip(fast, slow, strict=True)), (fast, slow)


def test_texts_of_other_widths_are_not_read_as_one_width() -> None:
    """12, 8 and 16 characters: as many bytes as three doubles, and the second and third
    hold a double's tag where a second and third double would start."""
    double = _encode("double_val", 0.5)
    texts = [_b64(double), _b64(b"\x29" + bytes(5)), _b64(bytes(3) + double[:9])]
    assert [len(text) for text in texts] == [12, 8, 16]
    assert _outcome(decode_base64_values, texts) == _outcome(_each_text, texts)
    assert _outcome(_each_text, texts)[0] == "error"


def test_empty_texts_are_empty_values() -> None:
    assert decode_base64_values(["", "", ""]) == [None, None, None]


def test_a_column_of_no_texts_is_no_values() -> None:
    assert decode_base64_values([]) == []  # below MIN_JOINED: never asked as one width


def test_padding_inside_a_text_is_not_read_as_its_end() -> None:
    """As many "=" as texts of two padding characters have, one of them moved inside."""
    texts = [_b64(_encode("int64_val", n)) for n in (20_000, 30_000, 40_000)]
    assert all(len(text) == 8 and text.endswith("==") for text in texts)
    texts[1] = texts[1][:5] + "=" + texts[1][5] + "="
    assert _outcome(decode_base64_values, texts) == _outcome(_each_text, texts)


@pytest.mark.parametrize("kind,values", [
    ("int64_val", [1, 300, 70_000, -5, 0]),
    ("bool_val", [True, False, True]),
    ("unix_timestamp_val", [0, 1_780_000_000, 5]),
    ("string_val", ["Oslo", "São Paulo", "", "x" * 127]),
    ("int64_val", [1, 300]),  # exactly MIN_JOINED values
    # one size each: the smallest and largest strings, the longest varints
    ("string_val", ["", "", ""]),
    ("string_val", ["x" * 127, "y" * 127]),
    ("int64_val", [-1, -5, -(2**40)]),
])
def test_values_of_several_sizes_are_decoded_as_a_column(kind: str, values: list[Any]) -> None:
    column = [_encode(kind, value) for value in values]
    slow = [decode_value(value) for value in column]
    fast = _value_by_value_off(feast_values.decode_values, column, "decode_value")
    assert all(_same(f, s) for f, s in zip(fast, slow, strict=True)), (fast, slow)


def _value_by_value_off(decode: Any, column: list[Any], *names: str) -> Any:
    """``decode(column)`` with feast_values' functions ``names`` unusable: it must not
    fall back to them."""
    real = {name: getattr(feast_values, name) for name in names}
    for name in names:
        setattr(feast_values, name, None)
    try:
        return decode(column)
    finally:
        for name, function in real.items():
            setattr(feast_values, name, function)


def test_columns_the_joined_paths_must_decline_decode_as_each_of_their_values() -> None:
    """A string of 130 bytes whose length byte is 128 (not a one-byte varint: protobuf
    refuses it), alone and among other sizes; bytes values (a length too, but no text) of
    several sizes; one-varint values of a tag that is none of the varint kinds."""
    long_length = b"\x12\x80" + b"a" * 128
    columns = [[long_length] * 3, [long_length, _encode("string_val", "Oslo")],
               [_encode("bytes_val", b"x" * size) for size in (1, 5, 40)],
               [b"\x08\x80\x01"] * 3]
    for column in columns:
        _column_as_each(feast_values.decode_values, decode_value, column)


def test_the_structs_of_columns_are_made_once_and_kept_for_256_shapes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feast_values, "_column_structs", {})
    doubles = [_encode("double_val", float(n)) for n in range(300)]
    for count in range(2, 300):
        assert feast_values.decode_values(doubles[:count]) == [float(n) for n in range(count)]
    kept = feast_values._column_structs
    assert len(kept) == 256
    assert all(unpack.format == "<" + (item + "x" * pad) * count
               for (item, pad, count), unpack in kept.items())
    assert feast_values._column_struct("xd", 0, 2) is feast_values._column_struct("xd", 0, 2)


def test_timestamps_out_of_the_c_range_take_the_same_fallback() -> None:
    seconds = [0, -62_135_596_800, 253_402_300_799, 10**10]
    assert feast_values.timestamps_from_seconds(seconds) == list(
        map(feast_values.timestamp_from_seconds, seconds))
    with pytest.raises(ValueError, match="outside the dates"):
        feast_values.timestamps_from_seconds([0, 10**12])


EVENT_TIMES = ["2026-11-01 01:21:30.907970+00:00", "2026-11-01 00:00:00+00:00",
               "2026-11-01T05:00:00", "2026-11-01 05:00:00+02:00", "2026-11-01T05:00:00Z",
               "2026-11-01 05:00:00.5-07:30", "not a time", "2026-13-01 00:00:00",
               # Years 1 and 9999, inside and past them in UTC (parse_event_ts refuses those).
               "9999-12-31 23:00:00-05:00", "0001-01-01 00:00:00+05:00",
               "9999-12-31 23:59:59+00:00", "0001-01-01 00:00:00+00:00",
               "0001-01-01T06:00:00+05:00", "9999-12-31T23:59:59.999999", "0001-01-01T00:00:00"]


def test_event_times_are_parsed_as_each_item_is() -> None:
    rng = random.Random(SEED + 2)

    def one(item: dict[str, Any]) -> Any:
        return parse_event_ts(item["event_ts"]["S"]) if "event_ts" in item else None

    for _ in range(2000):
        items: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 8)):
            choice = rng.random()
            if choice < 0.05:
                items.append({})
            elif choice < 0.08:
                items.append({"event_ts": {"N": "5"}})
            else:
                pool = EVENT_TIMES if rng.random() < 0.3 else EVENT_TIMES[:2]
                items.append({"event_ts": {"S": rng.choice(pool)}})
        slow = [_outcome(one, item) for item in items]
        errors = [value for kind, value in slow if kind == "error"]
        fast = _outcome(event_times, items)
        if errors:
            assert fast == ("error", errors[0]), (items, fast)
        else:
            assert fast[0] == "value" and len(fast[1]) == len(slow)
            assert all(_same(f, s) for f, (_, s) in zip(fast[1], slow, strict=True)), items
