"""A streaming output: Arrow tables in, one complete .parquet, .csv or .jsonl file out, or none.

For the job finisher, which writes a job's shards one after another without holding more than
one in memory:

    schema = unify_schemas([shard_schema(n) for n in shards])
    with open_sink("s3://bucket/features.parquet", schema, s3=settings.s3) as sink:
        for n in shards:
            sink.write(shard_table(n))

Each table is cast to the sink's schema, then appended: to Parquet as row groups, to CSV and
JSONL in exactly the text encoding of `write_rows`. The output appears, complete, only when the
`with` block exits without an error; after an error nothing is left (see `_destinations`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from functools import partial

import pyarrow as pa

from featurepull.config import S3Settings
from featurepull.io._columnar import typed_array
from featurepull.io._destinations import (
    OwnerMark,
    check_destination,
    output_format,
    reporting_write_errors,
)
from featurepull.io._encoders import Encoder, open_encoder, table_encoder
from featurepull.io._row_view import OutputError
from featurepull.io.tables import widens_to

__all__ = ["TableSink", "check_destination", "open_sink"]

_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


class TableSink:
    """Appends Arrow tables to an output opened by `open_sink`."""

    def __init__(self, path: str, schema: pa.Schema, encoder: Encoder) -> None:
        self.path = path
        self.schema = schema
        self.rows_written = 0
        self._encoder: Encoder | None = encoder

    def write(self, table: pa.Table) -> None:
        """Cast `table` to the sink's schema and append its rows to the output."""
        if self._encoder is None:
            raise RuntimeError(f"{self.path}: the sink is closed; write inside its with block")
        conformed = self._conform(table)
        if conformed.num_rows == 0:
            return  # checked, but an empty shard adds no (empty) Parquet row group
        with reporting_write_errors(self.path):
            self._encoder.write_table(conformed, self.rows_written + 1)
        self.rows_written += conformed.num_rows

    def close(self) -> None:
        """Refuse further writes (the `with` block of `open_sink` does this on exit)."""
        self._encoder = None

    def _conform(self, table: pa.Table) -> pa.Table:
        if table.schema.equals(self.schema):
            return table
        if table.column_names != self.schema.names:
            raise OutputError(
                f"{self.path}: the table has the columns {table.column_names}, but the output "
                f"has {self.schema.names}; every table needs the output's columns, in order"
            )
        return pa.Table.from_arrays(
            [self._cast(field, column) for field, column in
             zip(self.schema, table.columns, strict=True)],
            schema=self.schema,
        )

    def _cast(self, field: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray:
        # Only the promotions unify_schemas makes: Arrow would also turn 1.5 into "1.5".
        problem = None
        if widens_to(column.type, field.type):
            try:
                return column.cast(field.type)  # safe: refuses ints past 2**53
            except _CAST_ERRORS as exc:
                problem = str(exc)
            if field.type == pa.float64():  # ints past 2**53 a double writes as they are
                try:
                    return pa.chunked_array([typed_array(column.to_pylist(), field.type)])
                except _CAST_ERRORS as exc:
                    problem = str(exc)
        raise OutputError(
            f"{self.path}: column {field.name!r} is {column.type} in this table and cannot "
            f"be cast to the output's {field.type}{f' ({problem})' if problem else ''}; open "
            "the sink with unify_schemas() of every table's schema"
        )


@contextmanager
def open_sink(
    path: str,
    schema: pa.Schema,
    *,
    overwrite: bool = False,
    s3: S3Settings | None = None,
    mark: OwnerMark | None = None,
    keys: Collection[str] = (),
) -> Iterator[TableSink]:
    """A `TableSink` writing tables of `schema` to `path` (format from its extension).

    On entry, before anything is written, the destination is checked as `check_destination`
    does (OutputError). `path` may be local or `s3://bucket/key` (with `s3` settings; the
    object is uploaded on a successful exit). With no table written the output still has the
    columns: a Parquet schema, a CSV header, an empty JSONL file. With `mark`, the output can
    later be recognised as this writer's (`marked_by`). `keys`: the entity key columns, which
    a Parquet output writes without dictionaries (`ParquetEncoder`).
    """
    fmt = output_format(path)
    make = partial(table_encoder, fmt, schema=schema, source=path, keys=keys)
    with open_encoder(path, make, overwrite=overwrite, s3=s3, mark=mark) as encoder:
        sink = TableSink(path, schema, encoder)
        try:
            yield sink
        finally:
            sink.close()
