"""Errors of the read engine. Each message names the table, and where it applies the region,
endpoint, key or file row, and what to do about it."""

from __future__ import annotations

from featurepull.dynamo.stats import ReadStats
from featurepull.errors import InputError, RunFailed


class ReadError(RunFailed, RuntimeError):
    """A read could not be completed; no partial result is returned."""


class TableError(InputError, ReadError):
    """The table does not exist, cannot be reached, or has the wrong key schema."""


class PermanentReadError(ReadError):
    """DynamoDB refused a request for a reason retrying cannot fix (validation, access)."""


class EndpointUnreachable(ReadError):
    """DynamoDB's endpoint did not answer at all (refused, timed out, no such host)."""


class RetryDeadlineExceeded(ReadError):
    """Keys stayed unanswered (throttled, unprocessed, failing) past the retry deadline."""

    def __init__(self, message: str, keys_left: int, stats: ReadStats | None = None) -> None:
        super().__init__(message)
        self.keys_left = keys_left
        self.stats = stats  # what the read did until it gave up


class UnknownFeatureError(InputError, ReadError):
    """A requested feature is held by none of the items found: a typo, or another table's
    feature. Bad input (exit 2), unless the read allows missing features."""

    def __init__(self, message: str, missing: list[str], held: list[str] | None) -> None:
        super().__init__(message)
        self.missing = missing
        self.held = held  # what the items hold; None when they could not be listed


class EntityKeyError(InputError, ValueError):
    """An entity key cannot be built from the input: bad type, null, too long."""


class RequestError(InputError, ValueError):
    """The read request itself is malformed: no features, an empty or repeated name."""


class ItemDecodeError(InputError, ValueError):
    """A value of a returned item cannot be decoded; the message names the attribute or
    feature, the value, and what to do (the reader adds the table and the key)."""
