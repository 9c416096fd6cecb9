"""Every kind of Feast's own ``Value`` message, walked from Feast's generated descriptor (so a
kind a newer Feast adds fails here until featurepull mirrors it): featurepull's descriptor has
the same fields and numbers, and each kind serialized by Feast decodes to the documented
Python value on both the protobuf path and the byte-level fast path. tests/feast_writer.py is
pinned to Feast's encoding of the same samples."""

from __future__ import annotations

import re
from typing import Any

import pytest
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.descriptor import Descriptor

from featurepull.dynamo import feast_values
from featurepull.dynamo.feast_values import FeastValueError, ValueProto, decode_value
from tests.feast_kinds import SAMPLES
from tests.feast_writer import KINDS, encode_value, expected_python, same_python

FEAST_KINDS = [field.name for field in Value.DESCRIPTOR.fields]


def _shape(message: Descriptor, seen: set[str] | None = None) -> dict[str, Any]:
    """A message's fields (name, number, type, repeated and packed, oneof) and those of the
    messages they hold, recursively: equal shapes serialize and parse identically."""
    seen = set() if seen is None else seen
    seen.add(message.full_name)
    shape: dict[str, Any] = {}
    for field in message.fields:
        nested = field.message_type or field.enum_type
        shape[field.name] = (field.number, field.type, field.is_repeated, field.is_packed,
                             field.containing_oneof.name if field.containing_oneof else None,
                             nested.full_name if nested else None)
        if field.message_type and field.message_type.full_name not in seen:
            shape[f"{field.name}:"] = _shape(field.message_type, seen)
    return shape


def test_descriptor_matches_feasts() -> None:
    assert _shape(ValueProto.DESCRIPTOR) == _shape(Value.DESCRIPTOR)


def test_every_feast_kind_has_a_sample_and_a_writer() -> None:
    assert sorted(SAMPLES) == sorted(FEAST_KINDS)
    assert set(FEAST_KINDS) == KINDS


@pytest.mark.parametrize("kind", FEAST_KINDS)
def test_feast_serialized_kind_decodes(kind: str) -> None:
    sample = SAMPLES[kind]
    assert sample.feast.WhichOneof("val") == kind
    data = sample.feast.SerializeToString()
    for decode in (feast_values._decode_proto, decode_value):
        got = decode(data)
        assert same_python(got, sample.python), (decode.__name__, got, sample.python)
    column = feast_values.decode_values([data] * 3)
    assert all(same_python(got, sample.python) for got in column), column
    assert sample.python is None or got is not None


@pytest.mark.parametrize("kind", FEAST_KINDS)
def test_writer_encodes_kind_as_feast_does(kind: str) -> None:
    sample = SAMPLES[kind]
    data = encode_value(kind, sample.writer)
    assert Value.FromString(data) == sample.feast  # message equality: map order aside
    assert same_python(expected_python(kind, sample.writer), sample.python)


# --- kinds that cannot be decoded fail loudly, never None ------------------------------


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + bytes([len(payload)]) + payload  # payloads here are under 128 bytes


def test_a_kind_newer_than_this_mirror_fails_loudly() -> None:
    future = _field(b"\xca\x03", b"hi")  # field 57, length-delimited: no Feast 0.67 kind
    in_map = _field(b"\xa2\x01", _field(b"\x0a", b"\x0a\x01a" + _field(b"\x12", future)))
    in_list = _field(b"\xd2\x02", _field(b"\x0a", future))  # list_val's RepeatedValue
    assert ValueProto.FromString(in_map).map_val.val["a"].WhichOneof("val") is None
    for data in (future, in_map, in_list):
        with pytest.raises(FeastValueError, match=r"field 57\b.*newer Feast"):
            decode_value(data)


def test_the_module_gives_protobufs_value_class_and_no_other_name() -> None:
    from featurepull.dynamo import _feast_value_proto

    assert feast_values.ValueProto is _feast_value_proto.ValueProto
    with pytest.raises(AttributeError, match=r"^module 'featurepull\.dynamo\.feast_values' has "
                                             r"no attribute 'ValueProtos'$"):
        feast_values.ValueProtos  # noqa: B018


def test_an_empty_value_is_none() -> None:
    assert decode_value(b"") is None
    assert decode_value(Value(map_val={"val": {"a": Value()}}).SerializeToString()) == {"a": None}


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "+5", "../etc/passwd"])
def test_an_unknown_zone_fails_loudly(zone: str) -> None:
    data = Value(zoned_timestamp_val={"unix_timestamp": 5, "zone": zone}).SerializeToString()
    with pytest.raises(FeastValueError, match=re.escape(f"zoned_timestamp_val has zone {zone!r}")):
        decode_value(data)


def test_a_zoned_time_beyond_the_years_of_a_datetime_in_utc_fails_naming_the_kind() -> None:
    # Its local time outside them is checked end to end (tests/test_cli_pull_kinds.py).
    data = Value(zoned_timestamp_val={"unix_timestamp": 253_402_300_800,  # year 10000
                                      "zone": "UTC"}).SerializeToString()
    with pytest.raises(FeastValueError, match=r"^zoned_timestamp_val: Unix timestamp "
                                              r"253402300800 \(seconds\) is outside"):
        decode_value(data)


@pytest.mark.parametrize(("zone", "offset_minutes"), [
    ("", 0), ("UTC", 0), ("GMT", 0), (" UTC", 0), ("+05:30", 330), ("UTC-07:00", -420), ("-0300", -180),
    ("Asia/Kathmandu", 345)])
def test_zones_as_feast_reads_them(zone: str, offset_minutes: int) -> None:
    data = Value(zoned_timestamp_val={"unix_timestamp": 1_700_000_000,
                                      "zone": zone}).SerializeToString()
    got = decode_value(data)
    assert got.timestamp() == 1_700_000_000
    offset = got.utcoffset()
    assert offset is not None and offset.total_seconds() == offset_minutes * 60


def test_malformed_bytes_fail_as_a_value_error() -> None:
    # protobuf's DecodeError is no ValueError: the reader would not name the item at fault.
    with pytest.raises(FeastValueError, match="not a serialized Feast Value"):
        decode_value(b"\x92\x02\x05ab")
