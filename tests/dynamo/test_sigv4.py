"""The fast transport's SigV4 signer gives the headers botocore's SigV4Auth gives."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from unittest import mock

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from featurepull.dynamo.sigv4 import PostSigner

TARGET = "DynamoDB_20120810.BatchGetItem"
CONTENT_TYPE = "application/x-amz-json-1.0"
CASES = [
    ("dynamodb.eu-west-1.amazonaws.com", "/", "eu-west-1", None),
    ("dynamodb.eu-west-1.amazonaws.com", "/", "eu-west-1", "FwoGZXIvYXdzE+/token=="),
    ("127.0.0.1:8000", "/", "us-east-1", None),
    ("[::1]:8000", "/", "us-east-1", "tok"),
    ("proxy.internal", "/dynamo/v1/", "ap-south-1", None),
    ("proxy.internal", "/odd path~x/", "ap-south-1", None),
]


def _botocore_headers(host: str, path: str, region: str, credentials: Credentials,
                      body: bytes, amz_date: str) -> dict[str, str]:
    request = AWSRequest(method="POST", url=f"https://{host}{path}", data=body,
                         headers={"Host": host, "Content-Type": CONTENT_TYPE,
                                  "X-Amz-Target": TARGET})
    # botocore reads its own clock: stop it at the second our signer used.
    at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
        SigV4Auth(credentials, "dynamodb", region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(("host", "path", "region", "token"), CASES)
def test_same_headers_as_botocore(host: str, path: str, region: str, token: str | None) -> None:
    signer = PostSigner(host, path, region, "dynamodb", CONTENT_TYPE, TARGET)
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    for body in (b"{}", b'{"RequestItems": {"t": {"Keys": [{"k": {"S": "\xc3\xa9"}}]}}}'):
        ours = signer.sign(body, credentials.get_frozen_credentials())
        theirs = _botocore_headers(host, path, region, credentials, body, ours["X-Amz-Date"])
        assert ours == theirs


def test_the_date_and_the_key_follow_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # The signing key is kept for a day: the next day must sign with the next day's key.
    signer = PostSigner("h", "/", "us-east-1", "dynamodb", CONTENT_TYPE, TARGET)
    credentials = Credentials("AKID", "secret")
    first = signer.sign(b"{}", credentials.get_frozen_credentials())
    tomorrow = time.time() + 86_400
    monkeypatch.setattr(time, "time", lambda: tomorrow)
    second = signer.sign(b"{}", credentials.get_frozen_credentials())
    day = datetime.fromtimestamp(tomorrow, UTC).strftime("%Y%m%d")
    assert second["X-Amz-Date"].startswith(day) and f"AKID/{day}/" in second["Authorization"]
    assert second["Authorization"] != first["Authorization"]
    assert second == _botocore_headers("h", "/", "us-east-1", credentials, b"{}",
                                       second["X-Amz-Date"])
    rotated = Credentials("AKID", "rotated-secret")  # a refreshed secret: a new key
    third = signer.sign(b"{}", rotated.get_frozen_credentials())
    assert third == _botocore_headers("h", "/", "us-east-1", rotated, b"{}",
                                      third["X-Amz-Date"])


def _request_from_headers(signer: PostSigner, body: bytes, credentials: Credentials) -> bytes:
    """The request as the transport built it from sign()'s headers before request() did it
    from the second's stamp: the exact path."""
    headers = {**signer.sign(body, credentials.get_frozen_credentials()), **signer.unsigned}
    head = [f"POST {signer.path} HTTP/1.1", *(f"{name}: {value}"
                                                for name, value in headers.items()),
            f"Content-Length: {len(body)}\r\n\r\n"]
    return "\r\n".join(head).encode("latin-1") + body


def test_request_bytes_follow_the_clock_and_the_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # request() keeps a stamp per second and credentials: on generated requests, while the
    # clock runs over seconds and a day and the credentials rotate (within one second too),
    # it gives the request built from sign()'s headers, which give botocore's.
    rng = random.Random(7)
    host, path, region, _ = CASES[rng.randrange(len(CASES))]
    signer = PostSigner(host, path, region, "dynamodb", CONTENT_TYPE, TARGET,
                        {"User-Agent": "featurepull test", "Accept-Encoding": "identity"})
    clock = [datetime(2026, 12, 1, 23, 59, 58, tzinfo=UTC).timestamp()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    credentials = Credentials("AKID0", "secret0", None)
    seen: set[tuple[str, str]] = set()
    for step in range(120):
        if rng.random() < 0.3:
            clock[0] += rng.choice([0.4, 1.0, 3.0])
        if rng.random() < 0.15:
            token = rng.choice([None, "", f"tok {step}  x", f"FwoG{step}+/=="])
            credentials = Credentials(f"AKID{step}", f"secret{step}", token)
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        ours = signer.request(body, credentials.get_frozen_credentials())
        assert ours == _request_from_headers(signer, body, credentials)
        headers = signer.sign(body, credentials.get_frozen_credentials())
        assert headers == _botocore_headers(host, path, region, credentials, body,
                                            headers["X-Amz-Date"])
        seen.add((headers["X-Amz-Date"], credentials.access_key))
    assert len({date[:8] for date, _ in seen}) == 2 and len(seen) > 20
