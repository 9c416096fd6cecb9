"""The S3 requests behind `s3://` entity files and outputs, with errors a user can act on.

A client is built per call from `S3Settings`: these run once per file, in whichever process
reads or writes it, so there is nothing to share and nothing to rebuild after a fork.
Every failure is an `S3Error` naming the URL, the bucket, where it looked (endpoint, region)
and what to check; callers re-raise it as their own error type.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from featurepull.config import S3Settings
from featurepull.errors import InputError
from featurepull.io._formats import S3Location

# HEAD requests carry no error body: a missing object or bucket is a bare "404".
_NOT_FOUND = frozenset({"404", "NotFound", "NoSuchKey"})
_DENIED = frozenset({
    "403", "Forbidden", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
})


class S3Error(InputError, ValueError):
    """An S3 request failed; the message names the object and what to check."""


def download(location: S3Location, settings: S3Settings, stream: BinaryIO) -> None:
    """Copy the object into `stream` (a local file), in parallel ranges for a large one."""
    client = _client(settings)
    try:
        client.download_fileobj(location.bucket, location.key, stream)
    except (BotoCoreError, ClientError) as exc:
        raise _read_error(exc, location, settings, client) from None


def object_size(location: S3Location, settings: S3Settings) -> int:
    """The object's size in bytes (a HEAD request: nothing is downloaded)."""
    client = _client(settings)
    try:
        head = client.head_object(Bucket=location.bucket, Key=location.key)
    except (BotoCoreError, ClientError) as exc:
        raise _read_error(exc, location, settings, client) from None
    return int(head["ContentLength"])


def upload(stream: BinaryIO, location: S3Location, settings: S3Settings) -> None:
    """Store the bytes of `stream`, from its start, as the object (multipart when large)."""
    client = _client(settings)
    stream.seek(0)
    try:
        client.upload_fileobj(stream, location.bucket, location.key)
    except (BotoCoreError, ClientError) as exc:
        raise _explain(exc, location, client, "s3:PutObject") from None


def require_bucket(location: S3Location, settings: S3Settings) -> None:
    """Raise S3Error unless the location's bucket exists and these credentials may use it."""
    client = _client(settings)
    try:
        client.head_bucket(Bucket=location.bucket)
    except (BotoCoreError, ClientError) as exc:
        if _code(exc) in _NOT_FOUND | {"NoSuchBucket"}:
            raise S3Error(_missing_bucket_message(location, client)) from None
        raise _explain(exc, location, client, "s3:ListBucket") from None


def object_exists(location: S3Location, settings: S3Settings) -> bool:
    """Whether the object exists (its bucket is assumed to: see `require_bucket`)."""
    client = _client(settings)
    try:
        client.head_object(Bucket=location.bucket, Key=location.key)
    except (BotoCoreError, ClientError) as exc:
        if _code(exc) in _NOT_FOUND:
            return False
        raise _explain(exc, location, client, "s3:GetObject and s3:ListBucket") from None
    return True


def _read_error(exc: Exception, location: S3Location, settings: S3Settings,
                client: Any) -> S3Error:
    if _code(exc) in _NOT_FOUND:
        require_bucket(location, settings)  # a missing bucket answers 404 too
        return S3Error(
            f"{location.uri}: no such object in bucket {location.bucket!r}; check the key "
            "(S3 keys are case-sensitive and include every folder)"
        )
    # Without s3:ListBucket, S3 answers a missing key with 403 rather than 404.
    permission = "s3:GetObject (and s3:ListBucket, or a missing key also reads as denied)"
    return _explain(exc, location, client, permission)


def _client(settings: S3Settings) -> Any:
    return boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region)


def _code(exc: Exception) -> str | None:
    if isinstance(exc, ClientError):
        code: str | None = exc.response.get("Error", {}).get("Code")
        return code
    return None


def _where(client: Any) -> str:
    # What the client resolved, so a default taken from the environment shows up too.
    return f"endpoint {client.meta.endpoint_url}, region {client.meta.region_name}"


def _missing_bucket_message(location: S3Location, client: Any) -> str:
    return (
        f"{location.uri}: bucket {location.bucket!r} does not exist ({_where(client)}); "
        "check the bucket name and the S3 endpoint and region, or create the bucket"
    )


def _explain(
    exc: Exception, location: S3Location, client: Any, permission: str
) -> S3Error:
    code = _code(exc)
    if code == "NoSuchBucket":
        return S3Error(_missing_bucket_message(location, client))
    if code in _DENIED:
        return S3Error(
            f"{location.uri}: access denied ({code}, {_where(client)}); check the AWS "
            f"credentials and that they allow {permission} on bucket {location.bucket!r}"
        )
    if isinstance(exc, NoCredentialsError):
        return S3Error(
            f"{location.uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance or task role"
        )
    if isinstance(exc, EndpointConnectionError):
        return S3Error(
            f"{location.uri}: cannot reach S3 ({_where(client)}): {exc}; check the "
            "endpoint URL and the network"
        )
    return S3Error(f"{location.uri}: the S3 request failed ({_where(client)}): {exc}")
