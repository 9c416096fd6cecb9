"""How one BatchGetItem request reaches DynamoDB and how its answer comes back.

Both transports take ``RequestItems`` and answer with botocore's output shape —
``Responses``, ``UnprocessedKeys``, ``ConsumedCapacity``, ``ResponseMetadata``, B values as
bytes — and fail alike: an error answer raises botocore's ``ClientError`` (same ``Error`` and
``ResponseMetadata`` blocks), a lost connection or a damaged response raises an exception the
reader counts as a connection failure (:class:`BrokenResponse`, urllib3's and botocore's).

- :class:`BotocoreTransport`: the boto3 client's ``batch_get_item``.
- :class:`FastTransport`: the same request without botocore's per-call machinery, which costs
  several times more client CPU than the HTTP itself: a shape-driven JSON serializer and
  validator, an event system, and a parser that walks every attribute of every item through
  the output shape. The body is ``orjson.dumps``; it is signed by botocore's own SigV4 signer
  with the client's credentials, sent on this process's keep-alive urllib3 pool, checked
  (length, ``x-amz-crc32``), parsed once with ``orjson.loads``, and only B values are touched
  after that (base64 → bytes).
"""

from __future__ import annotations

import binascii
import http.client
import socket
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import botocore
import botocore.auth
import botocore.awsrequest
import botocore.exceptions
import orjson
import urllib3
import urllib3.connection

from featurepull.config import DynamoSettings
from featurepull.dynamo.client import per_process

TARGET = "DynamoDB_20120810.BatchGetItem"
CONTENT_TYPE = "application/x-amz-json-1.0"
SIGNING_NAME = "dynamodb"
USER_AGENT = f"featurepull (fast transport) botocore/{botocore.__version__}"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_a2b = binascii.a2b_base64


class BrokenResponse(ConnectionError):
    """The response arrived cut, garbled or mismatched: the request is sent again."""


class Transport(Protocol):
    """Sends one BatchGetItem and returns botocore's output shape."""

    def batch_get_item(self, request_items: dict[str, Any]) -> dict[str, Any]:
        """The answer to ``RequestItems``, with consumed capacity (TOTAL)."""


class BotocoreTransport:
    """BatchGetItem through the boto3 client (serialization, signing, parsing by botocore)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def batch_get_item(self, request_items: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.client.batch_get_item(
            RequestItems=request_items, ReturnConsumedCapacity="TOTAL")
        if "Responses" not in response:
            # botocore turns a 200 whose body is not JSON (cut mid-body) into {"message":
            # body} without raising; reading that as "no items" would report every key
            # missing. DynamoDB always sends Responses, so anything else is damaged: resend.
            raise BrokenResponse("response without Responses")
        return response


class FastTransport:
    """BatchGetItem as one signed HTTP POST on this process's pool, parsed with orjson."""

    def __init__(self, client: Any, settings: DynamoSettings) -> None:
        url = str(client.meta.endpoint_url).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"cannot send BatchGetItem to endpoint {url!r}")
        self.url = url + "/"
        self.path = (parts.path or "") + "/"
        self.region = str(client.meta.region_name)
        # The very object botocore signs with: a RefreshableCredentials (roles, SSO, ...) is
        # refreshed by get_frozen_credentials() as boto3 would refresh it.
        self.credentials = client._request_signer._credentials
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if parts.port is not None and parts.port != _DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{parts.port}"
        self.headers = {"Host": host, "Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET}
        self.pool = process_pool(url, settings, _client_verify(client))

    def batch_get_item(self, request_items: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps({"RequestItems": request_items, "ReturnConsumedCapacity": "TOTAL"},
                            default=_base64)
        headers = self._signed_headers(body)
        try:
            response = self.pool.urlopen(
                "POST", self.path, body=body, headers=headers, retries=False, redirect=False,
                assert_same_host=False, preload_content=True, decode_content=False)
        except (OSError, http.client.HTTPException) as exc:  # urllib3 wraps most of these
            raise BrokenResponse(f"{type(exc).__name__}: {exc}") from exc
        data: bytes = response.data
        _check_complete(response.headers, data)
        if response.status != 200:
            raise _error_answer(response.status, response.headers, data)
        return _parse_answer(data, response.headers)

    def _signed_headers(self, body: bytes) -> dict[str, str]:
        credentials = self.credentials.get_frozen_credentials() if self.credentials else None
        request = botocore.awsrequest.AWSRequest(
            method="POST", url=self.url, data=body, headers=dict(self.headers))
        # Raises NoCredentialsError without credentials, as botocore's own signing does.
        botocore.auth.SigV4Auth(credentials, SIGNING_NAME, self.region).add_auth(request)
        headers = dict(request.headers.items())
        headers["User-Agent"] = USER_AGENT  # not signed; set after signing, as botocore does
        headers["Accept-Encoding"] = "identity"  # x-amz-crc32 covers the uncompressed body
        return headers


def transport_for(client: Any, settings: DynamoSettings) -> Transport:
    """The transport ``settings.transport`` names. An endpoint boto3 reaches through an HTTP
    proxy (HTTPS_PROXY, ...) is left to botocore, which knows how to tunnel."""
    if settings.transport == "botocore" or _proxied(client):
        return BotocoreTransport(client)
    return FastTransport(client, settings)


def process_pool(url: str, settings: DynamoSettings,
                 verify: bool | str = True) -> urllib3.HTTPConnectionPool:
    """This process's keep-alive connection pool to ``url`` (never a parent's), sized for the
    read threads, with the settings' timeouts, no retries of its own, and for HTTPS the
    certificate verification the boto3 client uses."""
    key = ("fast-transport-pool", url, settings.pool_size, settings.connect_timeout,
           settings.read_timeout, verify)
    return per_process(key, lambda: _build_pool(url, settings, verify))


def _build_pool(url: str, settings: DynamoSettings,
                verify: bool | str) -> urllib3.HTTPConnectionPool:
    options = [*urllib3.connection.HTTPConnection.default_socket_options,
               (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    kwargs: dict[str, Any] = {
        "maxsize": settings.pool_size,
        "block": False,
        "timeout": urllib3.Timeout(connect=settings.connect_timeout,
                                   read=settings.read_timeout),
        "retries": False,  # every retry is the reader's, counted and bounded by its deadline
        "socket_options": options,
    }
    if urlsplit(url).scheme == "https":
        kwargs["cert_reqs"] = "CERT_NONE" if verify is False else "CERT_REQUIRED"
        if isinstance(verify, str):
            kwargs["ca_certs"] = verify
    pool: urllib3.HTTPConnectionPool = urllib3.connection_from_url(url, **kwargs)
    return pool


def _client_verify(client: Any) -> bool | str:
    """What the boto3 client verifies HTTPS with: True, False, or a CA bundle path
    (AWS_CA_BUNDLE, ``ca_bundle`` in the profile, or botocore's default bundle)."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    value = getattr(session, "_verify", True)
    return value if isinstance(value, bool | str) else True


def _proxied(client: Any) -> bool:
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    config = getattr(session, "_proxy_config", None)
    try:
        return bool(config is not None and config.proxy_url_for(client.meta.endpoint_url))
    except (AttributeError, TypeError, ValueError):
        return False


def _base64(value: object) -> str:
    """JSON for a B key value (the plain layout's binary keys); nothing else is not JSON."""
    if isinstance(value, bytes | bytearray):
        return binascii.b2a_base64(value, newline=False).decode()
    raise TypeError(f"cannot send {type(value).__name__} to DynamoDB: {value!r}")


def _check_complete(headers: Mapping[str, str], data: bytes) -> None:
    length = headers.get("Content-Length")
    if length is not None and (not length.isdigit() or int(length) != len(data)):
        raise BrokenResponse(f"body of {len(data)} bytes, Content-Length {length}")
    crc = headers.get("x-amz-crc32")
    if crc is not None and (not crc.isdigit() or int(crc) != zlib.crc32(data)):
        raise BrokenResponse(f"x-amz-crc32 {crc} does not match the body ({zlib.crc32(data)})")


def _metadata(status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    return {"HTTPStatusCode": status, "RequestId": headers.get("x-amzn-RequestId", ""),
            "RetryAttempts": 0}


def _parse_answer(data: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    try:
        answer = orjson.loads(data)
        if not isinstance(answer, dict):
            raise TypeError(f"a JSON {type(answer).__name__}, not an object")
        for items in answer["Responses"].values():
            for item in items:
                _decode_binaries(item.values())
        for spec in answer.get("UnprocessedKeys", {}).values():
            for key in spec["Keys"]:
                _decode_binaries(key.values())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # binascii.Error too
        # A complete body (length and checksum matched) that is not a BatchGetItem answer:
        # a proxy's page, or a server fault. Like a cut body, it is sent again.
        raise BrokenResponse(f"not a BatchGetItem answer ({type(exc).__name__}: {exc}): "
                             f"{data[:120]!r}") from None
    answer["ResponseMetadata"] = _metadata(200, headers)
    return answer


def _decode_binaries(values: Iterable[dict[str, Any]]) -> None:
    """Base64 B and BS values to bytes, in place, in attribute values and their M and L."""
    for value in values:
        if "S" in value or "N" in value:
            continue
        if "B" in value:
            value["B"] = _a2b(value["B"])
        elif "M" in value:
            _decode_binaries(value["M"].values())
        elif "L" in value:
            _decode_binaries(value["L"])
        elif "BS" in value:
            value["BS"] = [_a2b(member) for member in value["BS"]]


def _error_answer(status: int, headers: Mapping[str, str],
                  data: bytes) -> botocore.exceptions.ClientError:
    """The ClientError botocore would raise for this error answer (``__type`` suffix as the
    code, ``message`` as the message)."""
    try:
        payload = orjson.loads(data)
    except ValueError:  # orjson.JSONDecodeError
        payload = None
    if not isinstance(payload, dict):
        payload = {}
    kind = str(payload.get("__type") or headers.get("x-amzn-ErrorType") or "")
    code = kind.rpartition("#")[2].partition(":")[0]
    message = payload.get("message") or payload.get("Message")
    if message is None:
        message = data[:200].decode("utf-8", "replace") or f"HTTP {status}"
    error = {"Error": {"Code": code or str(status), "Message": str(message)},
             "ResponseMetadata": _metadata(status, headers)}
    return botocore.exceptions.ClientError(error, "BatchGetItem")
