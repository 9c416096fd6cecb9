"""The ``featurepull`` command line.

Exit codes: 0 when every key was read or confirmed absent and the output was written;
1 when the read failed (retry deadline, DynamoDB refused, unreachable); 2 for bad input or
configuration (usage, settings, entity file, unknown table, output path).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from tqdm import tqdm

from featurepull.config import ConfigError, Settings, load_settings
from featurepull.dynamo import EntityKeyError, ReadError, TableError
from featurepull.io import EntityFileError, OutputError
from featurepull.pull import PullRequest, pull

EXIT_READ_FAILED = 1
EXIT_BAD_INPUT = 2
_BAD_INPUT = (ConfigError, EntityFileError, EntityKeyError, OutputError, TableError, ValueError)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()] if value else []


def _key_types(value: str | None) -> dict[str, str]:
    types: dict[str, str] = {}
    for part in _split(value):
        name, sep, type_name = part.partition("=")
        if not sep or not name.strip() or not type_name.strip():
            raise click.BadParameter(f"{part!r} is not NAME=TYPE (e.g. driver_id=int64)",
                                     param_hint="--join-key-types")
        types[name.strip()] = type_name.strip()
    return types


def _settings_from(opts: dict[str, Any]) -> Settings:
    """Env < --feature-store-yaml < --config < flags."""
    dynamo = {
        "region": opts.get("region"),
        "endpoint_url": opts.get("endpoint_url"),
        "table_name_template": opts.get("table_name_template"),
        "max_read_workers": opts.get("max_read_workers"),
        "batch_size": opts.get("batch_size"),
        "consistent_reads": opts.get("consistent_reads"),
        "retry_deadline_s": opts.get("retry_deadline"),
    }
    overrides = {"project": opts.get("project"), "dynamodb": dynamo}
    return load_settings(opts.get("config"), opts.get("feature_store_yaml"), overrides)


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that reads DynamoDB shares."""
    options = [
        click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file."),
        click.option("--feature-store-yaml", type=click.Path(dir_okay=False),
                     help="Take project and online_store settings from a Feast repo's yaml."),
        click.option("--project", help="Feast project (feast layout table names)."),
        click.option("--table-name-template", help="Default {project}.{table_name}."),
        click.option("--endpoint-url", help="DynamoDB endpoint, e.g. a local one."),
        click.option("--region", help="AWS region."),
        click.option("--max-read-workers", type=int, help="Reader threads (default 10)."),
        click.option("--batch-size", type=int, help="Keys per BatchGetItem, 1..100."),
        click.option("--consistent-reads/--eventual-reads", default=None,
                     help="Strongly consistent reads (default: eventual)."),
        click.option("--retry-deadline", type=float,
                     help="Seconds a key may stay unanswered before the read fails."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextmanager
def _exit_codes() -> Iterator[None]:
    try:
        yield
    except ReadError as exc:
        if isinstance(exc, TableError):
            click.echo(f"featurepull: error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        click.echo(f"featurepull: read failed: {exc}", err=True)
        sys.exit(EXIT_READ_FAILED)
    except _BAD_INPUT as exc:
        click.echo(f"featurepull: error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="featurepull")
def main() -> None:
    """Pull the latest features of many entities from DynamoDB, in input order."""


@main.command("pull")
@click.option("--table", required=True,
              help="Feature view name (feast layout) or table name (plain layout).")
@click.option("--features", required=True, help="Comma-separated feature names, in output order.")
@click.option("--entities", "entities_path", required=True, type=click.Path(dir_okay=False),
              help="Entity file: .csv, .parquet or .jsonl.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="Output file: .csv, .parquet or .jsonl.")
@click.option("--layout", type=click.Choice(["feast", "plain"]), default="feast",
              show_default=True)
@click.option("--join-keys", help="Feast join keys (default: every entity column).")
@click.option("--join-key-types",
              help="NAME=TYPE,... with TYPE int64, int32, string or bytes (default: from the "
              "entity file's column types).")
@click.option("--event-ts-attribute", default="event_ts", show_default=True,
              help="Plain layout: the attribute holding the event time ('' for none).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@settings_options
def pull_command(**opts: Any) -> None:
    """Read features in this process (no broker) and write them in input order."""
    with _exit_codes():
        settings = _settings_from(opts)
        request = PullRequest(
            table=opts["table"],
            features=_split(opts["features"]),
            layout=opts["layout"],
            join_keys=_split(opts["join_keys"]),
            join_key_types=_key_types(opts["join_key_types"]),
            event_ts_attribute=opts["event_ts_attribute"] or None,
        )
        bar = tqdm(total=0, unit="keys", disable=None, file=sys.stderr, dynamic_ncols=True)

        def on_keys(total: int) -> None:
            bar.total = total
            bar.refresh()

        def advance(answered: int) -> None:
            bar.update(answered)

        try:
            outcome = pull(request, opts["entities_path"], opts["output_path"], settings,
                           overwrite=opts["overwrite"], progress=advance, on_keys=on_keys)
        finally:
            bar.close()
        if opts["as_json"]:
            summary = {"output": outcome.output, "rows_written": outcome.rows_written,
                       **outcome.stats.to_dict()}
            click.echo(json.dumps(summary))
        else:
            click.echo(f"featurepull: wrote {outcome.rows_written} rows to {outcome.output}")
            click.echo(outcome.stats.summary_line())


@main.command("demo")
@click.option("--drivers", default=20_000, show_default=True, type=click.IntRange(1, 2_000_000),
              help="How many drivers to seed.")
@click.option("--out-dir", default="demo-output", show_default=True, type=click.Path(),
              help="Where entities.parquet and features.parquet go.")
def demo_command(drivers: int, out_dir: str) -> None:
    """Seed a local DynamoDB with a Feast feature view and pull it, all on this machine."""
    from pathlib import Path

    from featurepull import demo
    from featurepull.local import running_moto

    # The local endpoint accepts any credentials; never send real ones to it.
    os.environ["AWS_ACCESS_KEY_ID"] = "featurepull-demo"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "featurepull-demo"
    os.environ.pop("AWS_SESSION_TOKEN", None)

    def bar(desc: str, total: int) -> tqdm[Any]:
        return tqdm(total=total, desc=desc, unit="rows", file=sys.stderr, dynamic_ncols=True,
                    mininterval=0.5)

    click.echo("featurepull demo: starting a local DynamoDB endpoint (moto server)", err=True)
    with _exit_codes(), running_moto() as moto:
        click.echo(f"featurepull demo: endpoint {moto.url}; seeding {drivers:,} drivers in "
                   f"{demo.PROJECT}.{demo.VIEW}", err=True)
        outcome = demo.run_demo(moto.url, Path(out_dir), drivers, bar)
    click.echo(f"wrote {outcome.rows_written:,} rows to {outcome.output} (input order; "
               f"{outcome.stats.missing:,} unknown drivers have null features)")
    click.echo(outcome.stats.summary_line())
    click.echo(demo.preview(outcome.output))
    click.echo("the local endpoint is stopped; nothing is left running")
