"""Settings: one typed tree, loaded from env, a TOML file, a Feast feature_store.yaml."""

from featurepull.config.errors import ConfigError
from featurepull.config.loading import load_settings, read_feature_store_yaml, read_toml
from featurepull.config.settings import (
    DynamoSettings,
    JobSettings,
    Notify,
    RequestFields,
    RetryMode,
    S3Settings,
    ScheduleSettings,
    ScorerSettings,
    Settings,
)

__all__ = [
    "ConfigError",
    "DynamoSettings",
    "JobSettings",
    "Notify",
    "RequestFields",
    "RetryMode",
    "S3Settings",
    "ScheduleSettings",
    "ScorerSettings",
    "Settings",
    "load_settings",
    "read_feature_store_yaml",
    "read_toml",
]
