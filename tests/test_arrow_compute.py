"""featurepull.arrow_compute against pyarrow.compute: each function gives what the function
of the same name there gives (its default options), on arrays and chunked arrays with
nulls, empty ones, and the errors a cast raises."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from featurepull import arrow_compute

TEXTS = [pa.array(["1", None, "-7", "x\"y", "", "007", "99999999999999999999"]),
         pa.chunked_array([["12", None], [], ["a", "3"]]),
         pa.array([], pa.string()), pa.array([None, None], pa.string())]
INTS = [pa.array([3, None, -2, 9]), pa.chunked_array([[1, 2], [None], [2**62]]),
        pa.array([], pa.int64()), pa.array([None], pa.int32())]
BOOLS = [pa.array([True, None, False]), pa.array([None, None], pa.bool_()),
         pa.array([], pa.bool_()), pa.chunked_array([[True], [None, True]])]


def _same(name: str, *args: Any) -> None:
    ours, theirs = getattr(arrow_compute, name), getattr(pc, name)
    try:
        expected = theirs(*args)
    except pa.ArrowException as exc:
        with pytest.raises(type(exc)):
            ours(*args)
        return
    got = ours(*args)
    assert type(got) is type(expected) and got.equals(expected), (name, args)


@pytest.mark.parametrize("values", TEXTS)
def test_text_functions_are_pyarrow_computes(values: Any) -> None:
    for name in ("is_null", "drop_null", "binary_length"):
        _same(name, values)
    _same("match_substring", values, '"')
    _same("match_substring_regex", values, r"^-?[1-9][0-9]*$|^0$")
    for target in (pa.int64(), pa.int32(), pa.string()):
        _same("cast", values, target)  # "x", "", "99999999999999999999": ArrowInvalid
    _same("equal", values, values)
    _same("min", arrow_compute.binary_length(values))


@pytest.mark.parametrize("values", INTS)
def test_aggregates_and_casts_of_ints_are_pyarrow_computes(values: Any) -> None:
    for name in ("sum", "min", "min_max", "is_null", "drop_null"):
        _same(name, values)
    _same("cast", values, pa.string())
    _same("cast", values, pa.int8())  # out of range: ArrowInvalid, as a safe cast


@pytest.mark.parametrize("values", BOOLS)
def test_boolean_functions_are_pyarrow_computes(values: Any) -> None:
    for name in ("any", "all", "sum", "is_null"):
        _same(name, values)
    _same("and_", values, values)
    texts = pa.array(["a"] * len(values)) if isinstance(values, pa.Array) else (
        pa.chunked_array([["a"] * len(chunk) for chunk in values.chunks]))
    _same("filter", texts, values)  # a null in the mask drops its value
