"""The online_store block: Feast resolves featurepull's store from its class path, every
field of Feast's DynamoDBOnlineStoreConfig keeps its name and default, bad values fail when
the config loads, the same yaml works with ``featurepull pull --feature-store-yaml``, and
without Feast only the plugin's import fails, with the install command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from feast.infra.online_stores.dynamodb import DynamoDBOnlineStoreConfig
from feast.infra.online_stores.helpers import get_online_store_from_config
from feast.repo_config import FeastConfigError, RepoConfig, load_repo_config
from pydantic import ValidationError

from featurepull.config import DynamoSettings, load_settings
from featurepull.config.loading import FEAST_STORE_TYPES
from featurepull.feast_store import (
    STORE_TYPE,
    FeaturepullOnlineStore,
    FeaturepullOnlineStoreConfig,
)


def _repo_config(tmp_path: Path, **online: object) -> RepoConfig:
    return RepoConfig(project="p", provider="local", registry=str(tmp_path / "registry.db"),
                      online_store={"type": STORE_TYPE, "region": "eu-west-1", **online})


def test_feast_resolves_the_config_and_the_store_from_the_class_path(tmp_path: Path) -> None:
    config = _repo_config(tmp_path)
    assert type(config.online_store) is FeaturepullOnlineStoreConfig
    assert isinstance(config.online_store, DynamoDBOnlineStoreConfig)  # Feast's writes check
    assert type(get_online_store_from_config(config.online_store)) is FeaturepullOnlineStore


def test_every_feast_field_keeps_its_name_and_default() -> None:
    feast_fields = DynamoDBOnlineStoreConfig.model_fields
    mine = FeaturepullOnlineStoreConfig.model_fields
    assert set(feast_fields) <= set(mine)
    for name, field in feast_fields.items():
        if name != "type":
            assert (mine[name].default, mine[name].is_required()) == (
                field.default, field.is_required()), name
    assert set(mine) - set(feast_fields) == {"retry_deadline_s", "transport", "max_rcu_per_s",
                                             "adaptive_concurrency", "join_key_name_length"}


def test_the_read_settings_come_from_the_online_store_block(tmp_path: Path) -> None:
    online = {"endpoint_url": "http://127.0.0.1:1", "batch_size": 40, "max_read_workers": 24,
              "consistent_reads": True, "max_pool_connections": 64,
              "session_based_auth": True, "connect_timeout": 2, "read_timeout": 3.5,
              "retry_mode": "legacy", "total_max_retry_attempts": 2,
              "retry_deadline_s": 7.5, "transport": "botocore", "max_rcu_per_s": 250.0,
              "adaptive_concurrency": False}
    settings = _repo_config(tmp_path, **online).online_store.read_settings
    assert settings.model_dump(include=set(online)) == online
    assert settings.region == "eu-west-1"
    # Feast's defaults, and its None for "botocore decides", become featurepull's settings.
    defaults = _repo_config(tmp_path, retry_mode=None,
                            total_max_retry_attempts=None).online_store.read_settings
    assert defaults.batch_size == 100 and defaults.max_read_workers == 10
    assert defaults.retry_mode == DynamoSettings().retry_mode
    assert defaults.total_max_retry_attempts == DynamoSettings().total_max_retry_attempts
    assert defaults.retry_deadline_s == DynamoSettings().retry_deadline_s


@pytest.mark.parametrize(("online", "message"), [
    ({"batch_size": 101}, r"batch_size=101: Input should be less than or equal to 100"),
    ({"max_read_workers": 0}, r"max_read_workers=0: Input should be greater than or equal"),
    ({"retry_deadline_s": 0}, r"retry_deadline_s=0.0: Input should be greater than 0"),
    ({"transport": "pigeon"}, r"transport\n.*Input should be 'fast' or 'botocore'"),
    ({"max_rcu_per_s": "150%"}, r"max_rcu_per_s='150%'"),
    ({"max_read_workerz": 4}, r"max_read_workerz\n.*Extra inputs are not permitted"),
])
def test_a_bad_value_fails_when_the_config_loads(tmp_path: Path, online: dict[str, object],
                                                 message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _repo_config(tmp_path, **online)


def test_featurepulls_own_commands_read_the_same_yaml(tmp_path: Path) -> None:
    assert STORE_TYPE in FEAST_STORE_TYPES
    # Every field the plugin's config has, each at a value other than its default.
    online = FeaturepullOnlineStoreConfig(
        region="eu-west-1", endpoint_url="http://127.0.0.1:1", batch_size=50,
        table_name_template="{project}-{table_name}", consistent_reads=True,
        warmup_connections=True, tags={"team": "rides"}, session_based_auth=True,
        max_read_workers=32, max_pool_connections=40, keepalive_timeout=12.0,
        connect_timeout=3, read_timeout=4, total_max_retry_attempts=2, retry_mode="legacy",
        retry_deadline_s=9, transport="botocore", max_rcu_per_s=300.0,
        adaptive_concurrency=False, join_key_name_length="chars")
    block = online.model_dump()
    assert {name for name, value in block.items()
            if value == FeaturepullOnlineStoreConfig.model_fields[name].default} == {"type"}
    yaml_path = tmp_path / "feature_store.yaml"
    yaml_path.write_text(yaml.safe_dump({"project": "rides", "online_store": block}))
    settings = load_settings(feature_store_yaml=yaml_path)
    assert settings.project == "rides"
    assert settings.join_key_name_length == "chars"  # a top-level setting of featurepull's
    used = set(block) - {"type", "tags", "keepalive_timeout", "warmup_connections",
                         "join_key_name_length"}
    assert settings.dynamodb.model_dump(include=used) == {name: block[name] for name in used}


_WITHOUT_FEAST = """
import sys
class NoFeast:
    def find_spec(self, name, path=None, target=None):
        if name == "feast" or name.startswith("feast."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoFeast())
import featurepull
assert "feast" not in sys.modules
print("featurepull imported")
try:
    import featurepull.feast_store
except ImportError as exc:
    print(exc)
"""


def test_without_feast_only_the_plugin_import_fails_and_says_what_to_install() -> None:
    done = subprocess.run([sys.executable, "-c", _WITHOUT_FEAST], capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.splitlines() == [
        "featurepull imported",
        "featurepull.feast_store needs Feast and its AWS extra: "
        "pip install 'featurepull[feast]'"]


def test_importing_featurepull_does_not_import_feast() -> None:
    code = "import sys, featurepull, featurepull.cli; print('feast' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_a_bad_value_is_quoted_with_its_secret_masked(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Feast expands ${VARS} into feature_store.yaml: here a URL with a password landed in
    # the wrong field. Every rule of featurepull.redact applies to the value and the message.
    secret = "Pl4nted-Secret-9f3e"
    monkeypatch.setenv("BUDGET_SOURCE", f"https://ops:{secret}@vault.internal/ddb")
    yaml_path = tmp_path / "feature_store.yaml"
    yaml_path.write_text(yaml.safe_dump({
        "project": "p", "provider": "local", "registry": str(tmp_path / "registry.db"),
        # pydantic's own report adds the block's first and last ~25 characters: the bad
        # value sits between other fields, as it may in a real block.
        "online_store": {"type": STORE_TYPE, "max_rcu_per_s": "${BUDGET_SOURCE}",
                         "region": "eu-west-1", "endpoint_url": "http://127.0.0.1:1"}},
        sort_keys=False))
    with pytest.raises(FeastConfigError) as raised:
        load_repo_config(tmp_path, yaml_path)
    shown = str(raised.value)
    assert secret not in shown
    # Still names the field, shows where the value came from, and says what is allowed.
    assert "max_rcu_per_s='https://ops:***@vault.internal/ddb'" in shown
    assert "a percentage above 0 and at most 100" in shown
