"""The S3 requests behind `s3://` entity files and outputs, with errors a user can act on.

A client is built from `S3Settings` once per process and settings (a job's finisher makes a
request per part), never carried across a fork. It is a plain botocore client: boto3 and
s3transfer are imported only when a managed transfer (download, upload, copy) runs.
Every failure is an `S3Error` naming the URL, the bucket, where it looked (endpoint, region)
and what to check; callers re-raise it as their own error type.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

from featurepull._recently_used import RecentlyUsed
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


def _botocore_errors() -> tuple[type[Exception], ...]:
    """What a request through botocore's client raises. Imported when an exception is being
    matched, after ``_client`` built that client: botocore is loaded by then, and a pull that
    never touches S3 does not import it."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def download(location: S3Location, settings: S3Settings, stream: BinaryIO) -> None:
    """Copy the object into `stream` (a local file), in parallel ranges for a large one."""
    client = _client(settings)
    try:
        _transfers().download_fileobj(client, location.bucket, location.key, stream)
    except _botocore_errors() as exc:
        raise _read_error(exc, location, settings, client) from None


def object_size(location: S3Location, settings: S3Settings) -> int:
    """The object's size in bytes (a HEAD request: nothing is downloaded)."""
    client = _client(settings)
    try:
        head = client.head_object(Bucket=location.bucket, Key=location.key)
    except _botocore_errors() as exc:
        raise _read_error(exc, location, settings, client) from None
    return int(head["ContentLength"])


def upload(stream: BinaryIO, location: S3Location, settings: S3Settings,
           metadata: dict[str, str] | None = None) -> None:
    """Store the bytes of `stream`, from its start, as the object (multipart when large),
    with `metadata` as its user metadata."""
    client = _client(settings)
    stream.seek(0)
    extra = {"Metadata": metadata} if metadata else None
    try:
        _transfers().upload_fileobj(client, stream, location.bucket, location.key,
                                    ExtraArgs=extra)
    except _botocore_errors() as exc:
        raise _explain(exc, location, client, "s3:PutObject") from None


def object_metadata(location: S3Location, settings: S3Settings) -> dict[str, str] | None:
    """The object's user metadata, or None when there is no such object."""
    client = _client(settings)
    try:
        head = client.head_object(Bucket=location.bucket, Key=location.key)
    except _botocore_errors() as exc:
        if _code(exc) in _NOT_FOUND:
            return None
        raise _explain(exc, location, client, "s3:GetObject") from None
    return dict(head.get("Metadata", {}))


def put_bytes(location: S3Location, data: bytes, settings: S3Settings) -> None:
    """Store `data` as the object (one PUT: readers see all of it or the old object)."""
    client = _client(settings)
    try:
        client.put_object(Bucket=location.bucket, Key=location.key, Body=data)
    except _botocore_errors() as exc:
        raise _explain(exc, location, client, "s3:PutObject") from None


def get_bytes(location: S3Location, settings: S3Settings) -> bytes | None:
    """The object's bytes, or None when there is no such object."""
    client = _client(settings)
    try:
        return bytes(client.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
    except _botocore_errors() as exc:
        if _code(exc) in _NOT_FOUND:
            return None
        raise _explain(exc, location, client, "s3:GetObject") from None


def list_keys(location: S3Location, settings: S3Settings) -> list[str]:
    """The keys of every object under the location's key, taken as a prefix."""
    client = _client(settings)
    keys: list[str] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket,
                                                                 Prefix=location.key)
        for page in pages:
            keys += [item["Key"] for item in page.get("Contents", [])]
    except _botocore_errors() as exc:
        raise _explain(exc, location, client, "s3:ListBucket") from None
    return keys


def delete_keys(bucket: S3Location, keys: list[str], settings: S3Settings) -> None:
    """Delete these keys of the location's bucket (1,000 per request)."""
    client = _client(settings)
    try:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            client.delete_objects(Bucket=bucket.bucket, Delete={"Objects": batch, "Quiet": True})
    except _botocore_errors() as exc:
        raise _explain(exc, bucket, client, "s3:DeleteObject") from None


def copy(source: S3Location, target: S3Location, settings: S3Settings) -> None:
    """Copy an object within S3 (server-side: no bytes pass through this process)."""
    client = _client(settings)
    try:
        _transfers().copy(client, {"Bucket": source.bucket, "Key": source.key}, target.bucket,
                          target.key)
    except _botocore_errors() as exc:
        if _code(exc) in _NOT_FOUND:
            raise S3Error(f"{source.uri}: no such object in bucket {source.bucket!r}") from None
        raise _explain(exc, target, client, "s3:GetObject and s3:PutObject") from None


def require_bucket(location: S3Location, settings: S3Settings) -> None:
    """Raise S3Error unless the location's bucket exists and these credentials may use it."""
    client = _client(settings)
    try:
        client.head_bucket(Bucket=location.bucket)
    except _botocore_errors() as exc:
        if _code(exc) in _NOT_FOUND | {"NoSuchBucket"}:
            raise S3Error(_missing_bucket_message(location, client)) from None
        raise _explain(exc, location, client, "s3:ListBucket") from None


def object_exists(location: S3Location, settings: S3Settings) -> bool:
    """Whether the object exists (its bucket is assumed to: see `require_bucket`)."""
    client = _client(settings)
    try:
        client.head_object(Bucket=location.bucket, Key=location.key)
    except _botocore_errors() as exc:
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


CLIENTS_KEPT = 8
# (pid, endpoint, region) -> client.
_clients: RecentlyUsed[tuple[int, str | None, str | None], Any] = RecentlyUsed(CLIENTS_KEPT)


def _client(settings: S3Settings) -> Any:
    # Kept per process (a client does not cross a fork) and settings: a job's finisher
    # makes a request per part, and building a client costs more than the request. Only
    # the CLIENTS_KEPT most recently used are kept (jobs may name other endpoints); one
    # dropped is not closed: it closes its connections when garbage collected.
    def build() -> Any:
        # Only an S3 read or write builds botocore's session (a local pull may not).
        from featurepull.aws import default_session

        return default_session().create_client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region)

    return _clients.get((os.getpid(), settings.endpoint_url, settings.region), build)


def _transfers() -> Any:
    """boto3's managed transfers (s3transfer: parallel ranges, multipart), called with our
    botocore client as boto3's S3 client methods call them; imported on first use."""
    from boto3.s3 import inject

    return inject


def _code(exc: Exception) -> str | None:
    from botocore.exceptions import ClientError

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
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

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
