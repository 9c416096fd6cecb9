"""Entity ids hashed a column at a time (`featurepull.dynamo._murmur`, through
`EntityKeyEncoder.entity_ids` / `unique_entity_ids`) are byte for byte mmh3's, on generated
inputs (seeded):

- fixed-width keys whose number lands at every offset of a 16-byte block, so that the key
  ends at every tail length 0..15 and its number straddles two words, for int64 extremes,
  negatives and 0, and int32s (zero-extended, not sign-extended); an empty column, one key,
  and more keys than one chunk, from lists and from sliced or chunked Arrow arrays;
- text join keys (unicode with astral characters, empty strings, long strings ending at every
  tail length) and several join keys, in both serialization versions;
- more distinct values than one chunk (its rows hashed while a thread finds the distinct
  values): none repeated, one repeated in the last chunk, many repeated; ints
  also in a process without numpy, as a console pull runs (no numpy sort then);
- a column the fast path cannot vouch for (a bool, None, a float, a numeric string among
  ints, an int beyond its type, a lone surrogate, a bytearray) says "not sure".
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from typing import Any

import mmh3
import pyarrow as pa
import pytest

from featurepull.dynamo import _murmur
from featurepull.dynamo.feast_keys import _ID_CHUNK, EntityKeyEncoder

INT64_EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**32, -(2**32), 255, 256, -256]
INT32_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 255, -256, 65536]


def _u64(values: list[int], signed: str) -> Any:
    """The uint64 numbers of each value's little-endian bytes, as the encoder hands them."""
    width = struct.calcsize(signed)
    unsigned = {1: "<B", 4: "<I", 8: "<Q"}[width]
    return pa.array([struct.unpack(unsigned, struct.pack(signed, v))[0] for v in values],
                    pa.uint64())


@pytest.mark.parametrize("signed", ["<q", "<i"])
def test_fixed_width_ids_at_every_offset_are_mmh3s(signed: str) -> None:
    rng = random.Random(5)
    width = struct.calcsize(signed)
    edges = INT64_EDGES if width == 8 else INT32_EDGES
    bits = 8 * width
    for head_size in range(48):  # the key ends at every tail length, three blocks deep
        head = rng.randbytes(head_size)
        values = edges + [rng.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1)) for _ in range(20)]
        expected = [mmh3.hash_bytes(head + struct.pack(signed, v)).hex() for v in values]
        assert _murmur.fixed_width_hex(head, _u64(values, signed), width) == expected, head_size


def test_fixed_width_ids_of_no_key_one_key_and_more_than_a_chunk() -> None:
    head = b"h" * 29
    assert _murmur.fixed_width_hex(head, pa.array([], pa.uint64()), 8) == []
    assert _murmur.fixed_width_hex(head, _u64([-7], "<q"), 8) == [
        mmh3.hash_bytes(head + struct.pack("<q", -7)).hex()]
    rng = random.Random(6)
    values = [rng.randrange(-(2**63), 2**63) for _ in range(_murmur._CHUNK + 3)]
    expected = [mmh3.hash_bytes(head + struct.pack("<q", v)).hex() for v in values]
    # A slice: the array's offset is honoured where its buffer is reread.
    sliced = _u64([0, *values], "<q").slice(1)
    assert _murmur.fixed_width_hex(head, sliced, 8) == expected


def _exact(encoder: EntityKeyEncoder, rows: list[tuple[Any, ...]]) -> list[str]:
    return [encoder.entity_id(row) for row in rows]


def _first_seen(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _check_columns(encoder: EntityKeyEncoder, columns: list[Any], rows: list[tuple[Any, ...]]
                   ) -> None:
    exact = _exact(encoder, rows)
    assert encoder.entity_ids(columns) == exact
    unique = encoder.unique_entity_ids(columns)
    assert unique is not None
    keys, positions = unique
    assert keys == _first_seen(exact)
    assert [keys[p] for p in positions.to_pylist()] == exact


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("kind", ["int64", "int32", "unix_timestamp"])
def test_int_key_ids_from_lists_and_arrow_are_each_rows(kind: str, version: int) -> None:
    rng = random.Random(7)
    edges = INT32_EDGES if kind == "int32" else INT64_EDGES
    bits = 32 if kind == "int32" else 64
    for name_size in range(1, 17):  # the number at every offset within a block
        encoder = EntityKeyEncoder({"k" * name_size: kind}, version)
        values = edges + [rng.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1))
                          for _ in range(rng.randint(0, 30))]
        values += rng.choices(values, k=3)  # repeats: a hash table de-duplicates
        rng.shuffle(values)
        rows = [(v,) for v in values]
        arrow = pa.array([0, *values], pa.int64()).slice(1)  # an offset into its buffer
        cut = rng.randint(0, len(values))
        chunked = pa.chunked_array([values[:cut], values[cut:]], pa.int64())
        for column in (values, arrow, chunked):
            _check_columns(encoder, [column], rows)
        distinct = list(dict.fromkeys(values))  # one sort says so: rows are their own ids
        _check_columns(encoder, [distinct], [(v,) for v in distinct])


def test_an_empty_column_and_one_key() -> None:
    for kind, value in [("int64", -(2**63)), ("int32", -1), ("string", "🚀")]:
        encoder = EntityKeyEncoder({"driver_id": kind})
        _check_columns(encoder, [[]], [])
        _check_columns(encoder, [[value]], [(value,)])


def _texts(rng: random.Random) -> list[str]:
    alphabet = "aZ0 é東🚀\x00"
    texts = ["", "a", "🚀", "𝄞" * 5, "x" * 300]
    texts += ["".join(rng.choices(alphabet, k=size)) for size in range(48)]
    return texts


@pytest.mark.parametrize("version", [2, 3])
def test_text_and_several_keys_are_each_rows(version: int) -> None:
    rng = random.Random(8)
    texts = _texts(rng)
    encoder = EntityKeyEncoder({"name": "string"}, version)
    _check_columns(encoder, [texts], [(t,) for t in texts])
    _check_columns(encoder, [pa.array(texts, pa.large_string())], [(t,) for t in texts])
    several = EntityKeyEncoder({"b": "int32", "a": "string", "c": "int64"}, version)
    rows = [(rng.choice(texts), rng.choice(INT32_EDGES), rng.choice(INT64_EDGES))
            for _ in range(200)]
    columns = [list(column) for column in zip(*rows, strict=True)]
    _check_columns(several, columns, rows)


@pytest.mark.parametrize(("kind", "column"), [
    ("int64", [1, True]),
    ("int64", [1, None]),
    ("int64", [1, 2.0]),
    ("int64", [1, "2"]),
    ("int64", [2**63]),
    ("int64", [-(2**63) - 1]),
    ("int32", [2**31]),
    ("int32", [-(2**31) - 1]),
    ("string", ["a", "\ud800"]),
    ("string", ["a", b"a"]),
    ("bytes", [b"a", bytearray(b"a")]),
])
def test_a_column_it_cannot_vouch_for_is_not_sure(kind: str, column: list[Any]) -> None:
    encoder = EntityKeyEncoder({"k": kind})
    assert not encoder.columns_encodable([column])
    assert encoder.entity_ids([column]) is None
    assert encoder.unique_entity_ids([column]) is None


def _long_columns(values: list[Any]) -> list[list[Any]]:
    """Distinct values over two chunks, and the same with a repeat in the last chunk (found
    once the first chunk is hashed) and with many repeats."""
    rng = random.Random(10)
    return [values, [*values[:-1], values[0]], rng.choices(values[:1000], k=len(values))]


def _check_long(encoder: EntityKeyEncoder, column: list[Any], keys: list[str],
                positions: list[int]) -> None:
    ids = {value: encoder.entity_id((value,)) for value in set(column)}
    exact = [ids[value] for value in column]
    assert keys == _first_seen(exact)
    assert [keys[p] for p in positions] == exact


def test_long_text_columns_are_each_rows_first_seen() -> None:
    encoder = EntityKeyEncoder({"name": "string"})
    for column in _long_columns([f"é{i}" for i in range(_ID_CHUNK + 100)]):
        unique = encoder.unique_entity_ids([column])
        assert unique is not None
        _check_long(encoder, column, unique[0], unique[1].to_pylist())


_WITHOUT_NUMPY = """
import json, sys
from featurepull.cli import _NOT_FOR_A_PULL, _Blocked
sys.meta_path.insert(0, _Blocked(_NOT_FOR_A_PULL))
from featurepull.dynamo.feast_keys import EntityKeyEncoder
encoder = EntityKeyEncoder({"driver_id": "int64"})
for column in json.load(sys.stdin):
    for ahead in (0, 3200):  # and with the keys past the first 3,200 hashed on a thread
        keys, positions = encoder.unique_entity_ids([column], ahead)
        print(json.dumps([list(keys), positions.to_pylist()]))
assert "numpy" not in sys.modules
"""


def test_long_int_columns_without_numpy_are_each_rows_first_seen() -> None:
    # As a console pull hashes them (numpy blocked): no sort tells that the values are
    # distinct, a hash table on a thread does.
    encoder = EntityKeyEncoder({"driver_id": "int64"})
    columns = _long_columns([v * 7919 - 2**40 for v in range(_ID_CHUNK + 100)])
    done = subprocess.run([sys.executable, "-c", _WITHOUT_NUMPY], input=json.dumps(columns),
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    for column, plain, ahead in zip(columns, lines[::2], lines[1::2], strict=True):
        _check_long(encoder, column, *json.loads(plain))
        assert ahead == plain
