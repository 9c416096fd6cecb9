"""Settings: defaults that mirror Feast, env with __ nesting, TOML, feature_store.yaml, the
precedence between them, and one readable error per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurepull.config import ConfigError, DynamoSettings, Settings, load_settings
from featurepull.config.loading import with_yaml_key_encoding


def test_defaults_mirror_feast_dynamodb_online_store_config() -> None:
    dynamo = Settings().dynamodb
    assert dynamo.table_name_template == "{project}.{table_name}"
    assert dynamo.batch_size == 100
    assert dynamo.max_read_workers == 10
    assert dynamo.consistent_reads is False
    assert dynamo.max_pool_connections == 50
    assert dynamo.session_based_auth is False
    assert (dynamo.connect_timeout, dynamo.read_timeout) == (5.0, 10.0)
    assert Settings().entity_key_serialization_version == 3


def test_env_nests_with_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREPULL_REDIS_URL", "redis://example:6379/3")
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__REGION", "eu-west-1")
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__MAX_READ_WORKERS", "32")
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__CONSISTENT_READS", "true")
    settings = load_settings()
    assert settings.redis_url == "redis://example:6379/3"
    assert settings.dynamodb.region == "eu-west-1"
    assert settings.dynamodb.max_read_workers == 32
    assert settings.dynamodb.consistent_reads is True


def test_feature_store_yaml_is_read(tmp_path: Path) -> None:
    yaml_path = tmp_path / "feature_store.yaml"
    yaml_path.write_text(
        "project: fraud\nregistry: data/registry.db\nprovider: aws\n"
        "entity_key_serialization_version: 2\n"
        "online_store:\n  type: dynamodb\n  region: us-west-2\n  batch_size: 40\n"
        "  table_name_template: 'fs_{project}__{table_name}'\n  tags: {team: ml}\n"
    )
    settings = load_settings(feature_store_yaml=yaml_path)
    assert settings.project == "fraud"
    assert settings.entity_key_serialization_version == 2
    assert settings.dynamodb.region == "us-west-2"
    assert settings.dynamodb.batch_size == 40
    assert settings.dynamodb.table_name("fraud", "txn") == "fs_fraud__txn"


def test_precedence_env_then_yaml_then_toml_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__REGION", "from-env")
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__BATCH_SIZE", "11")
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__MAX_READ_WORKERS", "12")
    monkeypatch.setenv("FEATUREPULL_PROJECT", "env-project")
    yaml_path = tmp_path / "feature_store.yaml"
    yaml_path.write_text("project: yaml-project\nonline_store:\n  type: dynamodb\n"
                         "  region: from-yaml\n  batch_size: 22\n")
    toml_path = tmp_path / "featurepull.toml"
    toml_path.write_text('[dynamodb]\nregion = "from-toml"\n')
    settings = load_settings(toml_path, yaml_path, {"dynamodb": {"max_read_workers": 4}})
    assert settings.dynamodb.region == "from-toml"
    assert settings.dynamodb.batch_size == 22
    assert settings.dynamodb.max_read_workers == 4
    assert settings.project == "yaml-project"


def test_a_yamls_key_encoding_goes_over_a_workers_settings_and_nothing_else(
        tmp_path: Path) -> None:
    worker = Settings(project="fleet", entity_key_serialization_version=3,
                      join_key_name_length="chars", dynamodb={"region": "eu-west-1"})
    yaml_path = tmp_path / "feature_store.yaml"
    yaml_path.write_text("project: fraud\nentity_key_serialization_version: 2\nonline_store:\n"
                         "  type: featurepull.feast_store.FeaturepullOnlineStore\n"
                         "  region: us-west-2\n  join_key_name_length: bytes\n")
    job = with_yaml_key_encoding(worker, yaml_path)
    assert (job.entity_key_serialization_version, job.join_key_name_length) == (2, "bytes")
    assert job.model_dump() == {**worker.model_dump(), "entity_key_serialization_version": 2,
                                "join_key_name_length": "bytes"}
    assert with_yaml_key_encoding(worker, None) is worker
    yaml_path.write_text("project: fraud\nonline_store:\n  type: dynamodb\n")
    assert with_yaml_key_encoding(worker, yaml_path) is worker
    # A bad version: the message the command line gives for the same yaml.
    yaml_path.write_text("project: fraud\nentity_key_serialization_version: 4\n")
    with pytest.raises(ConfigError) as cli:
        load_settings(feature_store_yaml=yaml_path)
    with pytest.raises(ConfigError, match="entity_key_serialization_version") as sent:
        with_yaml_key_encoding(worker, yaml_path)
    assert str(sent.value) == str(cli.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"dynamodb": {"batch_size": 101}}, "dynamodb.batch_size (env FEATUREPULL_DYNAMODB__BATCH_SIZE)=101: Input should be less than or equal to 100"),
        ({"dynamodb": {"batch_size": 0}}, "greater than or equal to 1"),
        ({"dynamodb": {"max_read_workers": "many"}}, "max_read_workers (env FEATUREPULL_DYNAMODB__MAX_READ_WORKERS)='many'"),
        ({"dynamodb": {"retry_mode": "eager"}}, "'legacy', 'standard' or 'adaptive'"),
        ({"dynamodb": {"table_name_template": "{project}"}}, "must contain {table_name}"),
        ({"dynamodb": {"table_name_template": "{project}.{table_name}.{env}"}}, "only the placeholders"),
        ({"dynamodb": {"regoin": "x"}}, "dynamodb.regoin (env FEATUREPULL_DYNAMODB__REGOIN): unknown setting"),
        ({"entity_key_serialization_version": 1}, "entity_key_serialization_version"),
    ],
)
def test_bad_values_name_field_value_and_what_is_allowed(
    overrides: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        load_settings(overrides=overrides)
    assert expected in str(failure.value)


@pytest.mark.parametrize("text", ["2", "3"])
def test_the_serialization_version_is_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """An environment variable is text; the version is one of two ints."""
    monkeypatch.setenv("FEATUREPULL_ENTITY_KEY_SERIALIZATION_VERSION", text)
    assert load_settings().entity_key_serialization_version == int(text)
    monkeypatch.setenv("FEATUREPULL_ENTITY_KEY_SERIALIZATION_VERSION", "4")
    with pytest.raises(ConfigError, match=r"SERIALIZATION_VERSION\)='4': Input should be 2 or 3"):
        load_settings()


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__BATCH_SIZE", "abc")
    with pytest.raises(ConfigError, match=r"FEATUREPULL_DYNAMODB__BATCH_SIZE.*'abc'"):
        load_settings()


def test_files_with_errors_are_named(tmp_path: Path) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[dynamodb\nregion=")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_settings(bad_toml)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    redis_store = tmp_path / "feature_store.yaml"
    redis_store.write_text("project: p\nonline_store:\n  type: redis\n")
    with pytest.raises(ConfigError, match="online_store type is 'redis'"):
        load_settings(feature_store_yaml=redis_store)
    range_toml = tmp_path / "range.toml"
    range_toml.write_text("[dynamodb]\nbatch_size = 500\n")
    with pytest.raises(ConfigError, match=r"(?s)range\.toml.*batch_size.*500"):
        load_settings(range_toml)


def test_pool_is_never_smaller_than_thread_count() -> None:
    dynamo = DynamoSettings(max_read_workers=64, max_pool_connections=10)
    assert dynamo.pool_size == 64


def test_scorers_load_from_toml_and_env_json(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "scorers.toml"
    config.write_text('[[scorers]]\nname = "churn.v2"\npath = "myteam.scoring:churn"\n')
    assert [(s.name, s.path) for s in load_settings(config).scorers] == [
        ("churn.v2", "myteam.scoring:churn")]
    monkeypatch.setenv("FEATUREPULL_SCORERS", '[{"name": "risk", "path": "a.b_c.d:risk_1"}]')
    assert [s.name for s in load_settings().scorers] == ["risk"]


@pytest.mark.parametrize(("scorer", "message"), [
    ({"name": "risk", "path": "myteam.scoring"}, "must be 'package.module:function'"),
    ({"name": "risk", "path": "myteam.scoring:risk.v2"}, "must be 'package.module:function'"),
    ({"name": "risk", "path": "my-team.scoring:risk"}, "must be 'package.module:function'"),
    ({"name": "a:b", "path": "m:f"}, r"scorers.0.name .*'a:b'"),
    ({"name": "risk", "path": "m:f", "code": "x"}, "unknown setting"),
])
def test_a_bad_scorer_entry_is_one_clear_error(scorer: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(overrides={"scorers": [scorer]})


def test_scorer_names_are_unique() -> None:
    with pytest.raises(ConfigError, match="scorer names must be unique; repeated: risk"):
        load_settings(overrides={"scorers": [{"name": "risk", "path": "m:f"},
                                             {"name": "risk", "path": "m:g"}]})
