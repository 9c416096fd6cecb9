"""The process's botocore session, shared by its DynamoDB and S3 clients.

boto3's ``boto3.client(...)`` is a botocore client built from a default session; featurepull
builds the same client straight from botocore, which spares every process that reads
DynamoDB the import of boto3 and s3transfer (about a tenth of a second; see
docs/whole-process.md). s3transfer is imported only when an S3 transfer happens
(:mod:`featurepull.io._s3`). The session resolves credentials and the region by botocore's
chain exactly as boto3's default session does, once per process: a forked child builds its
own, as it builds its own clients.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import botocore.session

__all__ = ["default_session", "new_session"]

_lock = threading.Lock()
_session: tuple[int, Any] | None = None  # (pid that built it, the session)


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time stays locked forever in the child.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def new_session() -> Any:
    """A fresh botocore session (its own credential resolution), as ``boto3.session.Session()``
    gives."""
    return botocore.session.get_session()


def default_session() -> Any:
    """This process's shared session (``boto3.client``'s default session), built on first
    use and never one a parent process built."""
    global _session
    pid = os.getpid()
    with _lock:
        if _session is None or _session[0] != pid:
            _session = (pid, new_session())
        return _session[1]
