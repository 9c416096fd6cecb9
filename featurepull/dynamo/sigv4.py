"""AWS Signature Version 4 for the fast transport's one kind of request.

botocore's ``SigV4Auth`` signs any request: it builds an ``AWSRequest``, copies its headers
through the ``email`` package, parses the URL, and derives the signing key with four HMACs on
every call — about 50 µs of a read's CPU per request, thousands of times a second. Every
request here is the same POST to the same path with the same three headers, so this signer
precomputes what never changes, keeps the derived key for the day, and does per request only
what the algorithm needs: two SHA-256 hashes and one HMAC. ``tests/dynamo/test_sigv4.py``
checks its output against botocore's signer, byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"


class PostSigner:
    """Signs POSTs of one content type and ``X-Amz-Target`` to one host and path."""

    def __init__(self, host: str, path: str, region: str, service: str, content_type: str,
                 target: str) -> None:
        self.region, self.service = region, service
        self.headers = {"Host": host, "Content-Type": content_type, "X-Amz-Target": target}
        self._canonical_uri = quote(path, safe="/~")
        self._fixed = {"content-type": _trimmed(content_type), "host": _trimmed(host),
                       "x-amz-target": _trimmed(target)}
        self._key: tuple[str, str, bytes] | None = None  # (secret, day, derived key)
        self._stamp: tuple[int, str] = (-1, "")

    def sign(self, body: bytes, credentials: Any) -> dict[str, str]:
        """The request's headers, signed with ``credentials`` (access_key, secret_key,
        token: botocore's frozen credentials)."""
        amz_date = self._amz_date()
        day = amz_date[:8]
        headers = dict(self.headers)
        headers["X-Amz-Date"] = amz_date
        canonical = dict(self._fixed)
        canonical["x-amz-date"] = amz_date
        token = credentials.token
        if token:
            headers["X-Amz-Security-Token"] = token
            canonical["x-amz-security-token"] = _trimmed(token)
        names = sorted(canonical)
        signed_headers = ";".join(names)
        request = "\n".join([
            "POST", self._canonical_uri, "",
            *(f"{name}:{canonical[name]}" for name in names), "",
            signed_headers, hashlib.sha256(body).hexdigest()])
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join([ALGORITHM, amz_date, scope,
                             hashlib.sha256(request.encode("utf-8")).hexdigest()])
        signature = hmac.new(self._signing_key(credentials.secret_key, day),
                             to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}")
        return headers

    def _amz_date(self) -> str:
        now = int(time.time())
        if self._stamp[0] != now:
            self._stamp = (now, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)))
        return self._stamp[1]

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
