"""The CSV fast path's typing pass (`_type_text_column`: an int64 cast checked by writing it
back, else a regex pass in Arrow) types every column as the exact reader's rule does
(`_type_csv_column`, value by value in Python): the same type, values and note, on generated
columns of the values the rule tells apart, in one chunk or several, and for an int64 or
string column the same values as an Arrow array of that type (`EntityTable.arrays`, which a
pull's Feast keys are built from); and the cast alone (`int64_column`) takes exactly the
columns the rule calls int64."""

from __future__ import annotations

import io
import random
from typing import Any

import pyarrow as pa
import pytest

from featurepull.io._csv_entities import (
    _LineIndex,
    _read_csv_exactly,
    _type_csv_column,
    _type_text_column,
    _typed_text_column,
    int64_column,
    read_csv_fast,
)

pytestmark = pytest.mark.mutation_first  # in-process and fast (scripts/mutation.sh)

# Integers of the rule, at and past int64's edges.
INTS = ["0", "1", "17", "-5", "9223372036854775807", "-9223372036854775808", "1000000007"]
# Texts Arrow's cast may read as numbers but the rule does not (leading zeros, signs, "-0",
# spaces, exponents, other digits), integers beyond int64, and plain text.
NOT_INTS = ["007", "00", "-0", "-007", "+3", "+0", " 5", "5 ", "1e3", "1.0", "0x10", "1_000",
            "\uff11", "\u0661", "9223372036854775808", "-9223372036854775809",
            "99999999999999999999", "abc", "-", "x y"]
ARROW_TYPES = {"int64": pa.int64(), "string": pa.string()}


def generated_column(rng: random.Random) -> list[str | None]:
    """Mostly integers (an int64 column), sometimes with one or a few other values among
    them, anywhere (first, last, middle), and blanks; or mostly other values."""
    size = rng.choice([1, 2, rng.randint(3, 50)])
    if rng.random() < 0.7:
        values: list[str | None] = [rng.choice(INTS) for _ in range(size)]
        for _ in range(rng.choice([0, 0, 1, 2])):
            values[rng.choice([0, size - 1, rng.randrange(size)])] = rng.choice(NOT_INTS)
    else:
        values = [rng.choice(NOT_INTS + INTS[:1]) for _ in range(size)]
    for _ in range(rng.choice([0, 0, 1, size])):
        values[rng.randrange(size)] = None
    return values


def chunked(values: list[str | None], rng: random.Random) -> pa.ChunkedArray:
    cut = rng.randint(0, len(values))
    parts = [values] if rng.random() < 0.5 else [values[:cut], values[cut:]]
    return pa.chunked_array([pa.array(part, pa.string()) for part in parts], pa.string())


def plain_typing(values: list[str | None]) -> tuple[str, list[Any], str | None]:
    column = list(values)
    kind, note = _type_csv_column(column, _LineIndex())
    return kind, column, note


@pytest.mark.parametrize("seed", range(3))
def test_the_typing_pass_is_the_exact_readers(seed: int) -> None:
    rng = random.Random(seed)
    kinds: dict[str, int] = {}
    for _ in range(600):
        values = generated_column(rng)
        column = chunked(values, rng)
        expected = plain_typing(values)
        *fast, array = _type_text_column(column)
        assert tuple(fast) == expected, values
        assert [type(value) for value in fast[1]] == [type(value) for value in expected[1]]
        if expected[0] in ARROW_TYPES:  # the same values, as Arrow, for the keys
            assert array is not None and array.type == ARROW_TYPES[expected[0]], values
            assert array.to_pylist() == expected[1]
        else:
            assert array is None
        kinds[expected[0]] = kinds.get(expected[0], 0) + 1
        if expected[0] != "null":
            numbers = int64_column(column)
            assert (numbers is not None) == (expected[0] == "int64"), values
            if numbers is not None:
                assert numbers.type == pa.int64() and numbers.to_pylist() == expected[1]
    assert min(kinds.get(kind, 0) for kind in ("int64", "string", "mixed", "null")) > 10, kinds


@pytest.mark.parametrize(("values", "kind"), [
    (["1", None, "-7"], "int64"), (["abc", "007", None], "string"), (["x"] * 3, "string")])
def test_an_int64_or_text_column_is_left_as_its_arrow_array(values: list[str | None],
                                                            kind: str) -> None:
    # What spares a pull a million Python values (ArrowBackedColumns converts when asked).
    typed, column, note, array = _typed_text_column(pa.chunked_array([values], pa.string()))
    assert (typed, note) == (kind, None)
    assert isinstance(column, pa.ChunkedArray) and column is array
    assert column.type == ARROW_TYPES[kind]


@pytest.mark.parametrize("seed", range(2))
def test_a_generated_file_reads_as_the_exact_reader_reads_it(seed: int) -> None:
    """Whole files (a BOM, CRLF, a blank-only column beside the others): the fast reader's
    table is the exact reader's."""
    rng = random.Random(seed)
    taken = 0
    for _ in range(60):
        width = rng.randint(1, 3)
        columns = [generated_column(rng) for _ in range(width)]
        rows = min(map(len, columns))
        lines = [",".join(f"c{i}" for i in range(width))]
        lines += [",".join(column[row] or "" for column in columns) for row in range(rows)]
        end = rng.choice(["\n", "\r\n"])
        data = (end.join(lines) + end).encode()
        data = b"\xef\xbb\xbf" + data if rng.random() < 0.2 else data
        fast = read_csv_fast(io.BytesIO(data), "f.csv", ())
        if fast is None:  # a row of blanks: the exact reader's to refuse
            assert any(all(column[row] is None for column in columns) for row in range(rows))
            continue
        exact = _read_csv_exactly(io.BytesIO(data), "f.csv", ())
        assert (fast.columns, fast.types, fast.notes) == (exact.columns, exact.types,
                                                          exact.notes), data
        assert {name: array.to_pylist() for name, array in fast.arrays.items()} == {
            name: values for name, values in exact.columns.items()
            if exact.types[name] in ARROW_TYPES}
        taken += 1
    assert taken > 30, taken
