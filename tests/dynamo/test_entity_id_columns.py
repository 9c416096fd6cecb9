"""Whole-column entity ids (`EntityKeyEncoder.entity_ids`) are the row-by-row ones, for every
join-key type a single key can have."""

from __future__ import annotations

import random
from typing import Any

import pytest

from featurepull.dynamo import EntityKeyEncoder

RNG = random.Random(11)
COLUMNS: dict[str, list[Any]] = {
    "int64": [0, -1, 2**63 - 1, -(2**63), *(RNG.randrange(-(2**63), 2**63) for _ in range(200))],
    "int32": [0, -1, 2**31 - 1, -(2**31), *(RNG.randrange(-(2**31), 2**31) for _ in range(200))],
    "unix_timestamp": [0, 1_700_000_000, -5, 2**63 - 1],
    "string": ["", "a", "São Paulo", "東京", "x" * 300, *(str(RNG.random()) for _ in range(200))],
    "bytes": [b"", b"\x00", b"\xff" * 40, *(RNG.randbytes(RNG.randint(1, 30)) for _ in range(200))],
}


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("kind", sorted(COLUMNS))
def test_whole_column_ids_equal_row_by_row_ids(kind: str, version: int) -> None:
    encoder = EntityKeyEncoder({"k": kind}, version)
    column = COLUMNS[kind]
    assert encoder.entity_ids([column]) == [encoder.entity_id([value]) for value in column]


def test_a_column_it_cannot_vouch_for_goes_row_by_row() -> None:
    assert EntityKeyEncoder({"k": "string"}).entity_ids([["a", 1]]) is None
    assert EntityKeyEncoder({"k": "int32"}).entity_ids([[2**31]]) is None
    assert EntityKeyEncoder({"k": "bytes"}).entity_ids([[b"a", "a"]]) is None
