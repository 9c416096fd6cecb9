"""The job commands in this process (click's runner) on the real redis-server and a real HTTP
endpoint: `submit` stores every flag in the job's request, `status`, `cancel`, `cleanup` and
`fetch` print what the job is, and the DynamoDB flags and config files of `pull` reach the
wire. A job's shards run here with run_shard/finish_job (no worker), so the mutation runs
(scripts/mutation.sh) see every line; the same commands through workers are in
test_cli_submit.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.csv as pcsv
import pytest
from click.testing import CliRunner, Result

from featurepull.bench.endpoint import EndpointProcess
from featurepull.cli import main
from featurepull.config import load_settings
from featurepull.local import RedisService
from featurepull.tasks import JobStore
from featurepull.tasks.finish import finish_job
from featurepull.tasks.fleet import record_pool
from featurepull.tasks.shards import run_shard
from featurepull.tasks.store import connect

IDS = [5, 1, 1_500, 5, 0]
JOB_IDS = [*range(245), *IDS]  # 3 shards of 100 (the least shard size): 100, 100, 50
DB = 15  # the worker fleets of the tests use 1-14; nothing consumes this db's queue
# How a job of these 250 entities reads, and why (planned at submit: docs/fleet.md); batch-get
# even were each row a distinct key, so planned before the keys are counted: 250 keys' cost.
PLAN = ("read_mode=batch-get: ~125 RCU vs ~22 RCU for scan (the table holds ~1,000 items, "
        "under dynamodb.scan_min_items=100,000)")


@pytest.fixture(scope="module")
def endpoint(cli_endpoint: EndpointProcess) -> EndpointProcess:
    return cli_endpoint


@pytest.fixture
def redis_url(redis_server: RedisService) -> Iterator[str]:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    yield url
    connect(url).flushdb()


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def entities(tmp_path: Path, ids: list[int]) -> Path:
    path = tmp_path / "ids.csv"
    path.write_text("driver_id\n" + "\n".join(map(str, ids)) + "\n")
    return path


def read_args(endpoint: EndpointProcess, tmp_path: Path, ids: list[int] = JOB_IDS) -> list[str]:
    return ["--project", "cli", "--table", "drivers", "--features", "conv_rate,city",
            "--entities", str(entities(tmp_path, ids)), "--endpoint-url", endpoint.url,
            "--region", "us-east-1"]


def store_of(url: str) -> JobStore:
    return JobStore(connect(url), 3600)


def run_here(url: str, job_id: str, endpoint: EndpointProcess) -> None:
    """What the workers would do with the job: every shard, then the finisher."""
    settings = load_settings(overrides={"redis_url": url})
    store = JobStore(connect(url), settings.jobs.ttl_s)
    for shard in range(store.meta(job_id).shards):
        run_shard(job_id, shard, settings, store)
    assert finish_job(job_id, settings, store) is not None


# --- submit -----------------------------------------------------------------------------------

def test_submit_stores_every_flag_in_the_job(endpoint: EndpointProcess, tmp_path: Path,
                                             redis_url: str) -> None:
    out = tmp_path / "out.parquet"
    result = invoke("submit", *read_args(endpoint, tmp_path), "--redis-url", redis_url,
                    "--output", str(out), "--shard-size", "100", "--join-keys", "driver_id",
                    "--join-key-types", "driver_id=int64", "--overwrite",
                    "--allow-missing-features", "--consistent-reads", "--batch-size", "7",
                    "--max-read-workers", "3", "--retry-deadline", "9.5",
                    "--max-rcu-per-s", "50", "--table-name-template", "{project}.{table_name}",
                    "--notify-task", "app.done", "--notify-queue", "events",
                    "--read-mode", "batch-get")
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    meta = store_of(redis_url).meta(job_id)
    assert (meta.state, meta.shards, meta.rows) == ("queued", 3, 250)
    request = meta.request.request  # the JobRequest the workers get
    assert {name: request[name] for name in (
        "table", "features", "entities", "output", "overwrite", "layout", "join_keys",
        "join_key_types", "event_ts_attribute", "project", "scorer", "with_features",
        "allow_missing_features", "notify")} == {
        "table": "drivers", "features": ["conv_rate", "city"],
        "entities": str(tmp_path / "ids.csv"), "output": str(out), "overwrite": True,
        "layout": "feast", "join_keys": ["driver_id"], "join_key_types": {"driver_id": "int64"},
        "event_ts_attribute": "event_ts", "project": "cli", "scorer": None,
        "with_features": False, "allow_missing_features": True,
        "notify": {"task": "app.done", "queue": "events"}}
    assert request["dynamodb"] == {
        "region": "us-east-1", "endpoint_url": endpoint.url,
        "table_name_template": "{project}.{table_name}", "max_read_workers": 3,
        "batch_size": 7, "consistent_reads": True, "retry_deadline_s": 9.5,
        "max_rcu_per_s": "50", "read_mode": "batch-get"}


def test_submit_defaults_and_json(endpoint: EndpointProcess, tmp_path: Path,
                                  redis_url: str) -> None:
    result = invoke("submit", *read_args(endpoint, tmp_path), "--redis-url", redis_url,
                    "--json", "--event-ts-attribute", "")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"job_id", "shards", "rows"}
    assert (printed["shards"], printed["rows"]) == (1, 250)  # shards of 50,000
    request = store_of(redis_url).meta(printed["job_id"]).request.request
    assert (request["output"], request["overwrite"], request["layout"], request["join_keys"],
            request["join_key_types"], request["event_ts_attribute"], request["notify"],
            request["allow_missing_features"]) == (None, False, "feast", [], {}, None, None,
                                                   False)
    assert request["dynamodb"] == {"region": "us-east-1", "endpoint_url": endpoint.url}


def test_submit_sends_the_yaml_then_the_config_then_the_flags(
        endpoint: EndpointProcess, tmp_path: Path, redis_url: str) -> None:
    # The job's project and DynamoDB choices: --feature-store-yaml < --config < flags.
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text("project: cli\nprovider: aws\nonline_store:\n  type: dynamodb\n"
                    "  region: us-east-1\n  batch_size: 2\n  consistent_reads: true\n")
    config = tmp_path / "featurepull.toml"
    config.write_text("[dynamodb]\nbatch_size = 5\nmax_read_workers = 3\n")
    args = read_args(endpoint, tmp_path)[2:]  # no --project: the yaml's
    result = invoke("submit", *args, "--redis-url", redis_url, "--feature-store-yaml",
                    str(yaml), "--config", str(config), "--max-read-workers", "4")
    assert result.exit_code == 0, result.output
    request = store_of(redis_url).meta(result.stdout.strip()).request.request
    assert request["project"] == "cli"
    assert request["dynamodb"] == {"region": "us-east-1", "endpoint_url": endpoint.url,
                                   "batch_size": 5, "consistent_reads": True,
                                   "max_read_workers": 4}


@pytest.mark.parametrize(("extra", "message"), [
    (["--timeout", "5"], "--timeout limits --wait; add --wait"),
    (["--notify-queue", "q"], "--notify-queue is where --notify-task goes; add --notify-task "
                              "NAME"),
    (["--with-features"], "--with-features keeps the features beside a scorer's scores; "
                          "add --scorer NAME"),
    (["--join-key-types", "driver_id"], "'driver_id' is not NAME=TYPE (e.g. driver_id=int64)"),
    (["--batch-size", "101"], "featurepull: error: "),
])
def test_submit_refuses_bad_input_before_storing_a_job(
        endpoint: EndpointProcess, tmp_path: Path, redis_url: str, extra: list[str],
        message: str) -> None:
    result = invoke("submit", *read_args(endpoint, tmp_path), "--redis-url", redis_url, *extra)
    assert result.exit_code == 2
    assert message in result.stderr
    assert connect(redis_url).dbsize() == 0


def test_submit_wait_with_no_worker_times_out_and_cancels(
        endpoint: EndpointProcess, tmp_path: Path, redis_url: str) -> None:
    result = invoke("submit", *read_args(endpoint, tmp_path), "--redis-url", redis_url,
                    "--shard-size", "100", "--wait", "--timeout", "0.5")
    assert result.exit_code == 1
    job_id = re.match(r"featurepull: job ([0-9a-f]{32}): 250 entities in 3 shards\n",
                      result.stderr)
    assert job_id, result.stderr
    assert result.stderr.rstrip().endswith("; cancelled it (shards not started are skipped)")
    assert "featurepull: failed: " in result.stderr
    assert store_of(redis_url).meta(job_id.group(1)).state == "cancelled"


# --- status, cancel, cleanup, fetch -----------------------------------------------------------

def submitted(endpoint: EndpointProcess, tmp_path: Path, redis_url: str, *extra: str) -> str:
    result = invoke("submit", *read_args(endpoint, tmp_path), "--redis-url", redis_url,
                    "--shard-size", "100", *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_status_cancel_and_cleanup_of_a_queued_job(endpoint: EndpointProcess, tmp_path: Path,
                                                   redis_url: str) -> None:
    job_id = submitted(endpoint, tmp_path, redis_url)
    status = invoke("status", job_id, "--redis-url", redis_url)
    assert (status.exit_code, status.stdout) == (
        0, f"job {job_id}: queued, 0/3 shards, 0/250 rows read\n{PLAN}\n")
    as_json = json.loads(invoke("status", job_id, "--json", "--redis-url", redis_url).stdout)
    assert as_json == {"job_id": job_id, "state": "queued", "shards": 3, "shards_done": 0,
                       "rows": 250, "rows_done": 0, "error": None, "summary": None,
                       "error_kind": None, "read_mode": "batch-get", "read_reason": PLAN,
                       "scan_tasks": 0, "scan_tasks_done": 0, "items_scanned": 0,
                       "table_items": 0, "tables": ["cli.drivers"],
                       "capacity": {}}
    cancel = invoke("cancel", job_id, "--redis-url", redis_url)
    assert (cancel.exit_code, cancel.stdout) == (0, f"featurepull: job {job_id} cancelled\n")
    again = invoke("cancel", job_id, "--redis-url", redis_url)
    assert (again.exit_code, again.stdout) == (
        0, f"featurepull: job {job_id} had already ended; nothing to cancel\n")
    assert invoke("status", job_id, "--redis-url", redis_url).stdout == (
        f"job {job_id}: cancelled, 0/3 shards, 0/250 rows read — cancelled by request\n"
        f"{PLAN}\n")
    cleanup = invoke("cleanup", job_id, "--redis-url", redis_url)
    assert (cleanup.exit_code, cleanup.stdout) == (
        0, f"featurepull: removed 6 keys of job {job_id}\n")  # meta, alive, 3 shards' keys, wake
    gone = invoke("status", job_id, "--redis-url", redis_url)
    assert gone.exit_code == 2
    assert gone.stderr == f"featurepull: error: {store_error(job_id)}\n"


def store_error(job_id: str) -> str:
    return (f"no job {job_id!r} in Redis: check the id, and that it has not expired "
            "(jobs.ttl_s) or been cleaned up")


def test_status_and_fetch_of_a_finished_job(endpoint: EndpointProcess, tmp_path: Path,
                                            redis_url: str) -> None:
    job_id = submitted(endpoint, tmp_path, redis_url)
    run_here(redis_url, job_id, endpoint)
    status = invoke("status", job_id, "--redis-url", redis_url)
    assert status.exit_code == 0, status.output
    lines = status.stdout.splitlines()
    as_json = json.loads(invoke("status", job_id, "--json", "--redis-url", redis_url).stdout)
    summary = as_json["summary"]
    # Keys read count entity rows, as the total does: 1 and 5 twice in the last shard.
    assert lines[0] == f"job {job_id}: succeeded, 3/3 shards, 250/250 rows read"
    assert lines.pop(1) == PLAN
    assert lines[1] == (
        f"featurepull: job {job_id} succeeded: 250 rows in 3 shards to Redis (featurepull "
        f"fetch JOB --output FILE) in {summary['seconds']}s ({summary['rows_per_s']:,.0f} "
        "rows/s from submit to output)")
    assert summary["rows_per_s"] > 0
    assert lines[2].startswith("keys=250 unique_keys=249 found=249 missing=1 requests=3 ")
    slowest = summary["slowest_shards"]
    assert len(lines) == 3 + len(slowest) and slowest
    assert lines[3:] == [f"  slow shard {s['shard']}: {s['seconds']}s, {s['rows']:,} rows, "
                         f"{s['retries']} retries, {s['throttles']} throttles" for s in slowest]
    assert (as_json["state"], as_json["shards_done"], as_json["rows_done"]) == (
        "succeeded", 3, 250)
    assert as_json["summary"]["rows"] == 250
    assert isinstance(as_json["capacity"], dict) and as_json["capacity"]
    out = tmp_path / "fetched.csv"
    fetch = invoke("fetch", job_id, "--output", str(out), "--redis-url", redis_url)
    assert (fetch.exit_code, fetch.stdout) == (0, f"featurepull: wrote 250 rows to {out}\n")
    assert pcsv.read_csv(out).column("driver_id").to_pylist() == JOB_IDS
    refused = invoke("fetch", job_id, "--output", str(out), "--redis-url", redis_url)
    assert refused.exit_code == 2 and not refused.stdout
    overwrite = invoke("fetch", job_id, "--output", str(out), "--overwrite",
                       "--redis-url", redis_url)
    assert overwrite.exit_code == 0, overwrite.output


def test_status_of_a_job_that_found_nothing_warns_on_stderr(
        endpoint: EndpointProcess, tmp_path: Path, redis_url: str) -> None:
    result = invoke("submit", *read_args(endpoint, tmp_path, [5_000, 5_001]), "--redis-url",
                    redis_url)
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    run_here(redis_url, job_id, endpoint)
    status = invoke("status", job_id, "--redis-url", redis_url)
    assert status.exit_code == 0
    assert status.stderr == (
        "featurepull: warning: 0 of 2 entities were found in table cli.drivers; their keys "
        "were built from the join keys driver_id (int64). If the feature view's entities "
        "have other join keys or types, name them with --join-keys and --join-key-types "
        "(without --join-keys every column of the entity file is a join key; a CSV column "
        "is int64 only when every value is a plain integer)\n")
    assert status.stdout.startswith(f"job {job_id}: succeeded, 1/1 shards, 2/2 rows read\n")


def test_submit_with_a_scorer_and_a_notify_task_on_the_default_queue(
        endpoint: EndpointProcess, tmp_path: Path, redis_url: str) -> None:
    scorers = json.dumps([{"name": "linear", "path": "tests.tasks.scorers_for_tests:linear"}])
    result = invoke("submit", *read_args(endpoint, tmp_path), "--redis-url", redis_url,
                    "--scorer", "linear", "--with-features", "--notify-task", "app.done",
                    env={"FEATUREPULL_SCORERS": scorers})
    assert result.exit_code == 0, result.output
    request = store_of(redis_url).meta(result.stdout.strip()).request.request
    assert (request["scorer"], request["with_features"], request["notify"]) == (
        "linear", True, {"task": "app.done", "queue": "celery"})


def test_status_of_a_running_job_shows_the_shards_done(endpoint: EndpointProcess,
                                                       tmp_path: Path, redis_url: str) -> None:
    job_id = submitted(endpoint, tmp_path, redis_url)
    settings = load_settings(overrides={"redis_url": redis_url})
    store = JobStore(connect(redis_url), settings.jobs.ttl_s)
    run_shard(job_id, 0, settings, store)
    status = invoke("status", job_id, "--redis-url", redis_url)
    lines = status.stdout.splitlines()
    assert lines[0] == f"job {job_id}: running, 1/3 shards, 100/250 rows read"
    assert lines[1] == PLAN
    assert lines[2].startswith("shards done so far: ")
    assert len(lines) == 3


# --- pull: DynamoDB flags and settings files on the wire ----------------------------------------

def pulled(endpoint: EndpointProcess, tmp_path: Path, *extra: str,
           env: dict[str, str] | None = None) -> dict[str, Any]:
    """The --json summary of a pull and what the endpoint saw."""
    endpoint.reset_stats()
    out = tmp_path / "out.parquet"
    result = invoke("pull", *read_args(endpoint, tmp_path, IDS), "--output", str(out),
                    "--overwrite", "--json", *extra, env=env)
    assert result.exit_code == 0, result.output
    return {"summary": json.loads(result.stdout), "wire": endpoint.stats()}


def test_pull_flags_reach_the_wire(endpoint: EndpointProcess, tmp_path: Path) -> None:
    plain = pulled(endpoint, tmp_path)
    assert (plain["wire"]["batch_get_item"], plain["wire"]["consistent_reads"]) == (1, 0)
    assert plain["summary"]["consumed_rcu"] == 2.0  # 4 unique keys, eventually consistent
    flagged = pulled(endpoint, tmp_path, "--batch-size", "1", "--consistent-reads",
                     "--max-read-workers", "1")
    assert (flagged["wire"]["batch_get_item"], flagged["wire"]["consistent_reads"],
            flagged["wire"]["max_in_flight"]) == (4, 4, 1)
    assert flagged["summary"]["requests"] == 4
    eventual = pulled(endpoint, tmp_path, "--batch-size", "2", "--eventual-reads")
    assert (eventual["wire"]["batch_get_item"], eventual["wire"]["consistent_reads"]) == (2, 0)


def test_pull_reads_a_config_file_and_flags_win(endpoint: EndpointProcess,
                                                tmp_path: Path) -> None:
    config = tmp_path / "featurepull.toml"
    config.write_text("[dynamodb]\nbatch_size = 1\nconsistent_reads = true\n")
    by_flag = pulled(endpoint, tmp_path, "--config", str(config))
    assert (by_flag["wire"]["batch_get_item"], by_flag["wire"]["consistent_reads"]) == (4, 4)
    by_env = pulled(endpoint, tmp_path, env={"FEATUREPULL_CONFIG": str(config)})
    assert by_env["wire"]["batch_get_item"] == 4
    over = pulled(endpoint, tmp_path, "--config", str(config), "--batch-size", "3")
    assert (over["wire"]["batch_get_item"], over["wire"]["consistent_reads"]) == (2, 2)


def test_pull_takes_the_project_from_a_feature_store_yaml(endpoint: EndpointProcess,
                                                          tmp_path: Path) -> None:
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text("project: cli\nprovider: aws\nonline_store:\n  type: dynamodb\n"
                    "  region: us-east-1\n  batch_size: 2\n  consistent_reads: true\n")
    args = read_args(endpoint, tmp_path, IDS)[2:]  # no --project: the yaml's
    endpoint.reset_stats()
    result = invoke("pull", *args, "--feature-store-yaml", str(yaml), "--output",
                    str(tmp_path / "o.parquet"))
    assert result.exit_code == 0, result.output
    assert (endpoint.stats()["batch_get_item"], endpoint.stats()["consistent_reads"]) == (2, 2)


def test_pull_read_mode_reaches_the_wire(endpoint: EndpointProcess, tmp_path: Path) -> None:
    # A table this small is never scanned by choice (docs/read-modes.md): only when asked.
    scanned = pulled(endpoint, tmp_path, "--read-mode", "scan")
    assert scanned["summary"]["read_mode"] == "scan"
    assert (scanned["wire"]["batch_get_item"], scanned["wire"]["scanned_items"]) == (0, 1_000)


@pytest.mark.parametrize(("version", "found"), [(3, 4), (2, 0)])
def test_pull_hashes_keys_as_the_feature_store_yaml_says(
        endpoint: EndpointProcess, tmp_path: Path, version: int, found: int) -> None:
    # The endpoint's items are keyed by version 3 hashes: version 2 keys find none of them.
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text(f"project: cli\nprovider: aws\nentity_key_serialization_version: "
                    f"{version}\nonline_store:\n  type: dynamodb\n  region: us-east-1\n")
    summary = pulled(endpoint, tmp_path, "--feature-store-yaml", str(yaml))["summary"]
    assert summary["found"] == found


def test_job_commands_take_redis_from_the_config_file(
        endpoint: EndpointProcess, tmp_path: Path, redis_url: str) -> None:
    job_id = submitted(endpoint, tmp_path, redis_url)
    config = tmp_path / "featurepull.toml"
    config.write_text(f'redis_url = "{redis_url}"\n')
    status = invoke("status", job_id, "--config", str(config))
    assert status.exit_code == 0, status.output
    assert status.stdout.startswith(f"job {job_id}: queued, 0/3 shards")


def test_pull_table_name_template(endpoint: EndpointProcess, tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    result = invoke("pull", *read_args(endpoint, tmp_path, IDS), "--output", str(out),
                    "--table-name-template", "x_{table_name}")
    assert result.exit_code == 2
    assert result.stderr.startswith("featurepull: error: table x_drivers (region us-east-1")
    assert not out.exists()


def test_pull_with_a_budget_and_a_deadline(endpoint: EndpointProcess, tmp_path: Path) -> None:
    result = pulled(endpoint, tmp_path, "--max-rcu-per-s", "1000", "--retry-deadline", "30")
    assert result["summary"]["budget_rcu_per_s"] == 1000.0
    text = invoke("pull", *read_args(endpoint, tmp_path, IDS), "--output",
                  str(tmp_path / "o.csv"), "--max-rcu-per-s", "lots")
    assert text.exit_code == 2
    assert "lots" in text.stderr


def test_status_of_a_finished_job_names_its_output(endpoint: EndpointProcess, tmp_path: Path,
                                                   redis_url: str) -> None:
    out = tmp_path / "out.parquet"
    job_id = submitted(endpoint, tmp_path, redis_url, "--output", str(out))
    run_here(redis_url, job_id, endpoint)
    line = invoke("status", job_id, "--redis-url", redis_url).stdout.splitlines()[2]
    assert line.startswith(f"featurepull: job {job_id} succeeded: 250 rows in 3 shards to "
                           f"{out} in ")
    assert out.is_file()


def test_flower_defaults_by_option_and_by_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from featurepull.cli import _flower_defaults

    monkeypatch.delenv("FLOWER_ADDRESS", raising=False)
    monkeypatch.delenv("FLOWER_TASKS_COLUMNS", raising=False)
    assert _flower_defaults(["--tasks-columns=x"]) == ["--address=127.0.0.1"]
    assert _flower_defaults(["--address=a=b"]) == [
        "--tasks_columns=name,state,args,result,received,runtime,worker,uuid"]
    monkeypatch.setenv("FLOWER_ADDRESS", "10.0.0.1")
    assert _flower_defaults([]) == [
        "--tasks_columns=name,state,args,result,received,runtime,worker,uuid"]


def test_status_shows_how_a_job_was_cut_for_its_fleet(endpoint: EndpointProcess,
                                                      tmp_path: Path, redis_url: str) -> None:
    env = {"FEATUREPULL_JOBS__MAX_SHARD_SIZE": "200", "FEATUREPULL_JOBS__QUEUE": "cli-fleet"}
    args = [*read_args(endpoint, tmp_path, list(range(1_000))), "--redis-url", redis_url,
            "--shard-size", "100"]
    shown = []
    for name in ("none", "one"):  # no worker recorded yet, then one of 1 process
        if name == "one":
            record_pool(connect(redis_url), "w@test", ["cli-fleet"], 1)
        submitted = invoke("submit", *args, "--output", str(tmp_path / f"{name}.parquet"),
                           env=env)
        assert submitted.exit_code == 0, submitted.output
        job_id = submitted.stdout.strip()
        status = invoke("status", job_id, "--redis-url", redis_url)
        assert status.exit_code == 0, status.output
        shown.append(status.stdout.splitlines()[-1])
        as_json = json.loads(invoke("status", job_id, "--json", "--redis-url", redis_url).stdout)
        assert (as_json["shards"], as_json["shard_plan"]) == (
            (10, {"shard_size": 100, "shard_unit": 100, "fleet_processes": 0})
            if name == "none" else
            (5, {"shard_size": 200, "shard_unit": 100, "fleet_processes": 1}))
    assert shown == [
        "shards of 100 entities (no worker had recorded its pool on the queue; "
        "jobs.shard_size 100)",
        "shards of 200 entities (1 pool processes on the queue, at least 4 shards each; "
        "jobs.shard_size 100)"]
