"""One DynamoDB client per process, built lazily and shared by that process's threads.

botocore clients are thread-safe but not fork-safe: a child that inherited its parent's
client would share the parent's pooled sockets. Each cached client (and the fast transport's
TLS context, through :func:`per_process`) remembers the pid that built it, and a different pid
always builds a new one.

The cache keeps the objects of the ``CLIENTS_KEPT`` most recently used keys: a job's
``dynamodb`` settings are part of the key, so a long-lived worker would otherwise keep a client
and its connection pool for every combination it ever read with. One dropped is not closed:
it closes its sockets when the last holder lets go (garbage collection), as a client nobody
cached would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from featurepull._recently_used import RecentlyUsed
from featurepull.config import ConfigError, DynamoSettings

_T = TypeVar("_T")
CLIENTS_KEPT = 8  # objects cached per process (clients, TLS contexts)
# (kind, *settings) -> (pid that built it, the object): clients here, TLS contexts in http.py.
_clients: RecentlyUsed[tuple[Any, ...], tuple[int, Any]] = RecentlyUsed(CLIENTS_KEPT)
# Whether process_client may answer with an EnvClient (no botocore) where botocore's client
# would be the same: set by the console `featurepull pull` (featurepull.cli._lean_pull).
_env_clients = False


def _cache_key(settings: DynamoSettings) -> tuple[Any, ...]:
    return (
        settings.region,
        settings.endpoint_url,
        settings.pool_size,
        settings.connect_timeout,
        settings.read_timeout,
        settings.retry_mode,
        settings.total_max_retry_attempts,
        settings.session_based_auth,
        settings.transport,  # an EnvClient serves the fast transport only
    )


def build_client(settings: DynamoSettings) -> Any:
    """A new low-level DynamoDB client configured from ``settings``."""
    import botocore.config
    import botocore.exceptions

    from featurepull.aws import default_session, new_session

    config = botocore.config.Config(
        max_pool_connections=settings.pool_size,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={
            "mode": settings.retry_mode,
            "total_max_attempts": settings.total_max_retry_attempts,
        },
        tcp_keepalive=True,
    )
    session = new_session() if settings.session_based_auth else default_session()
    try:
        return session.create_client(
            "dynamodb",
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=config,
        )
    except botocore.exceptions.NoRegionError:
        raise ConfigError(
            "no AWS region is set: pass --region, set FEATUREPULL_DYNAMODB__REGION, "
            "or AWS_REGION / AWS_DEFAULT_REGION"
        ) from None
    except ValueError as exc:  # botocore rejects malformed endpoint URLs with ValueError
        raise ConfigError(f"dynamodb.endpoint_url={settings.endpoint_url!r}: {exc}") from None


def preload_botocore() -> None:
    """Load botocore's DynamoDB model and its lazily imported modules into this process, for
    processes forked from it: each child then builds its client in milliseconds, not the
    ~60 ms the first client of a process costs. The client made here uses placeholder
    credentials and a fixed region (no credential chain, no network) and is thrown away."""
    from featurepull.aws import default_session

    default_session().create_client("dynamodb", region_name="us-east-1",
                                    aws_access_key_id="preload",
                                    aws_secret_access_key="preload")


def per_process(key: tuple[Any, ...], build: Callable[[], _T]) -> _T:
    """This process's object for ``key``: built on first use, never one a parent built, and
    again after :data:`CLIENTS_KEPT` other keys were used since."""
    pid = os.getpid()
    built: _T = _clients.get(key, lambda: (pid, build()), lambda kept: kept[0] == pid)[1]
    return built


def env_clients(allowed: bool) -> None:
    """Let :func:`process_client` build an EnvClient where it is botocore's client without
    botocore (:mod:`featurepull.dynamo._env_client`), or not (the default)."""
    global _env_clients
    _env_clients = allowed


def _build(settings: DynamoSettings) -> Any:
    if _env_clients:
        from featurepull.dynamo._env_client import env_client

        client = env_client(settings)
        if client is not None:
            return client
    return build_client(settings)


def _client_key(settings: DynamoSettings) -> tuple[Any, ...]:
    # With the switch: a client made while EnvClients were allowed may be one; once they are
    # not, botocore's is asked for (and the other way round).
    return ("client", _env_clients, *_cache_key(settings))


def process_client(settings: DynamoSettings) -> Any:
    """This process's client for ``settings``: created on first use, never a parent's."""
    return per_process(_client_key(settings), lambda: _build(settings))


def client_owner_pid(settings: DynamoSettings) -> int | None:
    """The pid that built the cached client for ``settings`` (None if none yet)."""
    cached = _clients.peek(_client_key(settings))
    return cached[0] if cached else None
