"""Where a job's shards' entity keys live between submit and the shard's read.

- A job with an output: the submitter stages each shard's keys as a Parquet file,
  ``keys-00000.parquet``, in the output's staging area, beside the parts the shards write
  (``featurepull.io.parts``). Redis then holds a fixed amount per shard, whatever the job's
  size; the files go with the staging area when the job succeeds, fails or is cancelled.
- A job without an output (at most ``jobs.max_entities_without_output`` entities): in Redis
  (``keys:{n}``, ``featurepull.tasks.store``), deleted once the shard is done.

The job's spec says which (``keys_in``); a spec without it is a job stored in Redis.
"""

from __future__ import annotations

import pyarrow as pa

from featurepull.config import Settings
from featurepull.errors import RunFailed
from featurepull.tasks.output import staged_output
from featurepull.tasks.store import JobMeta, JobStore, UnknownJob

STAGED = "staged"  # the spec's keys_in for keys staged beside the output


class ShardKeysMissing(RunFailed):
    """A shard's staged keys are gone while its job runs: the submitter stopped before it
    stored them, the staging area was removed, or a crash tore them (they are not fsynced).
    The job fails (nothing to read)."""


def keys_in(output: str | None) -> str:
    """What a new job's spec records as ``keys_in``: staged with an output, else Redis."""
    return STAGED if output else "redis"


def put_shard_keys(job_id: str, shard: int, table: pa.Table, meta: JobMeta,
                   settings: Settings, store: JobStore) -> None:
    """Store shard ``shard``'s entity keys where the job's spec says (the submitter)."""
    if getattr(meta.request, "keys_in", None) == STAGED:
        staged_output(job_id, meta, settings).write_keys(shard, table)
    else:
        store.put_shard_keys(job_id, shard, table)


def shard_keys(job_id: str, shard: int, meta: JobMeta, settings: Settings,
               store: JobStore) -> pa.Table | None:
    """Shard ``shard``'s entity key columns, as an Arrow table; None when the shard was
    done meanwhile (a redelivered copy: skip it)."""
    if getattr(meta.request, "keys_in", None) != STAGED:
        return store.shard_keys(job_id, shard)  # UnknownJob once they are gone
    try:
        table = staged_output(job_id, meta, settings).read_keys(shard)
        unreadable = None
    except (pa.ArrowException, OSError) as exc:  # torn (a bad checksum), or not readable
        table, unreadable = None, exc
    if table is not None:
        return table
    state = store.state(job_id)
    if state is None:
        raise UnknownJob(job_id)
    if state.terminal or store.is_done(job_id, shard):
        return None
    if unreadable is not None:
        raise ShardKeysMissing(
            f"the entity keys of shard {shard} in {meta.output}'s staging area cannot be "
            f"read ({unreadable}): a crash of the machine holding them can tear them (they "
            "are not fsynced); submit the job again")
    raise ShardKeysMissing(
        f"the entity keys of shard {shard} are not in {meta.output}'s staging area: the "
        "submitting process stopped before it stored them, or the staging area was removed "
        "while the job ran; submit the job again")
