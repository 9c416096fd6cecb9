"""How one BatchGetItem (or Scan) request reaches DynamoDB and how its answer comes back.

Both transports are awaited by the reader's event loop, take ``RequestItems`` (a Scan: its
parameters) and answer with botocore's output shape — ``Responses``, ``UnprocessedKeys``
(a Scan: ``Items``, ``LastEvaluatedKey``), ``ConsumedCapacity``, ``ResponseMetadata``, B
values as bytes — and fail alike: an error answer raises botocore's
``ClientError`` (same ``Error`` and ``ResponseMetadata`` blocks), a lost connection or a
damaged response raises an exception the reader counts as a connection failure
(:class:`BrokenResponse`, urllib3's and botocore's).

- :class:`BotocoreTransport`: the boto3 client's ``batch_get_item``, run on a thread pool
  (botocore blocks) sized for the read.
- :class:`FastTransport`: the same request without botocore's per-call machinery, which costs
  several times more client CPU than the HTTP itself: a shape-driven JSON serializer and
  validator, an event system, and a parser that walks every attribute of every item through
  the output shape. The body is ``orjson.dumps``; it is signed (SigV4, :mod:`.sigv4`) with
  the credentials of the client's own signer, refreshed as boto3 refreshes them, sent on a
  keep-alive connection of the read's event loop (:mod:`featurepull.dynamo.http`; kept with
  the loop between reads, :mod:`featurepull.dynamo.loops`), checked
  (length, ``x-amz-crc32``), parsed once with ``orjson.loads``, and B values are left as
  base64 for the layouts that decode them where they read them, else turned into bytes.
"""

from __future__ import annotations

import asyncio
import binascii
import contextvars
import functools
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

from featurepull.config import ConfigError, DynamoSettings
from featurepull.dynamo._botocore import client_proxy_url, client_verify, signing_credentials
from featurepull.dynamo.http import DEFAULT_PORTS, BrokenResponse, ConnectionPool, Response
from featurepull.dynamo.sigv4 import PostSigner

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

    from featurepull.dynamo.loops import KeptLoop

TARGET = "DynamoDB_20120810.BatchGetItem"
SCAN_TARGET = "DynamoDB_20120810.Scan"
CONTENT_TYPE = "application/x-amz-json-1.0"
SIGNING_NAME = "dynamodb"
_a2b = binascii.a2b_base64

__all__ = ["BotocoreTransport", "BrokenResponse", "FastTransport", "Transport",
           "post_signer", "transport_for"]

# What one BatchGetItem ended with: botocore's output shape, or the exception it would raise.
OnAnswer = Callable[[dict[str, Any] | BaseException], None]


class Transport(Protocol):
    """Sends one BatchGetItem and returns botocore's output shape."""

    # True: B values in returned items stay base64 text (see Layout.decodes_base64).
    base64_values: bool
    # True: a request's Keys may be an orjson.Fragment (Layout.wire_keys_json).
    json_fragments: bool

    async def batch_get_item(self, request_items: dict[str, Any]) -> dict[str, Any]:
        """The answer to ``RequestItems``, with consumed capacity (TOTAL)."""

    def start_batch_get_item(self, request_items: dict[str, Any], on_answer: OnAnswer) -> None:
        """Send ``RequestItems`` now; ``on_answer`` gets what :meth:`batch_get_item` would
        return or raise, from a callback of the loop (never from within this call), and is
        not called once the transport is closed."""

    async def scan(self, request: dict[str, Any]) -> dict[str, Any]:
        """One page of a Scan with these parameters, with consumed capacity (TOTAL)."""

    def close(self) -> None:
        """Release connections and threads (the read is over)."""


class BotocoreTransport:
    """BatchGetItem through the boto3 client (serialization, signing, parsing by botocore),
    each call on a thread of its own so that ``threads`` of them run at once."""

    base64_values = False
    json_fragments = False  # botocore validates and serializes the dicts itself

    def __init__(self, client: Any, threads: int = 1) -> None:
        self.client = client
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="featurepull-read")
        self._started: set[asyncio.Future[dict[str, Any]]] = set()  # start_batch_get_item's

    async def batch_get_item(self, request_items: dict[str, Any]) -> dict[str, Any]:
        # The caller's context (log bindings) goes with the call onto the thread.
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, run, self._call, request_items)

    def start_batch_get_item(self, request_items: dict[str, Any], on_answer: OnAnswer) -> None:
        run = contextvars.copy_context().run
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, run, self._call, request_items)
        self._started.add(future)
        future.add_done_callback(self._started.discard)
        future.add_done_callback(functools.partial(_hand_over, on_answer))

    def _call(self, request_items: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.client.batch_get_item(
            RequestItems=request_items, ReturnConsumedCapacity="TOTAL")
        if "Responses" not in response:
            # botocore turns a 200 whose body is not JSON (cut mid-body) into {"message":
            # body} without raising; reading that as "no items" would report every key
            # missing. DynamoDB always sends Responses, so anything else is damaged: resend.
            raise BrokenResponse("response without Responses")
        return response

    async def scan(self, request: dict[str, Any]) -> dict[str, Any]:
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, run, self._scan, request)

    def _scan(self, request: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.client.scan(**request, ReturnConsumedCapacity="TOTAL")
        if "Items" not in response:  # as for Responses above: a damaged answer
            raise BrokenResponse("response without Items")
        return response

    def close(self) -> None:
        for future in self._started:
            future.cancel()  # nobody is told any more
        self._pool.shutdown(wait=True, cancel_futures=True)


class FastTransport:
    """BatchGetItem as one signed HTTP POST on a keep-alive connection, parsed with orjson."""

    json_fragments = True

    def __init__(self, client: Any, settings: DynamoSettings,
                 base64_values: bool = False, loop: KeptLoop | None = None) -> None:
        self.base64_values = base64_values
        url = str(client.meta.endpoint_url).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ConfigError(f"cannot send BatchGetItem to endpoint {url!r}; give "
                              "--endpoint-url as http://HOST[:PORT] or https://HOST[:PORT]")
        self.url = url + "/"
        self.region = str(client.meta.region_name)
        # The very object botocore signs with: a RefreshableCredentials (roles, SSO, ...) is
        # refreshed by get_frozen_credentials() as boto3 would refresh it.
        self.credentials = signing_credentials(client)
        self.signer = post_signer(url, self.region, TARGET)
        self.scan_signer = post_signer(url, self.region, SCAN_TARGET)
        self.headers = self.signer.headers
        # On a kept loop, its pool for this endpoint: kept (not closed) when the read ends.
        self.kept = loop is not None
        self.pool = (loop.pool if loop is not None else ConnectionPool)(
            url, settings.connect_timeout, settings.read_timeout, client_verify(client))

    async def batch_get_item(self, request_items: dict[str, Any]) -> dict[str, Any]:
        return self._answer(await self.pool.request(self._batch_get_bytes(request_items)))

    def start_batch_get_item(self, request_items: dict[str, Any], on_answer: OnAnswer) -> None:
        def answered(response: Response | BaseException) -> None:
            answer: dict[str, Any] | BaseException
            try:
                answer = response if isinstance(response, BaseException) else (
                    self._answer(response))
            except BaseException as exc:  # the caller's to raise, as batch_get_item would
                answer = exc
            on_answer(answer)

        self.pool.start(self._batch_get_bytes(request_items), answered)

    def _batch_get_bytes(self, request_items: dict[str, Any]) -> bytes:
        body = orjson.dumps({"RequestItems": request_items, "ReturnConsumedCapacity": "TOTAL"},
                            default=_base64)
        return self._request_bytes(body)

    def _answer(self, response: Response) -> dict[str, Any]:
        data, headers = response.body, response.headers
        _check_complete(headers, data)
        if response.status != 200:
            raise _error_answer(response.status, headers, data)
        return _parse_answer(data, headers, self.base64_values)

    async def scan(self, request: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps({**request, "ReturnConsumedCapacity": "TOTAL"}, default=_base64)
        response = await self.pool.request(self._request_bytes(body, self.scan_signer))
        data, headers = response.body, response.headers
        _check_complete(headers, data)
        if response.status != 200:
            raise _error_answer(response.status, headers, data, "Scan")
        return _parse_scan_answer(data, headers, self.base64_values)

    def close(self) -> None:
        if not self.kept:
            self.pool.close()

    def _request_bytes(self, body: bytes, signer: PostSigner | None = None) -> bytes:
        return (signer or self.signer).request(body, self._frozen_credentials())

    def _frozen_credentials(self) -> Any:
        if self.credentials is None:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()  # as botocore's signing raises
        return self.credentials.get_frozen_credentials()


def post_signer(url: str, region: str, target: str) -> PostSigner:
    """The signer of DynamoDB POSTs with ``target`` to ``url`` (``scheme://host[:port]
    [/path]``, no trailing slash): Host as the request carries it (IPv6 in brackets, a default
    port left out), and the headers sent unsigned — User-Agent, as botocore leaves it
    unsigned, and no compression (x-amz-crc32 covers the uncompressed body)."""
    parts = urlsplit(url)
    assert parts.hostname  # FastTransport and env_client accept no other URL
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if parts.port is not None and parts.port != DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{parts.port}"
    unsigned = {"User-Agent": user_agent(), "Accept-Encoding": "identity"}
    return PostSigner(host, (parts.path or "") + "/", region, SIGNING_NAME, CONTENT_TYPE,
                      target, unsigned)


@functools.cache
def user_agent() -> str:
    """The fast transport's User-Agent, naming the botocore it answers like; its version
    from the installed distribution, since a console pull may never import botocore."""
    from importlib.metadata import version

    return f"featurepull (fast transport) botocore/{version('botocore')}"


def transport_for(client: Any, settings: DynamoSettings, base64_values: bool = False,
                  loop: KeptLoop | None = None) -> Transport:
    """The transport ``settings.transport`` names, for one read; ``base64_values`` asks
    (the fast transport) to leave B values of items as base64 text; on ``loop`` (the read
    runs there), the fast transport sends on the connections kept there. An endpoint boto3
    reaches through an HTTP proxy (HTTPS_PROXY, ...) is left to botocore, which knows how to
    tunnel."""
    if settings.transport == "botocore" or client_proxy_url(client) is not None:
        return BotocoreTransport(client, settings.max_read_workers)
    return FastTransport(client, settings, base64_values, loop)


def _hand_over(on_answer: OnAnswer, future: asyncio.Future[dict[str, Any]]) -> None:
    """A thread's BatchGetItem, done: its answer or its error to ``on_answer``."""
    if future.cancelled():
        return  # the transport was closed
    error = future.exception()
    on_answer(future.result() if error is None else error)


def _base64(value: object) -> str:
    """JSON for a B key value (the plain layout's binary keys); nothing else is not JSON."""
    if isinstance(value, bytes | bytearray):
        return binascii.b2a_base64(value, newline=False).decode()
    raise TypeError(f"cannot send {type(value).__name__} to DynamoDB: {value!r}")


def _check_complete(headers: Mapping[str, str], data: bytes) -> None:
    """Headers are lower-cased (featurepull.dynamo.http)."""
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) != len(data)):
        raise BrokenResponse(f"body of {len(data)} bytes, Content-Length {length}")
    crc = headers.get("x-amz-crc32")
    if crc is not None and (not crc.isdigit() or int(crc) != zlib.crc32(data)):
        raise BrokenResponse(f"x-amz-crc32 {crc} does not match the body ({zlib.crc32(data)})")


def _metadata(status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    return {"HTTPStatusCode": status, "RequestId": headers.get("x-amzn-requestid", ""),
            "RetryAttempts": 0}


def _parse_answer(data: bytes, headers: Mapping[str, str],
                  base64_values: bool = False) -> dict[str, Any]:
    try:
        answer = _json_object(data)
        responses = answer["Responses"]
        if not isinstance(responses, dict):
            raise TypeError(f"Responses is a JSON {type(responses).__name__}")
        for items in () if base64_values else responses.values():
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


def _json_object(data: bytes) -> dict[str, Any]:
    answer = orjson.loads(data)
    if not isinstance(answer, dict):
        raise TypeError(f"a JSON {type(answer).__name__}, not an object")
    return answer


def _parse_scan_answer(data: bytes, headers: Mapping[str, str],
                       base64_values: bool = False) -> dict[str, Any]:
    """A Scan page as botocore shapes it; B values of the LastEvaluatedKey always bytes
    (it is sent back as the next page's ExclusiveStartKey, base64 again on the way)."""
    try:
        answer = _json_object(data)
        items = answer["Items"]
        if not isinstance(items, list):
            raise TypeError(f"Items is a JSON {type(items).__name__}")
        for item in () if base64_values else items:
            _decode_binaries(item.values())
        _decode_binaries(answer.get("LastEvaluatedKey", {}).values())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # binascii.Error too
        raise BrokenResponse(f"not a Scan answer ({type(exc).__name__}: {exc}): "
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


def _error_answer(status: int, headers: Mapping[str, str], data: bytes,
                  operation: str = "BatchGetItem") -> ClientError:
    """The ClientError botocore would raise for this error answer (``__type`` suffix as the
    code, ``message`` as the message)."""
    try:
        payload = orjson.loads(data)
    except ValueError:  # orjson.JSONDecodeError
        payload = None
    if not isinstance(payload, dict):
        payload = {}
    kind = str(payload.get("__type") or headers.get("x-amzn-errortype") or "")
    code = kind.rpartition("#")[2].partition(":")[0]
    message = payload.get("message") or payload.get("Message")
    if message is None:
        message = data[:200].decode("utf-8", "replace") or f"HTTP {status}"
    error = {"Error": {"Code": code or str(status), "Message": str(message)},
             "ResponseMetadata": _metadata(status, headers)}
    from botocore.exceptions import ClientError  # an error answer: botocore's error

    return ClientError(error, operation)
