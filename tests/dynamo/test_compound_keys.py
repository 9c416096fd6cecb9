"""Compound Feast join keys serialized and hashed a column at a time in Arrow
(`EntityKeyEncoder.entity_ids`) are the ids `entity_id` makes row by row, on generated
columns of every join-key type (int64, int32, unix timestamps at their edges, unicode text,
bytes), as Python lists or Arrow arrays of several integer types, with repeated rows, in
Feast's serialization versions 2 and 3. `unique_keys` gives each row its key's index among
the distinct ones, first seen first, as the reader's own de-duplication would.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pyarrow as pa
import pytest

from featurepull.dynamo import FeastLayout
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.feast_keys import EntityKeyEncoder
from featurepull.dynamo.layouts import unique_keys

VALUES: dict[str, list[Any]] = {
    "int64": [0, 1, -1, 2**63 - 1, -(2**63), 1003],
    "int32": [0, -(2**31), 2**31 - 1, 7],
    "unix_timestamp": [0, 1_700_000_000, -5],
    "string": ["", "a", "driver_1", "Montréal", "東京", "🚀", "a\x00b"],
    "bytes": [b"", b"\x00\xff", b"abc"],
}
ARROW_TYPES = {"int64": [pa.int64(), pa.uint32(), pa.int32()], "int32": [pa.int32(), pa.int64()],
               "unix_timestamp": [pa.int64()], "string": [pa.string(), pa.large_string()],
               "bytes": [pa.binary(), pa.large_binary()]}


def generated(rng: random.Random) -> tuple[dict[str, str], dict[str, Any], list[tuple[Any, ...]]]:
    """Join-key types, their columns (lists or Arrow) and the rows they hold, by name."""
    types = {f"k{i}": rng.choice(sorted(VALUES)) for i in range(rng.randint(2, 3))}
    rows = rng.randint(0, 40)
    columns: dict[str, Any] = {}
    for name, kind in types.items():
        values = [rng.choice(VALUES[kind]) for _ in range(rows)]
        arrow_type = rng.choice(ARROW_TYPES[kind])
        columns[name] = values
        if rng.random() < 0.5:
            # Values beyond that Arrow type stay the list they are.
            with contextlib.suppress(pa.ArrowInvalid, OverflowError):
                columns[name] = pa.array(values, arrow_type)
                if rng.random() < 0.5:  # a shard's keys, read back from its Parquet file
                    cut = rng.randint(0, rows)
                    columns[name] = pa.chunked_array([columns[name][:cut], columns[name][cut:]],
                                                     arrow_type)
    names = sorted(types)  # Feast's order
    plain = {name: c if isinstance(c, list) else c.to_pylist() for name, c in columns.items()}
    return types, columns, list(zip(*(plain[n] for n in names), strict=True))


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("seed", range(25))
def test_compound_keys_from_columns_are_each_rows_key(version: int, seed: int) -> None:
    rng = random.Random(seed)
    types, columns, rows = generated(rng)
    encoder = EntityKeyEncoder(types, version)
    names = encoder.names
    exact = [encoder.entity_id(row) for row in rows]
    assert encoder.entity_ids([columns[n] for n in names]) == exact
    layout = FeastLayout(types, version)
    assert layout.keys_for(columns) == exact
    keys, positions = unique_keys(layout, columns)
    assert positions is not None  # de-duplicated before hashing, not by the reader
    assert [keys[p] for p in positions.to_pylist()] == exact
    assert list(keys) == list(dict.fromkeys(exact))  # distinct, first seen first


def test_a_compound_key_it_cannot_vouch_for_gets_the_row_message() -> None:
    layout = FeastLayout({"a": "int64", "b": "string"})
    columns = {"a": [1, 2, None], "b": ["x", "y", "z"]}
    assert layout.encoder.entity_ids([columns["a"], columns["b"]]) is None
    with pytest.raises(EntityKeyError,
                       match=r"^e\.csv, entity row 3, column 'a': null key value"):
        layout.keys_for(columns, "e.csv")
