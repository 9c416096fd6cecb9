"""Operations tests: real prefork workers against a Redis that has a password, with planted
AWS credentials in the worker environment (the lean endpoint accepts any credentials)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from featurepull.bench.endpoint import EndpointProcess, start_endpoint
from featurepull.local import RedisService, start_redis
from tests.conftest import service_port
from tests.tasks.conftest import TABLE, Fleet, fleet

REDIS_PASSWORD = "planted-redis-secret-123"
PLANTED_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDKEY12345",
    "AWS_SECRET_ACCESS_KEY": "planted/secret/KEY+abc123",
    "AWS_SESSION_TOKEN": "planted-session-token-xyz",
}
SECRETS = (REDIS_PASSWORD, *PLANTED_AWS.values())
DRIVERS = 20_000


@pytest.fixture(scope="module")
def secret_redis() -> Iterator[RedisService]:
    """A private redis-server that requires a password."""
    service = start_redis(port=service_port(), password=REDIS_PASSWORD)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def throttling_dynamo() -> Iterator[EndpointProcess]:
    """20,000 drivers behind the lean endpoint, throttling 30% of BatchGetItem requests: every
    shard retries, so the reader's threads log."""
    with start_endpoint(drivers=DRIVERS, table=TABLE, throttle_rate=0.3, seed=7) as endpoint:
        yield endpoint


@contextmanager
def secret_fleet(server: RedisService, endpoint_url: str, log_format: str = "json",
                 **jobs: Any) -> Iterator[Fleet]:
    """A Fleet whose Redis URL carries the password and whose workers hold planted AWS
    credentials."""
    with fleet(server, endpoint_url, **jobs) as workers:
        workers.redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/{workers.db}"
        workers.env.update(PLANTED_AWS)
        workers.env["FEATUREPULL_REDIS_URL"] = workers.redis_url
        workers.env["FEATUREPULL_LOG_FORMAT"] = log_format
        yield workers


@dataclass
class WorkerOutput:
    """A worker's two streams: stderr is its log; stdout gets what Celery prints directly."""

    process: subprocess.Popen[bytes]
    log: Path
    stdout: Path

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a warm shutdown) and wait, so the log holds the shutdown lines too."""
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=timeout)


def start_worker(workers: Fleet, concurrency: int = 2) -> WorkerOutput:
    """Like ``Fleet.start_worker``, with stdout and stderr kept in separate files."""
    name = f"ops-{uuid.uuid4().hex[:4]}"
    log, stdout = workers._dir / f"{name}.log", workers._dir / f"{name}.stdout"
    cmd = [sys.executable, "-m", "celery", "-A", "featurepull.worker", "worker",
           "--pool", "prefork", "--concurrency", str(concurrency), "-Q", workers.queue,
           "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-mingle",
           "--without-gossip"]
    with open(log, "wb") as err, open(stdout, "wb") as out:
        proc = subprocess.Popen(cmd, env=workers.env, stdout=out, stderr=err,
                                start_new_session=True)
    workers.workers.append(proc)
    workers.logs.append(log)
    workers.wait_ready(proc, log, name)
    return WorkerOutput(proc, log, stdout)


def redis_contents(client: redis.Redis) -> list[bytes]:
    """Every key and value in the database, with Celery message bodies base64-decoded."""
    blobs: list[bytes] = []
    for key in client.scan_iter(count=1000):
        blobs.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            blobs.append(client.get(key) or b"")
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                blobs += [field, value]
        elif kind == "list":
            blobs += client.lrange(key, 0, -1)
        elif kind == "set":
            blobs += list(client.smembers(key))
        elif kind == "zset":
            blobs += client.zrange(key, 0, -1)
    return blobs + [body for blob in blobs for body in _message_bodies(blob)]


def _message_bodies(blob: bytes) -> list[bytes]:
    try:
        value = json.loads(blob)
    except (ValueError, UnicodeDecodeError):
        return []
    found: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            encoding = node.get("properties", {}).get("body_encoding")
            if encoding == "base64" and isinstance(node.get("body"), str):
                found.append(base64.b64decode(node["body"]))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(value)
    return found


def leaked(blobs: list[bytes] | str) -> list[str]:
    """The planted secrets that occur in ``blobs``."""
    data = [blobs.encode()] if isinstance(blobs, str) else blobs
    return [secret for secret in SECRETS if any(secret.encode() in blob for blob in data)]
