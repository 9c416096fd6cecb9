"""A job's output: where its shards stage their parts, how its finisher publishes them, and
removing what a job that ended (or a killed finisher) left behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from featurepull.config import Settings
from featurepull.io import StagedOutput, is_dataset, temporaries_of
from featurepull.tasks._lazy_log import LazyLogger
from featurepull.tasks.requests import JobRequest, job_settings
from featurepull.tasks.store import JobMeta, JobStore

log = LazyLogger(__name__)  # structlog at the first line: a submit imports this module


def remove_dead_finishers_file(output: str, finisher: str | None) -> None:
    """Delete the temporary file that an earlier finisher of this job left beside a local
    output when it was killed mid-write (SIGKILL skips atomic_file's cleanup). Only the
    files of that process, only on the machine it ran on, and only if it is gone."""
    if finisher is None or output.startswith("s3://"):
        return  # an S3 output is staged in an anonymous file: nothing is left behind
    host, _, pid = finisher.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or process_exists(int(pid)):
        return  # another machine's file, or a process still running: not ours to touch
    for stale in temporaries_of(output, int(pid)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
            log.warning("stale_output_removed", path=stale, finisher=finisher)


def staged_output(job_id: str, meta: JobMeta, settings: Settings) -> StagedOutput:
    """Where the job's shards stage their parts and how its finisher publishes them."""
    return StagedOutput(str(meta.request.request["output"]), job_id, meta.shards,
                        settings.s3, recorded=meta.published_as,
                        rows_per_write=meta.request.shard_unit or None,
                        keys=meta.request.key_columns)


def discard_staged_output(job_id: str, settings: Settings, store: JobStore) -> None:
    """Remove what a job that ended staged for its output (logged, never raised: the job
    has ended already, and its failure is the error to report)."""
    try:
        meta = store.meta(job_id)
        request = JobRequest(**meta.request.request)
        if request.output:
            staged_output(job_id, meta, job_settings(settings, request)).discard()
    except Exception as exc:
        log.warning("staged_output_left", job_id=job_id, error=str(exc))


def process_exists(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def publish_output(job_id: str, meta: JobMeta, settings: Settings, store: JobStore,
                   previous: str | None, per_shard: dict[int, dict[str, Any]] | None = None
                   ) -> int:
    """Publish the parts the shards staged as the job's output; rows written. An output
    already published by an earlier finisher of this job that died before the job was
    marked succeeded is recognised as the job's own, and kept. `per_shard`: the shards'
    stored stats, if the caller has read them."""
    from featurepull.io.tables import unify_schemas  # the finisher's: not a submit's

    request = JobRequest(**meta.request.request)
    staged = staged_output(job_id, meta, settings)
    if per_shard is None:
        per_shard = store.all_stats(job_id)
    part_rows = [int(per_shard[n]["keys"]) for n in range(meta.shards)]
    if staged.published():
        log.warning("output_already_published", output=request.output,
                    reason="an earlier finisher of this job died after publishing it")
    else:
        if not is_dataset(staged.output):
            remove_dead_finishers_file(staged.output, previous)
        schemas = store.shard_schemas(job_id, meta.shards)
        staged.publish(unify_schemas(schemas), schemas, part_rows, overwrite=request.overwrite,
                       checks=[per_shard[n].get("part_crc32") for n in range(meta.shards)])
    identity = staged.identity()
    if identity is not None:  # the proof that no longer needs the staging area
        store.note_published(job_id, identity)
    return sum(part_rows)
