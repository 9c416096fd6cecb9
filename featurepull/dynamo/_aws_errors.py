"""The exceptions of botocore and urllib3 that the read path catches, named without importing
either.

A console pull with credentials in the environment sends its requests without botocore
(:mod:`featurepull.dynamo._env_client` and the fast transport), yet the reader catches
botocore's ``ClientError`` (which the fast transport raises for an error answer, importing
botocore then) and the connection errors of botocore and urllib3 (raised when botocore's
client is in use). Importing those modules only to name their classes in ``except`` clauses
cost a fifth of such a pull's start. An ``except`` clause's expression is evaluated only
when an exception is being matched, and an exception of a module never imported cannot have
been raised: so each function here gives the classes of the modules loaded at that moment —
exactly what the clause named before, for every exception that can reach it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.exceptions import ClientError, NoCredentialsError

__all__ = ["client_errors", "connection_errors", "no_credentials_errors", "unreachable_errors"]


def _loaded(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The classes ``names`` of ``module`` if it is loaded, else none."""
    found = sys.modules.get(module)
    if found is None:
        return ()
    # getattr with a default: a module another thread is still importing may not have bound
    # them yet — and then no instance of them exists either.
    return tuple(cls for cls in (getattr(found, name, None) for name in names)
                 if cls is not None)


def client_errors() -> tuple[type[ClientError], ...]:
    """botocore's ``ClientError``: an error answer (throttled, refused, a server fault)."""
    return _loaded("botocore.exceptions", "ClientError")


def no_credentials_errors() -> tuple[type[NoCredentialsError], ...]:
    """botocore's ``NoCredentialsError``: its credential chain found none."""
    return _loaded("botocore.exceptions", "NoCredentialsError")


def connection_errors() -> tuple[type[BaseException], ...]:
    """What botocore and urllib3 raise when a connection breaks or a response arrives cut or
    garbled (the request is sent again), and ``ConnectionError``: the fast transport's
    ``BrokenResponse`` (length, crc32, not JSON)."""
    return (
        # ConnectionClosed, ReadTimeout; a damaged body's x-amz-crc32 mismatch.
        *_loaded("botocore.exceptions", "HTTPClientError", "IncompleteReadError",
                 "ChecksumError"),
        *_loaded("botocore.parsers", "ResponseParserError"),
        *_loaded("urllib3.exceptions", "HTTPError"),
        ConnectionError,
    )


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """botocore's when it cannot connect at all (refused, timed out). Before a read,
    DescribeTable lets them through (the command line says the endpoint cannot be reached);
    during one, the endpoint went away, and the request is retried like one that lost its
    connection."""
    return _loaded("botocore.exceptions", "EndpointConnectionError", "ConnectTimeoutError")
