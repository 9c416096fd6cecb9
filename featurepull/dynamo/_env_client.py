"""A DynamoDB client without botocore, for the one case where botocore's answer is known:
credentials in the environment and an endpoint given explicitly.

Building botocore's session and client (its credential chain, service model and endpoint
rules) is a good part of a console ``featurepull pull``'s start. When the only AWS settings
in sight are ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_DEFAULT_REGION`` and ``AWS_CA_BUNDLE``, there is no shared config file and no proxy,
and the endpoint is ``dynamodb.endpoint_url``, botocore's chain takes the environment's
credentials first (``EnvProvider``), its region is the setting's or ``AWS_DEFAULT_REGION``,
its endpoint the URL as given, and its HTTP session verifies HTTPS with ``AWS_CA_BUNDLE``,
else ``REQUESTS_CA_BUNDLE``, else True (what the fast transport reads of it):
:func:`env_client` answers the same without importing it. Anything else — another
``AWS_*`` or ``BOTO_*`` variable (a profile, ``AWS_CREDENTIAL_EXPIRATION``, endpoint, CA
bundle, FIPS, retry or defaults-mode settings), a ``*_proxy`` variable, a config file, a
region or URL botocore would judge differently, the botocore transport — gives ``None``, and
the caller builds botocore's client.

The one request it makes itself is DescribeTable, and only a clean answer counts (HTTP
200, complete, a JSON object holding ``Table``); on anything else it asks again through
botocore's client, so every failure is botocore's (its retries, errors and messages). The
description's timestamps stay epoch numbers (botocore makes datetimes; nothing reads them).
"""

from __future__ import annotations

import http.client
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from featurepull.config import DynamoSettings

__all__ = ["EnvClient", "EnvCredentials", "env_client"]

# The AWS variables botocore's answer for this client is known under (see the docstring).
ENV_SETTINGS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                          "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE"})
# Regions and endpoint hosts of plain shape only (a subset of what botocore accepts as is).
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ENDPOINT = re.compile(rf"(http|https)://{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?")
DESCRIBE_TARGET = "DynamoDB_20120810.DescribeTable"


@dataclass(frozen=True)
class EnvCredentials:
    """The environment's credentials, as botocore's ``Credentials`` gives them to a signer."""

    access_key: str
    secret_key: str = field(repr=False)  # never in a traceback or a log
    token: str | None = field(repr=False)

    def get_frozen_credentials(self) -> EnvCredentials:
        """Themselves: credentials from the environment are never refreshed."""
        return self


@dataclass(frozen=True)
class _Meta:
    region_name: str
    endpoint_url: str


class EnvClient:
    """What the reader asks of its client (``meta``, ``describe_table``) and what the fast
    transport signs and connects with (``credentials``, ``verify``; never a proxy)."""

    def __init__(self, settings: DynamoSettings, region: str, credentials: EnvCredentials,
                 verify: bool | str) -> None:
        assert settings.endpoint_url is not None
        self.settings = settings
        self.meta = _Meta(region, settings.endpoint_url)
        self.credentials = credentials
        self.verify = verify

    def describe_table(self, TableName: str) -> dict[str, Any]:  # botocore's keyword
        """DescribeTable's answer; anything but a clean one is asked again of botocore."""
        table = self._describe(TableName)
        if table is not None:
            return {"Table": table}
        from featurepull.dynamo.client import build_client

        answer: dict[str, Any] = build_client(self.settings).describe_table(TableName=TableName)
        return answer

    def _describe(self, table: str) -> dict[str, Any] | None:
        from featurepull.dynamo.http import tls_context
        from featurepull.dynamo.transport import post_signer

        parts = urlsplit(self.meta.endpoint_url)
        assert parts.hostname is not None
        body = orjson.dumps({"TableName": table})
        signer = post_signer(self.meta.endpoint_url, self.meta.region_name, DESCRIBE_TARGET)
        headers = {**signer.sign(body, self.credentials), **signer.unsigned}
        timeout = self.settings.connect_timeout
        conn = (http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                            context=tls_context(self.verify))
                if parts.scheme == "https" else
                http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout))
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self.settings.read_timeout)
            conn.request("POST", signer.path, body, headers)
            response = conn.getresponse()
            data = response.read()
            status = response.status
            lowered = {name.lower(): value for name, value in response.getheaders()}
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()
        return _clean_table(status, lowered, data)


def _clean_table(status: int, headers: dict[str, str], data: bytes) -> dict[str, Any] | None:
    from featurepull.dynamo.transport import BrokenResponse, _check_complete

    if status != 200:
        return None
    try:
        _check_complete(headers, data)
        answer = orjson.loads(data)
    except (BrokenResponse, ValueError):
        return None
    table = answer.get("Table") if isinstance(answer, dict) else None
    return table if isinstance(table, dict) else None


def _verify(environ: Mapping[str, str]) -> bool | str | None:
    """What botocore's HTTP session verifies with (``client_verify`` of its client):
    ``AWS_CA_BUNDLE``, else ``REQUESTS_CA_BUNDLE``, else True; None for a blank one (botocore
    refuses it: InvalidConfigError)."""
    verify: bool | str = environ.get("AWS_CA_BUNDLE", environ.get("REQUESTS_CA_BUNDLE", True))
    return None if isinstance(verify, str) and not verify.strip() else verify


def _port_ok(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 -- raises for a port beyond 65535
    except ValueError:
        return False
    return True


def env_client(settings: DynamoSettings,
               environ: Mapping[str, str] = os.environ) -> EnvClient | None:
    """The client botocore would build from the environment alone, or None where botocore
    may answer otherwise (the module docstring lists when)."""
    if settings.transport != "fast" or settings.endpoint_url is None:
        return None
    if not _ENDPOINT.fullmatch(settings.endpoint_url) or not _port_ok(settings.endpoint_url):
        return None
    import urllib.request

    if urllib.request.getproxies():  # botocore's proxies: the variables, macOS/Windows settings
        return None
    if any((name.upper().startswith(("AWS_", "BOTO")) and name not in ENV_SETTINGS)
           or name.lower().endswith("_proxy") for name in environ):
        return None
    access, secret = environ.get("AWS_ACCESS_KEY_ID", ""), environ.get("AWS_SECRET_ACCESS_KEY", "")
    region = settings.region or environ.get("AWS_DEFAULT_REGION", "")
    verify = _verify(environ)
    if not access or not secret or not _REGION.fullmatch(region) or verify is None:
        return None
    # botocore's default config file (AWS_CONFIG_FILE, not allowed above, would name another).
    if os.path.exists(os.path.expanduser(os.path.join("~", ".aws", "config"))):
        return None
    credentials = EnvCredentials(access, secret, environ.get("AWS_SESSION_TOKEN") or None)
    return EnvClient(settings, region, credentials, verify)
