"""A Parquet output's writer options: pyarrow's defaults (Snappy, a dictionary page for
every column chunk), but no dictionary for the entity key columns, whose values are mostly
distinct (a dictionary of distinct ids is larger than the ids and was ~40% of a part's encode).

Without the row formats' imports (`pyarrow.compute`): a submit stages keys files with them.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def parquet_options(schema: pa.Schema, keys: Collection[str]) -> dict[str, Any]:
    """`pq.ParquetWriter`'s options for an output of `schema` whose key columns are `keys`:
    dictionaries for every leaf column but those of the keys (none named: the defaults)."""
    leaves = _leaves(schema)
    if not any(name in keys for name, _ in leaves):
        return {}
    return {"use_dictionary": [path for name, path in leaves if name not in keys]}


def key_leaves(schema: pa.Schema, keys: Collection[str]) -> frozenset[int]:
    """The positions among a row group's column chunks of the key columns' leaves: those
    an output with these keys writes without a dictionary page."""
    return frozenset(n for n, (name, _) in enumerate(_leaves(schema)) if name in keys)


@lru_cache(maxsize=16)
def _leaves(schema: pa.Schema) -> tuple[tuple[str, str], ...]:
    """(field name, Parquet column path) of each leaf column, in order. `use_dictionary`
    takes leaf paths (``f.list.element``): a nested field's are the writer's own, read
    from an empty file's schema (~1 ms, once per schema); a flat field's is its name."""
    if not any(pa.types.is_nested(field.type) for field in schema):
        return tuple((name, name) for name in schema.names)
    sink = pa.BufferOutputStream()
    pq.ParquetWriter(sink, schema).close()
    columns = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    names = [name for field in schema for name in [field.name] * _leaf_count(field.type)]
    return tuple(zip(names, (columns.column(n).path for n in range(len(columns))),
                     strict=True))


def _leaf_count(kind: pa.DataType) -> int:
    """How many Parquet leaf columns a field of type `kind` is written as."""
    if not kind.num_fields:
        return 1
    return sum(_leaf_count(kind.field(n).type) for n in range(kind.num_fields))
