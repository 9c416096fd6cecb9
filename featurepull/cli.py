"""The ``featurepull`` command line.

Exit codes: 0 when every key was read or confirmed absent and the output was written;
1 when the read or job failed (retry deadline, DynamoDB refused, a shard failed, cancelled,
``--timeout`` passed, Redis unreachable); 2 for bad input or configuration (usage, settings,
entity file, unknown table or job, output path, Redis refusing the credentials, a requested
feature that no found item holds — also when a job's shard finds it: `submit --wait` exits 2).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from featurepull import _huge_pages
from featurepull.errors import InputError, RunFailed
from featurepull.worker import CONFIG_ENV

if TYPE_CHECKING:
    from featurepull.config import Settings

# Each command imports what it needs when it runs: `featurepull --help` and `featurepull
# pull` load no Celery, Redis or Flower (tests/test_imports.py).

# Set by run(), the console script: the whole process is this command's, so a pull may
# decide for it (no interpreter teardown, no pandas). Not when `main` runs inside another
# program (click's test runner, a user's script).
_own_process = False
# What a pull in its own process made (its entities, keys and rows: `_pull_keeping`'s
# `keep`), held until run() ends the process: freed one by one, they would cost ~50 ms at
# 100,000 rows.
_kept_until_exit: list[object] = []


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


def _dynamo_flags(opts: dict[str, Any]) -> dict[str, Any]:
    return {
        "region": opts.get("region"),
        "endpoint_url": opts.get("endpoint_url"),
        "table_name_template": opts.get("table_name_template"),
        "max_read_workers": opts.get("max_read_workers"),
        "batch_size": opts.get("batch_size"),
        "consistent_reads": opts.get("consistent_reads"),
        "retry_deadline_s": opts.get("retry_deadline"),
        "max_rcu_per_s": opts.get("max_rcu_per_s"),
        "read_mode": opts.get("read_mode"),  # a job carries it (docs/fleet.md#scan-jobs)
    }


def _config_file(opts: dict[str, Any]) -> str | None:
    return opts.get("config") or os.environ.get(CONFIG_ENV)


def _read_choices(opts: dict[str, Any]) -> dict[str, Any]:
    """The project and the DynamoDB settings a job may choose (JOB_DYNAMO_OVERRIDES), as this
    command gives them: --feature-store-yaml < --config < flags.

    ``pull`` reads with them on top of its settings; ``submit`` sends them as the job's
    ``project`` and ``dynamodb``, which the workers put on top of theirs — so the same command
    line reads the same way in both. The environment stays out: workers have their own.
    """
    from featurepull.config.loading import merge, read_feature_store_yaml, read_toml
    from featurepull.config.settings import JOB_DYNAMO_OVERRIDES

    chosen: dict[str, Any] = {}
    if opts.get("feature_store_yaml"):
        chosen = merge(chosen, read_feature_store_yaml(opts["feature_store_yaml"]))
    if _config_file(opts):
        chosen = merge(chosen, read_toml(str(_config_file(opts))))
    chosen = merge(chosen, {"project": opts.get("project"), "dynamodb": _dynamo_flags(opts)})
    dynamo = chosen.get("dynamodb")
    return {"project": chosen.get("project"),
            "dynamodb": {name: value for name, value in dynamo.items()
                         if name in JOB_DYNAMO_OVERRIDES} if isinstance(dynamo, dict) else {}}


def _settings_from(opts: dict[str, Any]) -> Settings:
    """Env < --feature-store-yaml < --config < flags."""
    from featurepull.config import load_settings

    overrides = _read_choices(opts)
    if opts.get("redis_url"):
        overrides["redis_url"] = opts["redis_url"]
    if opts.get("shard_size"):
        overrides["jobs"] = {"shard_size": opts["shard_size"]}
    return load_settings(_config_file(opts), opts.get("feature_store_yaml"), overrides)


def _apply(func: Callable[..., Any], options: list[Callable[..., Any]]) -> Callable[..., Any]:
    for option in reversed(options):
        func = option(func)
    return func


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--config and --redis-url: what every command needs to find its settings and Redis."""
    return _apply(func, [
        click.option("--config", type=click.Path(dir_okay=False),
                     help=f"TOML settings file (default: ${CONFIG_ENV})."),
        click.option("--redis-url", help="Redis broker and job store (FEATUREPULL_REDIS_URL)."),
    ])


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that reads DynamoDB shares."""
    return _apply(config_options(func), [
        click.option("--feature-store-yaml", type=click.Path(dir_okay=False),
                     help="Take project and online_store settings from a Feast repo's yaml."),
        click.option("--project", help="Feast project (feast layout table names)."),
        click.option("--table-name-template", help="Default {project}.{table_name}."),
        click.option("--endpoint-url", help="DynamoDB endpoint, e.g. a local one."),
        click.option("--region", help="AWS region."),
        click.option("--max-read-workers", type=int,
                     help="BatchGetItem requests in flight (default 10)."),
        click.option("--batch-size", type=int, help="Keys per BatchGetItem, 1..100."),
        click.option("--consistent-reads/--eventual-reads", default=None,
                     help="Strongly consistent reads (default: eventual)."),
        click.option("--retry-deadline", type=float,
                     help="Seconds a key may stay unanswered before the read fails."),
        click.option("--max-rcu-per-s",
                     help="Read budget for the table: RCU per second (e.g. 2000) or N% of "
                     "its read capacity (e.g. 50%); see docs/production.md."),
        click.option("--read-mode", type=click.Choice(["batch-get", "scan", "auto"]),
                     help="Batch-get (per key), scan (one parallel Scan joined to the keys) "
                     "or auto (the cheaper; default, dynamodb.read_mode); see "
                     "docs/read-modes.md."),
    ])


def request_options(output_required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """What to read: shared by pull (in-process) and submit (through the workers)."""
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        return _apply(settings_options(func), [
            click.option("--table",
                         help="Feature view name (feast layout) or table name (plain layout); "
                         "not with view:feature references."),
            click.option("--features",
                         help="Comma-separated feature names, in output order; or Feast "
                         "references view:feature,... (with --feature-store-yaml)."),
            click.option("--feature-service",
                         help="Read the features of this Feast feature service (with "
                         "--feature-store-yaml); see docs/feast-registry.md."),
            click.option("--full-feature-names", is_flag=True,
                         help="With references: name features view__feature, as Feast does."),
            click.option("--respect-ttl", is_flag=True,
                         help="With references: null a view's features older than its TTL."),
            click.option("--entities", "entities_path", required=True,
                         help="Entity file: .csv, .parquet or .jsonl (a path or s3:// URI)."),
            click.option("--output", "output_path", required=output_required,
                         help="Output file: .csv, .parquet or .jsonl (a path or s3:// URI); "
                         "ending in / a Parquet dataset (part files, _manifest.json, "
                         "_SUCCESS): see docs/large-jobs.md."),
            click.option("--layout", type=click.Choice(["feast", "plain"]), default="feast",
                         show_default=True,
                         help="Table layout: feast (written by Feast's DynamoDB online "
                         "store) or plain (key and feature attributes as they are)."),
            click.option("--join-keys", help="Feast join keys (default: every entity column)."),
            click.option("--join-key-types",
                         help="NAME=TYPE,... with TYPE int64, int32, string or bytes "
                         "(default: from the entity file's column types)."),
            click.option("--event-ts-attribute", default="event_ts", show_default=True,
                         help="Plain layout: the attribute holding the event time ('' for none)."),
            click.option("--scorer",
                         help="Apply this scorer, registered in [[scorers]] of the settings "
                         "(FEATUREPULL_SCORERS): the output is the keys and its scores."),
            click.option("--with-features", is_flag=True,
                         help="With --scorer: keep event_timestamp and the features beside "
                         "the scores."),
            click.option("--allow-missing-features", is_flag=True,
                         help="Read a requested feature that no found item holds as null, "
                         "instead of refusing it as a likely typo."),
            click.option("--overwrite", is_flag=True, help="Replace the output if it exists."),
            click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        ])
    return decorate


def _scorer_flags(opts: dict[str, Any]) -> dict[str, Any]:
    from featurepull.tasks.scoring import check_with_features

    check_with_features(opts["scorer"], opts["with_features"], ("--with-features", "--scorer NAME"))
    return {"scorer": opts["scorer"] or None, "with_features": opts["with_features"]}


def _registry_flags(opts: dict[str, Any]) -> dict[str, Any]:
    return {"feature_store_yaml": opts["feature_store_yaml"],
            "feature_service": opts["feature_service"],
            "full_feature_names": opts["full_feature_names"], "respect_ttl": opts["respect_ttl"]}


def _notify_flags(opts: dict[str, Any]) -> dict[str, str] | None:
    if opts["notify_queue"] and not opts["notify_task"]:
        raise click.UsageError("--notify-queue is where --notify-task goes; add --notify-task "
                               "NAME")
    if not opts["notify_task"]:
        return None
    notify = {"task": opts["notify_task"]}
    return notify | ({"queue": opts["notify_queue"]} if opts["notify_queue"] else {})


@contextmanager
def _exit_codes() -> Iterator[None]:
    """Exit 2 on an InputError, 1 on a RunFailed (a class under both: its first branch),
    with the message and no traceback; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (InputError, RunFailed) as exc:
        kind = "error" if exc.is_input else "failed"
        click.echo(f"featurepull: {kind}: {exc}", err=True)
        sys.exit(exc.exit_code)


# What pyarrow imports when it is installed but a pull without a scorer never uses: numpy
# and cloudpickle at `import pyarrow` (~300 M instructions, 0.1 s), pandas at its first list
# conversion (~1,100 M) — only to recognise their objects among values, which a pull never
# hands it. pyarrow runs without them (a configuration it supports).
_NOT_FOR_A_PULL = ("pandas", "numpy", "cloudpickle")


class _Blocked:
    """A sys.meta_path finder under which importing these packages fails as if they were not
    installed (see :func:`_lean_pull`)."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in self.packages:
            raise ModuleNotFoundError(f"No module named {name!r} (featurepull pull runs "
                                      "pyarrow without it)", name=name)


@contextmanager
def _lean_pull() -> Iterator[None]:
    """Run a pull, imports included, without what it does not need: pyarrow without numpy,
    cloudpickle and pandas (_NOT_FOR_A_PULL, unless something already imported one), and no
    cyclic garbage collection (a pull makes no garbage cycles worth the collector's passes
    over every module and row: 0.1-0.2 s of CPU at 100,000 rows; the read pauses it anyway),
    and a DynamoDB client built without botocore where botocore's would be the same
    (credentials in the environment, an explicit endpoint: featurepull.dynamo._env_client).

    Only a pull without a scorer, or a submit (its scorer runs in the workers), in the
    console script's own process (``_own_process``): a scorer is user code, which may use
    pandas and numpy, and the finder is process-wide.
    """
    blocked = tuple(name for name in _NOT_FOR_A_PULL if name not in sys.modules)
    finder = _Blocked(blocked)
    sys.meta_path.insert(0, finder)
    collecting = gc.isenabled()
    gc.disable()
    from featurepull.dynamo.client import env_clients  # the finder first: it imports pyarrow

    env_clients(True)
    try:
        yield
    finally:
        env_clients(False)
        sys.meta_path.remove(finder)
        if collecting:
            # Out of the collector's sight first: else its next pass would walk every object
            # the pull made (its rows, 60 ms at 100,000) just before the process ends, or
            # while a submit waits for its job.
            gc.freeze()
            gc.enable()


def run() -> None:
    """The ``featurepull`` command (console script and ``python -m featurepull``).

    A ``pull`` or ``submit`` that succeeded ends without the interpreter's teardown: its
    output is written and closed (a submit's messages are in Redis), so freeing every module
    and the read's objects one by one (0.3-1 s after a 100,000-entity pull, a fifth of the
    process) buys nothing. Streams and logging are flushed first. Every other command, and
    any failure, exits the ordinary way.
    """
    global _own_process
    _own_process = True
    _huge_pages.turn_off()
    try:
        main()
    except SystemExit as exc:
        if exc.code in (0, None) and sys.argv[1:2] in (["pull"], ["submit"]):
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="featurepull")
def main() -> None:
    """Pull the latest features of many entities from DynamoDB, in input order."""


@main.command("pull")
@request_options(output_required=True)
def pull_command(**opts: Any) -> None:
    """Read features in this process (no broker) and write them in input order."""
    with _lean_pull() if _own_process and not opts["scorer"] else nullcontext():
        _pull(opts)


def _pull(opts: dict[str, Any]) -> None:
    from featurepull.pull import PullRequest, _pull_keeping

    with _exit_codes():
        settings = _settings_from(opts)
        request = PullRequest(
            table=opts["table"] or "",
            features=_split(opts["features"]),
            **_registry_flags(opts),
            layout=opts["layout"],
            join_keys=_split(opts["join_keys"]),
            join_key_types=_key_types(opts["join_key_types"]),
            event_ts_attribute=opts["event_ts_attribute"] or None,
            allow_missing_features=opts["allow_missing_features"],
            **_scorer_flags(opts),
        )
        bar: Any = None
        if sys.stderr.isatty():  # else tqdm draws nothing, and loading it costs ~0.2 s
            from tqdm import tqdm

            bar = tqdm(total=0, unit="keys", file=sys.stderr, dynamic_ncols=True)

        def on_keys(total: int) -> None:
            bar.total = total
            bar.refresh()

        def advance(answered: int) -> None:
            bar.update(answered)

        try:
            # `bar is not None`, not `bar`: a tqdm of total 0 is falsy (it never advanced).
            outcome = _pull_keeping(
                request, opts["entities_path"], opts["output_path"], settings,
                overwrite=opts["overwrite"], keep=_kept_until_exit if _own_process else None,
                progress=advance if bar is not None else None,
                # Counting unique keys costs a pass over them: only for a bar.
                on_keys=on_keys if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        _print_warnings(outcome.warnings)
        if opts["as_json"]:
            summary = {"output": outcome.output, "rows_written": outcome.rows_written,
                       **outcome.stats.to_dict(),
                       "read_plans": [plan.to_dict() for plan in outcome.read_plans]}
            if outcome.warnings:
                summary["warnings"] = outcome.warnings
            click.echo(json.dumps(summary))
        else:
            click.echo(f"featurepull: wrote {outcome.rows_written} rows to {outcome.output}")
            click.echo(outcome.stats.summary_line())
            for plan in outcome.read_plans:
                click.echo(f"featurepull: {plan.table}: {plan.reason}")


@main.command("submit")
@request_options(output_required=False)
@click.option("--shard-size", type=int, help="Entities per shard task (default 50,000).")
@click.option("--wait", is_flag=True, help="Wait for the job, with a progress bar.")
@click.option("--notify-task",
              help="When the job ends, send this task of your Celery app (by name) its summary.")
@click.option("--notify-queue",
              help="The queue --notify-task goes to (default: celery, Celery's default).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="With --wait: give up after this many seconds, cancel the job, exit 1.")
def submit_command(**opts: Any) -> None:
    """Submit a job to the worker fleet; prints its id (or waits for it with --wait)."""
    if opts["timeout"] is not None and not opts["wait"]:
        raise click.UsageError("--timeout limits --wait; add --wait")
    with _exit_codes():
        # Submitted as lean as a pull reads (a scorer it names runs in the workers); the
        # wait after it, however long, with the garbage collector on.
        with _lean_pull() if _own_process else nullcontext():
            from featurepull.client import JobFailed, submit

            settings = _settings_from(opts)
            choices = _read_choices(opts)
            job = submit(
                opts["table"] or "", _split(opts["features"]), opts["entities_path"],
                opts["output_path"], settings=settings, layout=opts["layout"],
                join_keys=_split(opts["join_keys"]),
                join_key_types=_key_types(opts["join_key_types"]),
                event_ts_attribute=opts["event_ts_attribute"] or None,
                overwrite=opts["overwrite"], project=choices["project"],
                dynamodb=choices["dynamodb"],
                allow_missing_features=opts["allow_missing_features"], **_scorer_flags(opts),
                notify=_notify_flags(opts), **_registry_flags(opts),
            )
        status = job.status()
        if not opts["wait"]:
            click.echo(json.dumps({"job_id": job.id, "shards": status.shards,
                                   "rows": status.rows}) if opts["as_json"] else job.id)
            return
        click.echo(f"featurepull: job {job.id}: {status.rows:,} entities in "
                   f"{status.shards} shards", err=True)
        if status.read_reason:
            click.echo(f"featurepull: {status.read_reason}", err=True)
        try:
            final = job.wait(timeout=opts["timeout"], progress=sys.stderr.isatty(),
                             on_no_worker=lambda text: click.echo(f"featurepull: {text}",
                                                                  err=True))
        except TimeoutError as exc:
            cancelled = job.cancel()
            raise JobFailed(f"{exc}; " + ("cancelled it (shards not started are skipped)"
                                          if cancelled else "it had ended meanwhile")) from None
        _print_summary(final.summary or {}, opts["as_json"])


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        click.echo(f"featurepull: warning: {warning}", err=True)


def _shard_plan_line(cut: dict[str, int]) -> str:
    processes = cut["fleet_processes"]
    why = (f"{processes} pool processes on the queue, at least 4 shards each"
           if processes else "no worker had recorded its pool on the queue")
    return (f"shards of {cut['shard_size']:,} entities ({why}; jobs.shard_size "
            f"{cut['shard_unit']:,})")


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    _print_warnings(summary.get("warnings", []))
    if as_json:
        click.echo(json.dumps(summary))
        return
    read = summary.get("read", {})
    where = summary.get("output") or "Redis (featurepull fetch JOB --output FILE)"
    click.echo(f"featurepull: job {summary.get('job_id')} succeeded: {summary.get('rows'):,} "
               f"rows in {summary.get('shards')} shards to {where} in {summary.get('seconds')}s "
               f"({summary.get('rows_per_s', 0):,.0f} rows/s from submit to output)")
    click.echo(" ".join(f"{k}={v}" for k, v in read.items()))
    for slow in summary.get("slowest_shards", []):
        click.echo(f"  slow shard {slow['shard']}: {slow['seconds']}s, {slow['rows']:,} rows, "
                   f"{slow['retries']} retries, {slow['throttles']} throttles")


def _job(opts: dict[str, Any], job_id: str) -> Any:
    from featurepull.client import Job

    return Job(job_id, _settings_from(opts))


@main.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@config_options
def status_command(job_id: str, as_json: bool, **opts: Any) -> None:
    """Show a job's state, shards done, and its summary when finished."""
    with _exit_codes():
        job = _job(opts, job_id)
        status = job.status()
        capacity = job.capacity() if status.shards_done or status.scan_tasks_done else {}
        cut = job.shard_plan()
        if as_json:
            click.echo(json.dumps({**status.__dict__, "capacity": capacity,
                                   **({"shard_plan": cut} if cut else {})}))
            return
        click.echo(status.line())
        if len(status.tables) > 1:
            click.echo(f"{len(status.tables)} tables: {', '.join(status.tables)}")
        if status.read_reason:
            click.echo(status.read_reason)
        if cut:
            click.echo(_shard_plan_line(cut))
        if status.summary:
            _print_summary(status.summary, False)
        elif capacity:
            click.echo("shards done so far: " + " ".join(f"{k}={v}" for k, v in capacity.items()))


@main.command("fetch")
@click.argument("job_id")
@click.option("--output", "output_path", required=True,
              help=".csv, .parquet or .jsonl file, or DIR/ (a Parquet dataset).")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@config_options
def fetch_command(job_id: str, output_path: str, overwrite: bool, **opts: Any) -> None:
    """Write a finished job's rows (kept in Redis) to a file, in input order."""
    with _exit_codes():
        written = _job(opts, job_id).save(output_path, overwrite=overwrite)
        click.echo(f"featurepull: wrote {written:,} rows to {output_path}")


@main.command("cancel")
@click.argument("job_id")
@config_options
def cancel_command(job_id: str, **opts: Any) -> None:
    """Cancel a queued or running job."""
    with _exit_codes():
        cancelled = _job(opts, job_id).cancel()
        click.echo(f"featurepull: job {job_id} " + ("cancelled" if cancelled else
                                                    "had already ended; nothing to cancel"))


@main.command("cleanup")
@click.argument("job_id")
@config_options
def cleanup_command(job_id: str, **opts: Any) -> None:
    """Delete a job's keys from Redis now instead of waiting for their TTL."""
    with _exit_codes():
        removed = _job(opts, job_id).delete()
        click.echo(f"featurepull: removed {removed} keys of job {job_id}")


@main.command("worker", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve Prometheus /metrics on this port (FEATUREPULL_METRICS_PORT).")
@click.pass_context
def worker_command(ctx: click.Context, config: str | None, metrics_port: int | None) -> None:
    """Run a Celery worker for featurepull's queue; other options go to Celery
    (e.g. --concurrency 4, --loglevel INFO, --hostname w1@%h)."""
    if config:
        os.environ[CONFIG_ENV] = str(Path(config).resolve())
    from featurepull.tasks.celery_tasks import configured_settings
    from featurepull.worker.app import worker_app

    app = worker_app()
    if metrics_port is not None:  # over the environment and the config file, as flags are
        configured_settings().metrics_port = metrics_port
    queue = app.conf.task_default_queue
    argv = ["worker", "--pool", "prefork", "-Q", queue, *ctx.args]
    app.worker_main(argv=argv)


# Flower's tasks page shows no arguments by default; ours are short summaries, and a reading
# shard's progress is in its result column, so both are worth a column.
FLOWER_DEFAULTS = {
    # Flower without --basic-auth/--auth lets anyone who reaches it revoke tasks.
    "address": "127.0.0.1",
    "tasks_columns": "name,state,args,result,received,runtime,worker,uuid",
}


def _flower_defaults(args: list[str]) -> list[str]:
    """FLOWER_DEFAULTS not already set by a --name=value option or a FLOWER_NAME variable."""
    given = {arg[2:].split("=", 1)[0].replace("-", "_") for arg in args if arg.startswith("--")}
    return [f"--{name}={value}" for name, value in FLOWER_DEFAULTS.items()
            if name not in given and f"FLOWER_{name.upper()}" not in os.environ]


@main.command("flower", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.pass_context
def flower_command(ctx: click.Context, config: str | None) -> None:
    """Run Flower on featurepull's Celery app (celery -A featurepull.worker flower); other
    options go to Flower as --name=value (e.g. --port=5555, --basic-auth=user:pass).
    Listens on 127.0.0.1 unless --address is given; shows args and result columns."""
    if config:
        os.environ[CONFIG_ENV] = str(Path(config).resolve())
    from featurepull.worker.app import worker_app

    worker_app().start(argv=["flower", *_flower_defaults(ctx.args), *ctx.args])


@main.command("beat", context_settings={"ignore_unknown_options": True,
                                        "allow_extra_args": True})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--schedule", "schedule_file", type=click.Path(dir_okay=False),
              help="Where beat keeps each schedule's last run time (default: "
              "celerybeat-schedule in the working directory).")
@click.pass_context
def beat_command(ctx: click.Context, config: str | None, schedule_file: str | None) -> None:
    """Run Celery beat, starting the config file's [[schedules]] as jobs; other options go
    to Celery (e.g. --loglevel INFO, --max-interval 60). Run exactly one beat per Redis."""
    if config:
        os.environ[CONFIG_ENV] = str(Path(config).resolve())
    with _exit_codes():
        from featurepull.worker.app import worker_app

        app = worker_app()
        if not app.conf.beat_schedule:
            raise click.UsageError("no schedules configured: add [[schedules]] to the config "
                                   f"file (--config or ${CONFIG_ENV})")
    argv = ["beat", *(["--schedule", schedule_file] if schedule_file else []), *ctx.args]
    app.start(argv=argv)


@main.command("demo")
@click.option("--drivers", default=100_000, show_default=True,
              type=click.IntRange(1, 5_000_000), help="Drivers in the seeded feature view.")
@click.option("--out-dir", default="demo-output", show_default=True, type=click.Path(),
              help="Where entities.parquet, features.parquet and worker.log go.")
@click.option("--keep-running", is_flag=True,
              help="Leave the services up after the job, to submit more (Ctrl-C stops them).")
def demo_command(drivers: int, out_dir: str, keep_running: bool) -> None:
    """The whole thing on this machine: Redis, a local DynamoDB, 2 workers, one job."""
    import time

    from featurepull import demo

    demo.interrupt_on_sigterm()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def say(message: str) -> None:
        click.echo(f"featurepull demo: {message}", err=True)

    try:
        with _exit_codes(), demo.demo_services(drivers, out, say) as services:
            say(f"submitting a job of {drivers:,} entity rows (85% known drivers, 10% unknown "
                f"ids, 5% repeats, shuffled), scored by {demo.SCORER} in the workers")
            job = demo.run_job(services, out, drivers)
            _print_summary(job.status().summary or {}, False)
            click.echo(demo.preview(str(out / "features.parquet")))
            say(f"done in {time.monotonic() - started:.1f}s; watch a run like this in Flower "
                "with --keep-running and `celery -A featurepull.worker flower`")
            if keep_running:
                click.echo(demo.explore_hint(services, out))
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        say("interrupted; stopped the worker, the DynamoDB endpoint and redis-server — "
            "nothing is left running")
        sys.exit(130)
    say("stopped the worker, the DynamoDB endpoint and redis-server — nothing is left running")
