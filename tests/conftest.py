"""Session-wide real services: a local DynamoDB/S3 endpoint (moto server) and a private
redis-server, each a real process on a free port, stopped at the end of the session."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from featurepull.local import MotoService, RedisService, start_moto, start_redis

# moto accepts any credentials; these keep boto3 from looking for real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _name in list(os.environ):
    if _name.startswith("FEATUREPULL_"):
        del os.environ[_name]

REGION = "us-east-1"


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


# Ports for the services the tests start, below the kernel's ephemeral range: an outgoing
# connection's own port never comes from there, so nothing takes one between the check and
# the service's bind, nor while a killed server is down before its restart on the same
# port — when clients retrying to reach it could otherwise connect to themselves (a TCP
# self-connect holds the port). From a random start, so parallel sessions rarely meet.
_SERVICE_PORTS = range(20_000, max(_ephemeral_ports().start, 21_000))
_next_service_port = itertools.count(random.randrange(len(_SERVICE_PORTS)))


def service_port() -> int:
    """A loopback port for a service a test starts: free now and not handed out before in
    this session."""
    for _ in range(len(_SERVICE_PORTS)):
        port = _SERVICE_PORTS[next(_next_service_port) % len(_SERVICE_PORTS)]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_SERVICE_PORTS}")


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where a connection is refused for the length of the block: bound,
    never listening, so nothing else can start listening there meanwhile."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoService]:
    service = start_moto(port=service_port())
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisService]:
    service = start_redis(port=service_port())
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def endpoint_url(moto_server: MotoService) -> str:
    return moto_server.url


@pytest.fixture(scope="session")
def ddb(endpoint_url: str) -> Any:
    """A plain boto3 DynamoDB client on the test endpoint, for building tables."""
    return boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=REGION)


def unique_name(prefix: str) -> str:
    """A table or project name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"
