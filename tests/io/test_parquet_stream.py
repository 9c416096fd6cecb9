"""A Parquet entity file's Arrow batches (`EntityStream.arrow_batches`, what a streamed submit
stores as shards) hold the values of its Python batches (`batches`), as Arrow arrays of each
column's logical type, and refuse what they refuse with the same message: on generated files
of every column type an entity file can hold (small and unsigned ints, uint64 beyond int64,
dictionary-encoded text, large text, fixed-size binary, half floats, nulls, empty keys).
"""

from __future__ import annotations

import io
import random
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.io import EntityFileError, _parquet_entities
from featurepull.io._parquet_entities import stream_parquet

LOGICAL = {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(), "bytes": pa.binary(),
           "float": pa.float64(), "bool": pa.bool_(), "null": pa.null()}


def column(rng: random.Random, rows: int) -> pa.Array:
    kind = rng.choice(["int8", "uint32", "int64", "uint64", "big_uint64", "string", "large",
                       "dict", "fixed", "binary", "half", "bool", "null"])
    def pick(values: list[Any]) -> list[Any]:
        return [rng.choice(values) for _ in range(rows)]
    if kind == "int8":
        return pa.array(pick([1, -3, None]), pa.int8())
    if kind in ("uint32", "uint64", "int64"):
        return pa.array(pick([0, 7, 2**31]), pa.type_for_alias(kind))
    if kind == "big_uint64":
        return pa.array([2**63 + rng.randint(0, 9), *pick([1, 2])][:rows], pa.uint64())
    if kind in ("string", "large", "dict"):
        values = pa.array(pick(["a", "é", "x y", "", None] if rng.random() < 0.3 else ["a", "é"]),
                          pa.large_string() if kind == "large" else pa.string())
        return values.dictionary_encode() if kind == "dict" else values
    if kind == "fixed":
        return pa.array(pick([b"ab", b"\x00\x01"]), pa.binary(2))
    if kind == "binary":
        return pa.array(pick([b"", b"\xff", None] if rng.random() < 0.3 else [b"k"]))
    if kind == "half":
        return pa.array(pick([0.5, 1.0, None]), pa.float32()).cast(pa.float16())
    if kind == "bool":
        return pa.array(pick([True, False]))
    return pa.nulls(rows)


def outcome(batches: Any) -> Any:
    try:
        return [{name: v.to_pylist() if isinstance(v, pa.Array) else v for name, v in b.items()}
                for b in batches]
    except EntityFileError as exc:
        return str(exc)


@pytest.mark.parametrize("seed", range(30))
def test_arrow_batches_are_the_python_batches(seed: int) -> None:
    rng = random.Random(seed)
    rows = rng.choice([1, 5, 70_000])  # over one batch of 65,536 rows sometimes
    table = pa.table({f"c{i}": column(rng, rows) for i in range(rng.randint(1, 3))})
    data = io.BytesIO()
    pq.write_table(table, data, row_group_size=rng.choice([1000, 100_000]))
    required = tuple(rng.sample(table.column_names, rng.randint(0, table.num_columns)))

    def stream() -> Any:
        data.seek(0)
        return stream_parquet(data, "e.parquet", required)

    try:
        names = list(stream().types)
    except EntityFileError:
        return  # no column can hold keys, or a required one cannot: refused before any batch
    want = outcome(stream().batches(names))
    arrow = stream().arrow_batches
    assert arrow is not None
    got = list(arrow(names)) if not isinstance(want, str) else None
    assert outcome(iter(got) if got is not None else arrow(names)) == want
    for batch in got or []:
        types = stream().types
        assert {name: values.type for name, values in batch.items()} == {
            name: LOGICAL[types[name]] for name in names}


def refusals(data: bytes, required: tuple[str, ...]) -> tuple[str, str]:
    """The message of the Python batches and of the Arrow batches, read to the end."""
    stream = stream_parquet(io.BytesIO(data), "e.parquet", required)
    assert stream.arrow_batches is not None
    python, arrow = outcome(stream.batches(["id"])), outcome(stream.arrow_batches(["id"]))
    assert isinstance(python, str) and isinstance(arrow, str), (python, arrow)
    return python, arrow


def test_arrow_batches_name_a_late_bad_row_and_a_damaged_page_as_the_python_batches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parquet_entities, "_BATCH_ROWS", 100)  # a tuning constant
    data = io.BytesIO()
    # An empty key in the fourth batch is named by its row in the file.
    pq.write_table(pa.table({"id": [f"k{n}" for n in range(349)] + [""]}), data)
    python, arrow = refusals(data.getvalue(), ("id",))
    assert python == arrow and arrow.startswith("e.parquet: row 350: required column 'id'")
    # A readable footer and a damaged page: the refusal comes while the rows are read.
    data = io.BytesIO()
    pq.write_table(pa.table({"id": [f"key-{n}" for n in range(5_000)]}), data,
                   use_dictionary=False)
    page = pq.ParquetFile(data).metadata.row_group(0).column(0).data_page_offset
    damaged = bytearray(data.getvalue())
    damaged[page + 40:page + 400] = b"\xab" * 360
    python, arrow = refusals(bytes(damaged), ())
    assert python == arrow and arrow.startswith("e.parquet: cannot read it as Parquet (")


@pytest.mark.parametrize("encode", [False, True])
def test_a_column_that_does_not_cast_is_refused_before_its_batch(encode: bool) -> None:
    # The one cast to a logical type that fails: a uint64 beyond int64, plain or
    # dictionary-encoded, also in a column that holds no key. Its values are checked.
    big = pa.array([1, 2**64 - 1], pa.uint64())
    data = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b"], "n": big.dictionary_encode() if encode else big}),
                   data)
    stream = stream_parquet(io.BytesIO(data.getvalue()), "e.parquet", ("id",))
    assert stream.arrow_batches is not None
    python, arrow = (outcome(read(["id", "n"])) for read in (stream.batches,
                                                              stream.arrow_batches))
    assert python == arrow == ("e.parquet: row 2: column 'n' value 18446744073709551615 does "
                               "not fit in int64; store the column as int64 or string")
