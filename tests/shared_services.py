"""The session services of ``tests/conftest.py``, started once for many pytest runs.

``scripts/mutation.sh`` runs a pytest session for every mutant, and starting a redis-server,
moto and the 200,000-driver endpoint for each was most of a mutant's time. It runs
``python -m tests.shared_services FILE`` instead: that starts them, writes where they listen
to FILE, and stops them on SIGTERM (or once the process that started it is gone). A pytest
session started with ``MUTATION_SERVICES=FILE`` in its environment uses them and leaves them
running.

For sessions run one at a time only: tests take differences of the endpoint's counters,
which a second session reading it at once would disturb.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.local import MotoService, RedisService, start_moto, start_redis

ENV = "MUTATION_SERVICES"
# The fast endpoint's table (tests/conftest.py's FAST_DRIVERS and FAST_TABLE).
FAST_DRIVERS = 200_000
FAST_TABLE = "demo.driver_stats"


def shared(name: str) -> RedisService | MotoService | EndpointProcess | None:
    """The running service ``name`` (redis, moto, fast_dynamo) for a session told to use
    shared services, else None. It has no process handle: it is not the session's to stop."""
    path = os.environ.get(ENV)
    if not path:
        return None
    found: dict[str, Any] = json.loads(Path(path).read_text())[name]
    if name == "redis":
        return RedisService("redis-server", None, found["port"], Path(found["log"]))  # type: ignore[arg-type]
    if name == "moto":
        return MotoService("moto-server", None, found["port"], Path(found["log"]))  # type: ignore[arg-type]
    return EndpointProcess(None, found["url"], Path(found["workdir"]))  # type: ignore[arg-type]


def serve(path: Path) -> None:
    """Start the services, write ``path`` (whole, once they all answer), and keep them
    until SIGTERM or the parent process is gone."""
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stack:
        redis = start_redis()
        stack.callback(redis.stop)
        moto = start_moto()
        stack.callback(moto.stop)
        fast = stack.enter_context(start_endpoint(drivers=FAST_DRIVERS, table=FAST_TABLE))
        written = path.with_name(path.name + ".part")
        written.write_text(json.dumps({
            "redis": {"port": redis.port, "log": str(redis.log_path)},
            "moto": {"port": moto.port, "log": str(moto.log_path)},
            "fast_dynamo": {"url": fast.url, "workdir": str(fast.workdir)},
        }))
        written.replace(path)
        stack.callback(path.unlink, missing_ok=True)
        while os.getppid() == parent:
            time.sleep(1)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
