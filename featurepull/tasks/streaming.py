"""Streaming submit: a job's shards stored as its entity file is read, a batch at a time, so
the submitting process's memory does not grow with the job.

The file's types come first (a Parquet schema; a first pass over a CSV or JSONL file), then
each batch's key columns are checked as the whole-file path checks them (the layout's
`check_keys`) and cut into shards of `shard_size` rows: the key columns of at most one shard
and one batch are held (twice while a shard is cut from them: ~4 MB of int64 keys at
jobs.max_shard_size's 200,000 rows, a job cut for its fleet). Any problem, in the file or in a
key, is not reported from here: the caller drops what was stored and runs the whole-file
path, whose messages name the line or row at fault — so every bad-input message is the
one it always was.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pyarrow as pa

from featurepull.config import Settings
from featurepull.dynamo.layouts import Layout
from featurepull.io import EntityFileError, EntityStream
from featurepull.io.entities import check_entity_file_size, stream_entities
from featurepull.tasks.confine import REDIS_KEY_SCHEME
from featurepull.tasks.store import JobStore

_COPY_BYTES = 8 << 20  # a redis-key: file is copied to a temporary file this much at a time


@contextmanager
def open_entity_stream(reference: str, settings: Settings, store: JobStore, *,
                       first_block: bool = False) -> Iterator[EntityStream | None]:
    """The entities a job names (a path, s3:// or redis-key:NAME) as an EntityStream, or
    None when they must be read whole; refused over the job limits as the whole read is.
    ``first_block``: a CSV file's types from its first block (`stream_entities`)."""
    limits = settings.jobs
    if not reference.startswith(REDIS_KEY_SCHEME):
        with stream_entities(reference, s3=settings.s3, limits=limits,
                             first_block=first_block) as stream:
            yield stream
        return
    name = reference[len(REDIS_KEY_SCHEME):]
    size = int(store.redis.strlen(name))
    check_entity_file_size(reference, size, limits.max_entity_file_bytes)
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        # A range at a time: the whole value in memory is what streaming avoids.
        for start in range(0, size, _COPY_BYTES):
            tmp.write(store.redis.getrange(name, start, start + _COPY_BYTES - 1))
        tmp.flush()
        if size == 0:
            yield None  # missing or empty: the whole-file path says which
            return
        try:
            with stream_entities(tmp.name, limits=limits) as stream:
                yield None if stream is None else replace(stream, source=reference)
        except EntityFileError as exc:  # name what the user gave, not our temporary file
            raise type(exc)(str(exc).replace(tmp.name, reference)) from None


def streamed_shards(stream: EntityStream, layout: Layout, key_columns: Sequence[str],
                    shard_size: int, arrow_types: dict[str, pa.DataType]
                    ) -> Iterator[pa.Table]:
    """The key columns as shard tables of ``shard_size`` rows, each batch's keys checked by
    the layout first (raising what it raises)."""
    types = {name: arrow_types.get(stream.types.get(name, "")) for name in key_columns}
    pending: list[pa.Table] = []
    held = 0
    # Arrow batches where the reader offers them (layouts check Arrow columns as they
    # check lists): no Python value per row, and no list for pyarrow to convert back.
    for batch in (stream.arrow_batches or stream.batches)(list(key_columns)):
        layout.check_keys(batch, stream.source)
        pending.append(pa.table({name: _typed(values, types[name])
                                 for name, values in batch.items()}))
        held += pending[-1].num_rows
        while held >= shard_size:
            table = pa.concat_tables(pending)
            yield table.slice(0, shard_size).combine_chunks()
            pending, held = [table.slice(shard_size)], held - shard_size
    if held:
        yield pa.concat_tables(pending).combine_chunks()



def _typed(values: Any, arrow_type: pa.DataType | None) -> pa.Array:
    """A batch's column as an Arrow array of ``arrow_type``: an Arrow batch's column is
    one already (``EntityStream.arrow_batches``), a list is converted."""
    if isinstance(values, pa.Array):
        return values
    return pa.array(values, type=arrow_type)
