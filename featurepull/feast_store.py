"""featurepull as a Feast online store: Feast's DynamoDB online store whose reads go through
featurepull's :class:`~featurepull.dynamo.BatchReader`.

In ``feature_store.yaml``::

    online_store:
      type: featurepull.feast_store.FeaturepullOnlineStore
      region: us-east-1

Feast finds :class:`FeaturepullOnlineStoreConfig` from that class path. Every field of
Feast's ``DynamoDBOnlineStoreConfig`` is accepted with Feast's name and default, plus
featurepull's own (``retry_deadline_s``, ``transport``, ``max_rcu_per_s``,
``adaptive_concurrency``; a budget paces each serving process on its own).

What changes is ``online_read`` and ``online_read_async`` (so ``get_online_features``, the
feature server, and anything else that reads): keys DynamoDB leaves in ``UnprocessedKeys``,
throttled requests and dropped connections are retried until ``retry_deadline_s`` instead of
read as "not found"; duplicate keys in one call are read once and fanned back out instead of
failing the request; the answer has Feast's shape, one ``(event_ts, {name: Value})`` or
``(None, None)`` per key, in order, the values parsed by Feast's own ``Value`` class. Writes,
``update``, ``teardown`` and ``plan`` are Feast's, inherited unchanged.

Needs Feast with its AWS extra: ``pip install 'featurepull[feast]'``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import PrivateAttr, ValidationError, model_validator

from featurepull.config import DynamoSettings
from featurepull.config.errors import request_error_text
from featurepull.config.settings import Transport
from featurepull.dynamo import BatchReader, FeastLayout

INSTALL_HINT = ("featurepull.feast_store needs Feast and its AWS extra: "
                "pip install 'featurepull[feast]'")
try:
    import feast  # noqa: F401  (a plain ImportError when Feast itself is missing)
except ImportError as _missing:
    raise ImportError(INSTALL_HINT) from _missing
try:
    from feast.feature_view import FeatureView
    from feast.infra.online_stores.dynamodb import (
        DynamoDBOnlineStore,
        DynamoDBOnlineStoreConfig,
        _get_table_name,
    )
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from feast.repo_config import RepoConfig
    from google.protobuf.message import DecodeError
except Exception as _missing:  # without aiobotocore Feast raises its own FeastError
    raise ImportError(INSTALL_HINT) from _missing

STORE_TYPE = "featurepull.feast_store.FeaturepullOnlineStore"
# Feast's fields the reader uses; the rest (tags, keepalive_timeout, warmup_connections,
# table_name_template through Feast's own table naming) serve Feast's writes and client.
_READ_FIELDS = ("region", "endpoint_url", "batch_size", "max_read_workers", "consistent_reads",
                "max_pool_connections", "session_based_auth", "connect_timeout",
                "read_timeout", "retry_mode", "total_max_retry_attempts")
_OWN_FIELDS = ("retry_deadline_s", "transport", "max_rcu_per_s", "adaptive_concurrency")
_DEFAULTS = DynamoSettings()

ReadRow = tuple[datetime | None, dict[str, Any] | None]


class FeaturepullOnlineStoreConfig(DynamoDBOnlineStoreConfig):
    """Feast's ``DynamoDBOnlineStoreConfig``, plus how featurepull retries and sends reads."""

    type: Literal["featurepull.feast_store.FeaturepullOnlineStore"] = STORE_TYPE  # type: ignore[assignment]
    retry_deadline_s: float = _DEFAULTS.retry_deadline_s
    """How long a key may stay unanswered (UnprocessedKeys, throttling, 5xx, dropped
    connections) before the read fails; lower it where a caller waits (a feature server)."""
    transport: Transport = _DEFAULTS.transport
    """``fast`` (featurepull's own HTTP requests) or ``botocore`` (the boto3 client)."""
    max_rcu_per_s: float | str | None = _DEFAULTS.max_rcu_per_s
    """Read budget of each process reading through this store: RCU/s or ``N%`` of the
    table's read capacity (see featurepull's ``dynamodb.max_rcu_per_s``)."""
    adaptive_concurrency: bool = _DEFAULTS.adaptive_concurrency
    """Halve the requests in flight on throttling, add one back after clean answers."""
    join_key_name_length: Literal["bytes", "chars"] | None = None
    """How entity key serialization version 3 packed a non-ASCII join-key name's length in
    the table: ``bytes`` (recent Feast) or ``chars`` (older Feast); unset refuses such a name
    (featurepull's ``join_key_name_length``)."""

    _settings: DynamoSettings = PrivateAttr()

    @model_validator(mode="after")
    def _read_settings(self) -> FeaturepullOnlineStoreConfig:
        """Check the read settings here, so a bad value fails when Feast loads the yaml."""
        values = {name: getattr(self, name) for name in (*_READ_FIELDS, *_OWN_FIELDS)}
        try:
            self._settings = DynamoSettings(
                **{name: value for name, value in values.items() if value is not None})
        except ValidationError as exc:
            # Masked as every quoted value is (featurepull.redact): Feast expands ${VARS}
            # into the yaml, so a bad value may carry a secret.
            raise ValueError(request_error_text(exc, f"online_store ({STORE_TYPE})")) from None
        return self

    @property
    def read_settings(self) -> DynamoSettings:
        """featurepull's settings for the reads, built from this config's fields."""
        return self._settings


class FeaturepullOnlineStore(DynamoDBOnlineStore):
    """Feast's DynamoDB online store whose reads go through featurepull's BatchReader."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # One reader per table and key shape: it checks its table's key schema once.
        self._readers: dict[tuple[Hashable, ...], BatchReader] = {}

    def online_read(self, config: RepoConfig, table: FeatureView,
                    entity_keys: list[EntityKeyProto],
                    requested_features: list[str] | None = None) -> list[ReadRow]:
        """One ``(event_ts, {feature: Value})`` per key, in order; ``(None, None)`` for a key
        DynamoDB has no item for. Without ``requested_features``, the view's features."""
        if not entity_keys:
            return []
        online = config.online_store
        if not isinstance(online, FeaturepullOnlineStoreConfig):
            raise TypeError(f"{type(self).__name__} needs online_store type {STORE_TYPE}, "
                            f"got {type(online).__name__}")
        features = list(dict.fromkeys(requested_features or
                                      [feature.name for feature in table.features]))
        key_types, columns = _key_columns(entity_keys)
        reader = self._reader(online, _get_table_name(online, config, table), key_types,
                              config.entity_key_serialization_version)
        keys = reader.layout.keys_for(columns, f"entity keys of feature view {table.name}")
        # Feast answers a feature its items lack by leaving it out, never with an error: the
        # registry, not a typed flag, named these features.
        rows = reader.read(keys, features, allow_missing_features=True).rows
        return [(None, None) if row is None else
                (row[0], {name: value for name, value in zip(features, row[1:], strict=True)
                          if value is not None})
                for row in rows]

    async def online_read_async(self, config: RepoConfig, table: FeatureView,
                                entity_keys: list[EntityKeyProto],
                                requested_features: list[str] | None = None
                                ) -> list[ReadRow]:
        """:meth:`online_read` on a worker thread: the same read, and the caller's event
        loop keeps serving while it runs (decoding is CPU the loop should not wait on)."""
        return await asyncio.to_thread(self.online_read, config, table, entity_keys,
                                       requested_features)

    def _reader(self, online: FeaturepullOnlineStoreConfig, table_name: str,
                key_types: dict[str, str], version: int) -> BatchReader:
        settings = online.read_settings
        cache_key = (id(settings), table_name, tuple(sorted(key_types.items())), version,
                     online.join_key_name_length)
        reader = self._readers.get(cache_key)
        if reader is None or reader.settings is not settings:
            layout = FeastLayout(key_types, version, value_decoder=_feast_value,
                                 name_length=online.join_key_name_length)
            reader = self._readers[cache_key] = BatchReader(table_name, layout, settings)
        return reader


_KEY_KINDS = {"int64_val": "int64", "int32_val": "int32", "string_val": "string",
              "bytes_val": "bytes", "unix_timestamp_val": "unix_timestamp"}


def _key_columns(entity_keys: Sequence[EntityKeyProto]
                 ) -> tuple[dict[str, str], dict[str, list[Any]]]:
    """The join-key types and value columns of Feast entity keys (all of one shape, as
    Feast builds them for one feature view)."""
    first = entity_keys[0]
    names = list(first.join_keys)
    kinds = [value.WhichOneof("val") for value in first.entity_values]
    unsupported = [f"{name} ({kind})" for name, kind in zip(names, kinds, strict=True)
                   if kind not in _KEY_KINDS]
    if unsupported:
        raise ValueError(f"join keys {', '.join(unsupported)} cannot be hashed as Feast "
                         f"hashes keys: join key values must be one of "
                         f"{', '.join(_KEY_KINDS)}")
    columns: list[list[Any]] = [[] for _ in names]
    for row, key in enumerate(entity_keys):
        values = key.entity_values
        if key.join_keys != names or [v.WhichOneof("val") for v in values] != kinds:
            raise ValueError(f"entity key {row + 1} has join keys {list(key.join_keys)} of "
                             f"kinds {[v.WhichOneof('val') for v in values]}; the first has "
                             f"{names} of kinds {kinds}: one read takes keys of one shape")
        for column, kind, value in zip(columns, kinds, values, strict=True):
            column.append(getattr(value, kind))
    return ({name: _KEY_KINDS[str(kind)] for name, kind in zip(names, kinds, strict=True)},
            dict(zip(names, columns, strict=True)))


def _feast_value(data: bytes) -> Any:
    """A stored value as Feast's own ``Value`` message; a DecodeError becomes the ValueError
    the reader turns into an error naming the key."""
    try:
        return ValueProto.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a serialized Feast Value: {exc}") from None
