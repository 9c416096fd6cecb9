"""Every option of `pull` and `submit` (and of the job commands) through click's own parser:
its name on the command line, the argument it fills, its type, default and required-ness, and
that --help shows a sentence for it. Nothing runs: `make_context` only parses.

Each check runs on the real commands and on commands built here from the same declarations
(`request_options`, `settings_options`, `config_options`). The real ones are what a user runs;
the ones built here are what scripts/mutation.sh can see: the real commands were declared when
`featurepull.cli` was imported, before mutmut switched a mutant on (docs/testing.md)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from featurepull.cli import config_options, main, request_options, settings_options
from featurepull.config.settings import DynamoSettings

ROOT = Path(__file__).resolve().parents[1]


def _nothing(**opts: Any) -> None:
    """The body of the commands built here: they are only parsed, never invoked."""


def _built(kind: str) -> click.Command:
    if kind == "pull":
        return click.command("pull")(request_options(output_required=True)(_nothing))
    if kind == "submit":
        return click.command("submit")(request_options(output_required=False)(_nothing))
    if kind == "settings":
        return click.command("settings")(settings_options(_nothing))
    return click.command("config")(config_options(_nothing))


def _real(kind: str) -> click.Command:
    return main.commands[kind]


SOURCES: dict[str, Callable[[str], click.Command]] = {"built": _built, "real": _real}

CONFIG_DEFAULTS = {"config": None, "redis_url": None}
SETTINGS_DEFAULTS = {
    "feature_store_yaml": None, "project": None, "table_name_template": None,
    "endpoint_url": None, "region": None, "max_read_workers": None, "batch_size": None,
    "consistent_reads": None, "retry_deadline": None, "max_rcu_per_s": None,
    "read_mode": None, **CONFIG_DEFAULTS}
REQUEST_DEFAULTS = {
    "table": None, "features": None, "feature_service": None, "full_feature_names": False,
    "respect_ttl": False, "entities_path": "e.csv", "output_path": None, "layout": "feast",
    "join_keys": None, "join_key_types": None, "event_ts_attribute": "event_ts",
    "scorer": None, "with_features": False, "allow_missing_features": False,
    "overwrite": False, "as_json": False, **SETTINGS_DEFAULTS}
SUBMIT_ONLY = {"shard_size": None, "wait": False, "notify_task": None, "notify_queue": None,
               "timeout": None}

EVERY_FLAG = [
    "--config", "cfg.toml", "--redis-url", "redis://h:1/2", "--feature-store-yaml", "fs.yaml",
    "--project", "p", "--table-name-template", "{project}-{table_name}", "--endpoint-url",
    "http://e:1", "--region", "eu-west-1", "--max-read-workers", "7", "--batch-size", "25",
    "--consistent-reads", "--retry-deadline", "2.5", "--max-rcu-per-s", "50%", "--table", "t",
    "--features", "a,b", "--feature-service", "svc", "--full-feature-names", "--respect-ttl",
    "--entities", "e.csv", "--output", "o.parquet", "--layout", "plain", "--join-keys", "k",
    "--join-key-types", "k=int64", "--event-ts-attribute", "ts", "--scorer", "s",
    "--with-features", "--allow-missing-features", "--overwrite", "--json", "--read-mode",
    "scan"]
EVERY_VALUE = {
    "config": "cfg.toml", "redis_url": "redis://h:1/2", "feature_store_yaml": "fs.yaml",
    "project": "p", "table_name_template": "{project}-{table_name}",
    "endpoint_url": "http://e:1", "region": "eu-west-1", "max_read_workers": 7,
    "batch_size": 25, "consistent_reads": True, "retry_deadline": 2.5, "max_rcu_per_s": "50%",
    "table": "t", "features": "a,b", "feature_service": "svc", "full_feature_names": True,
    "respect_ttl": True, "entities_path": "e.csv", "output_path": "o.parquet",
    "layout": "plain", "join_keys": "k", "join_key_types": "k=int64",
    "event_ts_attribute": "ts", "scorer": "s", "with_features": True,
    "allow_missing_features": True, "overwrite": True, "as_json": True, "read_mode": "scan"}


def parse(command: click.Command, *args: str) -> dict[str, Any]:
    with command.make_context(command.name, list(args)) as ctx:
        return dict(ctx.params)


def refusal(command: click.Command, *args: str) -> str:
    with pytest.raises(click.UsageError) as caught:
        parse(command, *args)
    return caught.value.format_message()


@pytest.mark.parametrize("source", SOURCES)
def test_every_request_flag_fills_its_argument_with_its_type(source: str) -> None:
    pull = SOURCES[source]("pull")
    values = parse(pull, *EVERY_FLAG)
    assert values == EVERY_VALUE
    assert [type(values[name]) for name in ("max_read_workers", "batch_size",
                                            "retry_deadline")] == [int, int, float]
    submit = SOURCES[source]("submit")
    extra = SUBMIT_ONLY if source == "real" else {}
    assert parse(submit, *EVERY_FLAG) == EVERY_VALUE | extra


@pytest.mark.parametrize("source", SOURCES)
def test_request_defaults(source: str) -> None:
    extra = SUBMIT_ONLY if source == "real" else {}
    assert parse(SOURCES[source]("submit"), "--entities", "e.csv") == REQUEST_DEFAULTS | extra
    assert parse(SOURCES[source]("pull"), "--entities", "e.csv", "--output",
                 "o.csv") == REQUEST_DEFAULTS | {"output_path": "o.csv"}


@pytest.mark.parametrize("source", SOURCES)
def test_consistent_and_eventual_reads(source: str) -> None:
    pull = SOURCES[source]("pull")
    required = ("--entities", "e.csv", "--output", "o.csv")
    assert parse(pull, *required, "--eventual-reads")["consistent_reads"] is False
    assert parse(pull, *required, "--consistent-reads")["consistent_reads"] is True


@pytest.mark.parametrize("source", SOURCES)
def test_required_options_and_bad_values_are_refused(source: str, tmp_path: Path) -> None:
    pull, submit = SOURCES[source]("pull"), SOURCES[source]("submit")
    assert refusal(pull, "--output", "o.csv") == "Missing option '--entities'."
    assert refusal(pull, "--entities", "e.csv") == "Missing option '--output'."
    assert refusal(submit, "--output", "o.csv") == "Missing option '--entities'."
    required = ("--entities", "e.csv", "--output", "o.csv")
    for flag, value, problem in (
            ("--batch-size", "ten", "'ten' is not a valid integer."),
            ("--max-read-workers", "2.5", "'2.5' is not a valid integer."),
            ("--retry-deadline", "soon", "'soon' is not a valid float."),
            ("--layout", "dense", "'dense' is not one of 'feast', 'plain'."),
            ("--read-mode", "fast", "'fast' is not one of 'batch-get', 'scan', 'auto'."),
            ("--config", str(tmp_path), f"File '{tmp_path}' is a directory."),
            ("--feature-store-yaml", str(tmp_path), f"File '{tmp_path}' is a directory.")):
        assert refusal(pull, *required, flag, value) == (
            f"Invalid value for '{flag}': {problem}"), flag


@pytest.mark.parametrize("source", SOURCES)
def test_the_job_commands_find_their_settings(source: str, tmp_path: Path) -> None:
    command = _built("config") if source == "built" else _real("status")
    given = {"job_id": "j1", "as_json": False} if source == "real" else {}
    args = ("j1",) if source == "real" else ()
    assert parse(command, *args) == CONFIG_DEFAULTS | given
    assert parse(command, *args, "--config", "c.toml", "--redis-url", "redis://r:1/0") == {
        "config": "c.toml", "redis_url": "redis://r:1/0"} | given
    assert refusal(command, *args, "--config", str(tmp_path)) == (
        f"Invalid value for '--config': File '{tmp_path}' is a directory.")
    settings = _built("settings") if source == "built" else _real("pull")
    required = () if source == "built" else ("--entities", "e.csv", "--output", "o.csv")
    parsed = parse(settings, *required)
    assert {name: parsed[name] for name in SETTINGS_DEFAULTS} == SETTINGS_DEFAULTS


@pytest.mark.parametrize("source", SOURCES)
def test_help_lists_the_options_in_order_each_with_a_sentence(source: str) -> None:
    """What to read first, then how to read it, then where settings come from; every option
    explained in one or more full sentences, defaults shown where they are not None."""
    pull = SOURCES[source]("pull")
    options = [param for param in pull.params if isinstance(param, click.Option)]
    assert [option.name for option in options] == [
        "table", "features", "feature_service", "full_feature_names", "respect_ttl",
        "entities_path", "output_path", "layout", "join_keys", "join_key_types",
        "event_ts_attribute", "scorer", "with_features", "allow_missing_features",
        "overwrite", "as_json", "feature_store_yaml", "project", "table_name_template",
        "endpoint_url", "region", "max_read_workers", "batch_size", "consistent_reads",
        "retry_deadline", "max_rcu_per_s", "read_mode", "config", "redis_url"]
    for option in options:
        assert option.help and re.fullmatch(r"[A-Z][^\n]*[.)]", option.help), option.name
    shown = CliRunner().invoke(pull, ["--help"], terminal_width=200).output
    assert "[default: feast]" in shown and "[default: event_ts]" in shown


def test_what_the_help_says_is_so() -> None:
    """The defaults, ranges, variables and pages the help texts name are the real ones."""
    helps = {param.name: param.help for param in _built("pull").params
             if isinstance(param, click.Option)}
    dynamo = DynamoSettings()
    assert f"(default {dynamo.max_read_workers})" in str(helps["max_read_workers"])
    bounds = DynamoSettings.model_fields["batch_size"].metadata
    low = next(rule.ge for rule in bounds if hasattr(rule, "ge"))
    high = next(rule.le for rule in bounds if hasattr(rule, "le"))
    assert f"{low}..{high}" in str(helps["batch_size"])
    assert f"Default {dynamo.table_name_template}." == helps["table_name_template"]
    assert "(default: $FEATUREPULL_CONFIG)" in str(helps["config"])
    assert "(FEATUREPULL_REDIS_URL)" in str(helps["redis_url"])
    for name in ("max_rcu_per_s", "output_path", "feature_service", "read_mode"):
        pages = re.findall(r"docs/[\w-]+\.md", str(helps[name]))
        assert pages and all((ROOT / page).is_file() for page in pages), name
