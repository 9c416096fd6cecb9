"""Plain-layout keys converted a column at a time (`PlainLayout.keys_for` when a pass over each
column vouches for it) are the keys converted a value at a time, or the row path runs and
gives its message: on generated columns of text (unicode, empty, at and over DynamoDB's key
sizes, lone surrogates), numbers (ints at 64 bits and beyond, floats, numeric text, bools)
and bytes, one or two key attributes, as lists or Arrow arrays."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pyarrow as pa
import pytest

from featurepull.dynamo import PlainLayout
from featurepull.dynamo.errors import EntityKeyError

VALUES: dict[str, list[Any]] = {
    "S": ["a", "driver_7", "Montréal", "東京", "x" * 1024, "y" * 1025, "z" * 2048, "z" * 2049],
    "N": [0, 1, -7, 2**63 - 1, -(2**63), 10**20],
    "B": [b"\x00", b"abc", b"k" * 1024, b"k" * 1025],
}
ODD = {"S": ["", 5, "\ud800", None, b"b"], "N": [1.5, "12", True, None, "1_0", 10**40],
       "B": [b"", "s", None]}


def outcome(call: Any) -> Any:
    try:
        return call()
    except EntityKeyError as exc:
        return f"EntityKeyError: {exc}"


@pytest.mark.parametrize("seed", range(40))
def test_column_keys_are_the_row_keys(seed: int) -> None:
    rng = random.Random(seed)
    schema = [(f"k{i}", rng.choice("SNB")) for i in range(rng.randint(1, 2))]
    layout = PlainLayout(schema)
    rows = rng.randint(0, 30)
    columns: dict[str, Any] = {}
    for name, atype in schema:
        pool = VALUES[atype] + (ODD[atype] if rng.random() < 0.3 else [])
        values = [rng.choice(pool) for _ in range(rows)]
        columns[name] = values
        if rng.random() < 0.3:  # values Arrow cannot hold together stay a list
            with contextlib.suppress(pa.ArrowException, ValueError, TypeError, OverflowError):
                columns[name] = pa.array(values)
    want = outcome(lambda: layout._keys_by_row(
        {n: c.to_pylist() if isinstance(c, pa.Array) else c for n, c in columns.items()},
        "e.csv"))
    got = outcome(lambda: layout.keys_for(columns, "e.csv"))
    assert got == want
    if not isinstance(want, str):
        assert [type(part) for key in got for part in (key if len(schema) > 1 else (key,))] \
            == [type(part) for key in want for part in (key if len(schema) > 1 else (key,))]


@pytest.mark.parametrize(("atype", "odd"), [(atype, odd) for atype, values in ODD.items()
                                            for odd in values])
def test_one_odd_value_in_a_column_is_what_the_row_path_makes_of_it(atype: str, odd: Any
                                                                    ) -> None:
    layout = PlainLayout([("id", atype)])
    columns = {"id": [VALUES[atype][1], odd]}
    assert outcome(lambda: layout.keys_for(columns, "e.csv")) == outcome(
        lambda: layout._keys_by_row(columns, "e.csv"))


@pytest.mark.parametrize("atype", ["S", "B"])
def test_the_row_path_takes_keys_at_the_size_limits_and_refuses_one_byte_more(atype: str
                                                                             ) -> None:
    def key(size: int) -> Any:
        return "k" * size if atype == "S" else b"k" * size

    layout = PlainLayout([("id", atype), ("at", atype)])  # hash key 2,048 bytes, range 1,024
    assert layout._keys_by_row({"id": [key(2048)], "at": [key(1024)]}, "e.csv") == [
        (key(2048), key(1024))]
    for too_long in ({"id": [key(2049)], "at": [key(1)]}, {"id": [key(1)], "at": [key(1025)]}):
        with pytest.raises(EntityKeyError, match=r"key is (2049|1025) bytes; DynamoDB allows"):
            layout._keys_by_row(too_long, "e.csv")


def test_a_column_of_one_type_that_is_not_the_keys_goes_value_by_value() -> None:
    # Ints for a text key are their text (not Decimals); bytes for a number key are refused.
    assert PlainLayout([("id", "S")]).keys_for({"id": [5, 7]}) == ["5", "7"]
    with pytest.raises(EntityKeyError, match=r"^e\.csv, entity row 1, column 'id': \"b'1'\" "
                                             "is not a number"):
        PlainLayout([("id", "N")]).keys_for({"id": [b"1", b"2"]}, "e.csv")
