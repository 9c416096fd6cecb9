"""The root of every error featurepull raises on purpose, and its two branches.

    FeaturepullError
    ├── InputError   exit 2: fix the input or the configuration, then run again
    │   ConfigError (RegistryError), EntityFileError, EntityKeyError, OutputError, RequestError,
    │   ItemDecodeError, FeastValueError, S3Error, UnknownScorer, ScorerImportError,
    │   InvalidJobRequest, RequestTooLarge, UnknownJob, RedisRefused, RowsNotInRedis,
    │   MetricsError; and, found only once a read runs: TableError (BudgetError),
    │   UnknownFeatureError, JobRefused
    └── RunFailed    exit 1: the input was fine; the run did not complete
        ReadError (PermanentReadError, RetryDeadlineExceeded, EndpointUnreachable),
        JobFailed, JobStopped, ShardFailed, ScorerError, JobStoreError (RedisUnavailable),
        ServiceError, BotocoreInternalsChanged

A few classes sit under both branches because callers catch them by an older base (a
TableError is a ReadError, a JobRefused a JobFailed, RedisRefused a JobStoreError): the
branch named first among a class's bases is its kind, and :attr:`exit_code` follows it.
Classes that callers catch by a standard base keep it too (ConfigError is a ValueError,
UnknownJob a KeyError). This module imports nothing, so every layer may import it.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class FeaturepullError(Exception):
    """Anything featurepull refuses or fails on; the message says what and what to do."""

    exit_code: ClassVar[int] = EXIT_FAILED

    @property
    def is_input(self) -> bool:
        """True when the input or configuration is at fault (exit code 2)."""
        return self.exit_code == EXIT_BAD_INPUT


class InputError(FeaturepullError):
    """Bad input or configuration: the message names it and the fix. Exit code 2."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


class RunFailed(FeaturepullError):
    """The run did not complete (DynamoDB, Redis, a worker, a scorer). Exit code 1."""

    exit_code: ClassVar[int] = EXIT_FAILED
