"""Loading settings from files: a TOML config file and a Feast ``feature_store.yaml``.

Both produce plain dicts in the shape of :class:`Settings`, merged in precedence order by
:func:`load_settings`; validation happens once, on the merged result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featurepull.config.errors import ConfigError, settings_error
from featurepull.config.settings import DynamoSettings, Settings

# Feast online-store keys that only matter for writing or for Feast's async client; a Feast
# user's yaml carries them, so they are accepted and ignored rather than rejected.
_FEAST_IGNORED = {"type", "tags", "keepalive_timeout", "warmup_connections"}
# Online store types whose tables featurepull reads: Feast's own, by its short type or the
# full path of its class (Feast accepts both), and featurepull's plugin.
FEAST_STORE_TYPES = ("dynamodb", "feast.infra.online_stores.dynamodb.DynamoDBOnlineStore",
                     "featurepull.feast_store.FeaturepullOnlineStore")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The settings in a TOML file (same names as the environment, nested by table)."""
    import tomllib  # only where a config file is named

    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def read_feature_store_yaml(path: str | Path) -> dict[str, Any]:
    """``project``, ``entity_key_serialization_version`` and the DynamoDB online store of a
    Feast ``feature_store.yaml``, as featurepull settings."""
    import yaml  # only for a feature_store.yaml: not every process that loads settings

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"feature_store.yaml {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must be a YAML mapping with 'project' and 'online_store'")
    out: dict[str, Any] = {}
    for name in ("project", "entity_key_serialization_version"):
        if name in doc:
            out[name] = doc[name]
    store = doc.get("online_store")
    if store is None:
        return out
    if not isinstance(store, dict) or store.get("type") not in FEAST_STORE_TYPES:
        kind = store.get("type") if isinstance(store, dict) else store
        raise ConfigError(
            f"{path}: online_store type is {kind!r}; featurepull reads only DynamoDB online "
            f"stores: {', '.join(map(repr, FEAST_STORE_TYPES))}"
        )
    known = set(DynamoSettings.model_fields)
    dynamo = {k: v for k, v in store.items() if k not in _FEAST_IGNORED}
    if "join_key_name_length" in dynamo:  # featurepull's Feast store: a top-level setting
        out["join_key_name_length"] = dynamo.pop("join_key_name_length")
    unknown = sorted(set(dynamo) - known)
    if unknown:
        raise ConfigError(
            f"{path}: online_store has settings featurepull does not know: {', '.join(unknown)}"
        )
    out["dynamodb"] = dynamo
    return out


# What a feature_store.yaml says of how its tables' keys were written.
KEY_ENCODING = ("entity_key_serialization_version", "join_key_name_length")


def with_yaml_key_encoding(settings: Settings, feature_store_yaml: str | Path | None
                           ) -> Settings:
    """``settings`` with the key encoding ``feature_store_yaml`` names on top (its
    ``entity_key_serialization_version``, a featurepull store's
    ``online_store.join_key_name_length``), as ``--feature-store-yaml`` puts it over the
    environment: a job a worker creates for a request or a schedule that names the yaml
    builds the keys the yaml's tables hold, whatever the worker's own settings say."""
    if not feature_store_yaml:
        return settings
    chosen = read_feature_store_yaml(feature_store_yaml)
    encoding = {name: chosen[name] for name in KEY_ENCODING if name in chosen}
    if not encoding:
        return settings
    try:
        return Settings(**merge(settings.model_dump(), encoding))
    except ValueError as exc:
        raise settings_error(exc, str(feature_store_yaml)) from None


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two settings dicts; ``over`` wins, None values in ``over`` are skipped."""
    merged = dict(base)
    for key, value in over.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            below = merged.get(key)
            merged[key] = merge(below if isinstance(below, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: str | Path | None = None,
    feature_store_yaml: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the environment, then the yaml, then the TOML file, then overrides."""
    values: dict[str, Any] = {}
    source = None
    if feature_store_yaml is not None:
        values = merge(values, read_feature_store_yaml(feature_store_yaml))
        source = str(feature_store_yaml)
    if config_file is not None:
        values = merge(values, read_toml(config_file))
        source = str(config_file) if source is None else f"{source} / {config_file}"
    values = merge(values, overrides or {})
    try:
        return Settings(**values)
    except ValueError as exc:
        raise settings_error(exc, source) from None
