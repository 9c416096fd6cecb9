"""AWS Signature Version 4 for the fast transport's one kind of request.

botocore's ``SigV4Auth`` signs any request: it builds an ``AWSRequest``, copies its headers
through the ``email`` package, parses the URL, and derives the signing key with four HMACs on
every call — about 50 µs of a read's CPU per request, thousands of times a second. Every
request here is the same POST to the same path with the same three headers, so this signer
precomputes what never changes, and keeps for the second (the clock's, and the credentials')
everything that only changes with it: the derived key (for the day), the canonical request
and string to sign up to their last line, and the request's head up to its signature. Per
request it does only what the algorithm needs: two SHA-256 hashes and one HMAC.
``tests/dynamo/test_sigv4.py`` checks :meth:`PostSigner.sign` against botocore's signer byte
for byte, and :meth:`PostSigner.request` against the request built from ``sign``'s headers.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
_sha256 = hashlib.sha256
_hmac_new = hmac.new


@dataclass(frozen=True)
class _Stamp:
    """What every request signed in one second with one set of credentials shares."""

    second: int
    # Secrets (the token is also in the headers and head): never in a repr.
    credentials: tuple[str, str, str | None] = field(repr=False)  # (access key, secret, token)
    headers: dict[str, str] = field(repr=False)  # the signed headers, without Authorization
    canonical: str  # the canonical request, up to the payload's hash
    to_sign: str  # the string to sign, up to the canonical request's hash
    key: bytes = field(repr=False)  # the derived signing key
    authorization: str  # the Authorization value, up to the signature
    head: str = field(repr=False)  # the HTTP request (PostSigner.request) up to the signature


class PostSigner:
    """Signs POSTs of one content type and ``X-Amz-Target`` to one host and path;
    ``unsigned`` headers follow the signed ones in :meth:`request` (as botocore leaves
    User-Agent unsigned)."""

    def __init__(self, host: str, path: str, region: str, service: str, content_type: str,
                 target: str, unsigned: Mapping[str, str] | None = None) -> None:
        self.region, self.service, self.path = region, service, path
        self.headers = {"Host": host, "Content-Type": content_type, "X-Amz-Target": target}
        self.unsigned = dict(unsigned or {})
        self._canonical_uri = quote(path, safe="/~")
        self._fixed = {"content-type": _trimmed(content_type), "host": _trimmed(host),
                       "x-amz-target": _trimmed(target)}
        self._key: tuple[str, str, bytes] | None = None  # (secret, day, derived key)
        self._stamp: _Stamp | None = None
        # After the signature in request(): the unsigned headers, then Content-Length.
        self._tail = "".join(f"\r\n{name}: {value}" for name, value in self.unsigned.items()
                             ) + "\r\nContent-Length: "

    def sign(self, body: bytes, credentials: Any) -> dict[str, str]:
        """The request's headers, signed with ``credentials`` (access_key, secret_key,
        token: botocore's frozen credentials)."""
        stamp = self._stamp_for(credentials)
        headers = dict(stamp.headers)
        headers["Authorization"] = stamp.authorization + self._signature(stamp, body)
        return headers

    def request(self, body: bytes, credentials: Any) -> bytes:
        """The whole HTTP/1.1 request: request line, :meth:`sign`'s headers, the unsigned
        ones, Content-Length, and ``body``."""
        stamp = self._stamp_for(credentials)
        return (f"{stamp.head}{self._signature(stamp, body)}{self._tail}{len(body)}\r\n\r\n"
                .encode("latin-1") + body)

    def _signature(self, stamp: _Stamp, body: bytes) -> str:
        request = stamp.canonical + _sha256(body).hexdigest()
        to_sign = stamp.to_sign + _sha256(request.encode("utf-8")).hexdigest()
        return _hmac_new(stamp.key, to_sign.encode("utf-8"), _sha256).hexdigest()

    def _stamp_for(self, credentials: Any) -> _Stamp:
        now = int(time.time())
        given = (credentials.access_key, credentials.secret_key, credentials.token)
        stamp = self._stamp
        if stamp is not None and stamp.second == now and stamp.credentials == given:
            return stamp
        stamp = self._stamp = self._new_stamp(now, given)
        return stamp

    def _new_stamp(self, now: int, credentials: tuple[str, str, str | None]) -> _Stamp:
        access_key, secret, token = credentials
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = amz_date[:8]
        headers = dict(self.headers)
        headers["X-Amz-Date"] = amz_date
        canonical = dict(self._fixed)
        canonical["x-amz-date"] = amz_date
        if token:
            headers["X-Amz-Security-Token"] = token
            canonical["x-amz-security-token"] = _trimmed(token)
        names = sorted(canonical)
        signed_headers = ";".join(names)
        request = "\n".join([
            "POST", self._canonical_uri, "",
            *(f"{name}:{canonical[name]}" for name in names), "",
            signed_headers, ""])
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        authorization = (f"{ALGORITHM} Credential={access_key}/{scope}, "
                         f"SignedHeaders={signed_headers}, Signature=")
        head = "\r\n".join([f"POST {self.path} HTTP/1.1",
                            *(f"{name}: {value}" for name, value in headers.items()),
                            f"Authorization: {authorization}"])
        return _Stamp(now, credentials, headers, request, f"{ALGORITHM}\n{amz_date}\n{scope}\n",
                      self._signing_key(secret, day), authorization, head)

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == day:
            return cached[2]
        key = ("AWS4" + secret).encode("utf-8")
        for part in (day, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
        self._key = (secret, day, key)
        return key


def _trimmed(value: str) -> str:
    """A header value as SigV4 canonicalizes it: outer spaces cut, inner runs collapsed."""
    return " ".join(value.split())
