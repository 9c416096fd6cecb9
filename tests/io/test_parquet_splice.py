"""A Parquet file made of other files' row groups (featurepull.io._parquet_splice): the bytes
one writer writes from the same slices, for every kind of column a job's output holds."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.io._encoders import ParquetEncoder
from featurepull.io._parquet_splice import MAGIC, CannotSplice, read_footer, spliced_footer

ROWS = 3_000


def table(seed: int, rows: int = ROWS) -> pa.Table:
    """Columns of every kind, a third null; long distinct texts push the dictionary past
    its page limit (the writer falls back to plain pages midway through a chunk)."""
    ids = range(seed * rows, (seed + 1) * rows)
    null = [i % 3 == 0 for i in ids]

    def some(values: list[object], kind: pa.DataType) -> pa.Array:
        return pa.array([None if n else v for v, n in zip(values, null, strict=True)], kind)

    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "key": pa.array([f"{i:0>400x}" for i in ids], pa.string()),
        "x": some([i / 7 for i in ids], pa.float64()),
        "f": some([i / 3 for i in ids], pa.float32()),
        "flag": some([i % 2 == 0 for i in ids], pa.bool_()),
        "at": some([datetime.fromtimestamp(i, UTC) for i in ids], pa.timestamp("us", "UTC")),
        "tags": some([[i, i + 1] for i in ids], pa.list_(pa.int64())),
        "pair": some([{"a": i, "b": str(i)} for i in ids],
                     pa.struct([("a", pa.int64()), ("b", pa.string())])),
        "attrs": some([[("k", i)] for i in ids], pa.map_(pa.string(), pa.int64())),
        "price": some([Decimal(i) / 100 for i in ids], pa.decimal128(12, 2)),
        "raw": some([bytes([i % 256]) * 5 for i in ids], pa.binary()),
    })


def written(schema: pa.Schema, tables: list[pa.Table], step: int) -> bytes:
    buffer = io.BytesIO()
    encoder = ParquetEncoder(buffer, schema, "out.parquet")
    for whole in tables:
        for start in range(0, whole.num_rows, step):
            encoder.write_table(whole.slice(start, step), start + 1)
    encoder.finish()
    return buffer.getvalue()


def read_back(whole: pa.Table) -> pa.Table:
    buffer = io.BytesIO()
    pq.write_table(whole, buffer, compression="none", use_dictionary=False)
    return pq.ParquetFile(pa.BufferReader(buffer.getvalue())).read()


@pytest.mark.parametrize("step", [1_000, ROWS])
def test_spliced_row_groups_are_the_bytes_one_writer_writes(step: int) -> None:
    tables = [table(0), table(1), table(2, rows=0), table(3, rows=1_234)]
    schema = tables[0].schema
    parts = [written(schema, [t], step) for t in tables]
    footers = [read_footer(part) for part in parts]
    empty = read_footer(written(schema, [], step))
    assert all(footer.same_schema(empty) for footer in footers)
    spliced = MAGIC + b"".join(part[4:footer.body_end] for part, footer in
                               zip(parts, footers, strict=True)) + spliced_footer(empty,
                                                                                  footers)
    assert spliced == written(schema, tables, step)
    # And those the finisher wrote before it copied row groups: from each shard's table
    # staged as a plain part and read back.
    assert spliced == written(schema, [read_back(t) for t in tables], step)
    assert pq.ParquetFile(pa.BufferReader(spliced)).read().equals(pa.concat_tables(tables))


def test_more_than_fifteen_row_groups_and_columns() -> None:
    # Thrift's short list head holds up to 14 elements.
    wide = pa.table({f"c{n}": pa.array(range(n, n + 40), pa.int64()) for n in range(20)})
    parts = [written(wide.schema, [wide], 2) for _ in range(3)]
    footers = [read_footer(part) for part in parts]
    empty = read_footer(written(wide.schema, [], 2))
    spliced = MAGIC + b"".join(part[4:footer.body_end] for part, footer in
                               zip(parts, footers, strict=True)) + spliced_footer(empty,
                                                                                  footers)
    assert spliced == written(wide.schema, [wide] * 3, 2)


def test_a_file_with_what_cannot_move_or_another_schema_is_told() -> None:
    small = table(0, rows=10)
    for options in ({"write_page_index": True},
                    {"bloom_filter_options": {"id": {"ndv": 10}}}):
        buffer = io.BytesIO()
        try:
            pq.write_table(small, buffer, **options)  # type: ignore[arg-type]
        except TypeError:  # a pyarrow without bloom filters
            continue
        with pytest.raises(CannotSplice):
            read_footer(buffer.getvalue())
    part = written(small.schema, [small], 10)
    longer = (int.from_bytes(part[-8:-4], "little") + 1).to_bytes(4, "little")
    for broken in (part[:100], part[:-8] + longer + MAGIC, MAGIC + bytes(8) + MAGIC):
        with pytest.raises(CannotSplice):
            read_footer(broken)
    other = written(small.drop_columns(["raw"]).schema, [small.drop_columns(["raw"])], 10)
    assert not read_footer(other).same_schema(read_footer(part))
