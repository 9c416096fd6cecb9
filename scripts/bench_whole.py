#!/usr/bin/env python
"""Whole-process cells for ``scripts/bench.py --whole-process``: what a user waits for, from
the command's start to its exit, imports and all, on the same requests as Feast.

    .venv/bin/python scripts/bench.py --whole-process --sizes 1000000 --found-share 0.1 \\
        --threads 32 --latencies 10 --json-out bench-output/whole.json

One lean endpoint per latency (``featurepull.bench.endpoint``) serves ``size * found_share``
drivers; each size's CSV entity file holds all of them and unknown ids for the rest,
shuffled, no repeats. Cells, each in a process of its own:

    feast_online_read   Feast's own ``DynamoDBOnlineStore.online_read`` (``feast[aws]``,
                        skipped when not importable) with its default 10 read threads; the
                        read alone is timed (entity keys built before), as Feast users call it
    pull                ``featurepull pull`` CSV in, Parquet out (``--whole-formats``), T
                        in flight: the whole command; its JSON summary gives the read's
                        own seconds
    submit_wait         ``featurepull submit --wait`` to one ready Celery worker of 2 prefork
                        processes on a private redis-server: the whole command, CPU summed
                        over the command, the worker's processes and redis-server

CPU is user+sys from the kernel (the child's rusage; /proc for the worker's processes), and
``cpu_us_per_row`` divides it by the input rows. The endpoint's own CPU in each cell is
``endpoint_cpu_s``, not in ``cpu_s``: it shares this machine's cores, a real DynamoDB would
not. ``submit_wait`` also gives ``cpu_by_process_s`` (worker main, pool, redis-server).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES, start_endpoint

PROJECT, VIEW = DEFAULT_TABLE.split(".")
REGION = "us-east-1"
RESULT_PREFIX = "WHOLE-RESULT "
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION}
FEAST_THREADS = 10  # DynamoDBOnlineStoreConfig.max_read_workers' default


def write_entities(path: Path, size: int, known: int, seed: int) -> None:
    """``known`` drivers of the endpoint and ``size - known`` unknown ids, shuffled."""
    rng = random.Random(seed)
    ids = rng.sample(range(known), known) + [known + i for i in range(size - known)]
    rng.shuffle(ids)
    path.write_text("driver_id\n" + "\n".join(map(str, ids)) + "\n")


def feast_importable() -> bool:
    try:
        import feast.infra.online_stores.dynamodb  # noqa: F401
    except ImportError:
        return False
    return True


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("FEATUREPULL_", "AWS_"))}
    env.update(AWS_ENV)
    env.update(extra or {})
    return env


def _run_timed(cmd: list[str], env: dict[str, str], timeout_s: float) -> tuple[float, str]:
    """Wall seconds and stdout of one command (its CPU: `_children_cpu` before and after)."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{cmd[2:4]} exited {process.returncode}: {err.decode()[-2000:]}")
    return wall, out.decode()


def _children_cpu() -> float:
    # Reaped children only: the command just run (the endpoint, redis-server and workers
    # are still running, and are read from /proc instead).
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _common_flags(endpoint_url: str, entities: Path, output: Path, threads: int) -> list[str]:
    # batch-get: the requests Feast's online_read makes (`auto` would scan the endpoint's
    # table at 10% found, which is another comparison: scripts/bench_scan.py).
    return ["--table", VIEW, "--project", PROJECT, "--features", ",".join(FEATURES),
            "--entities", str(entities), "--output", str(output), "--endpoint-url",
            endpoint_url, "--region", REGION, "--max-read-workers", str(threads),
            "--read-mode", "batch-get", "--overwrite"]


def pull_cell(endpoint_url: str, entities: Path, workdir: Path, threads: int,
              timeout_s: float, output_format: str = "parquet") -> dict[str, Any]:
    output = workdir / f"pull.{output_format}"
    cmd = [sys.executable, "-m", "featurepull", "pull",
           *_common_flags(endpoint_url, entities, output, threads), "--json"]
    before = _children_cpu()
    wall, out = _run_timed(cmd, _env(), timeout_s)
    cpu = _children_cpu() - before
    summary = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "read_s": summary["seconds"], "rows": summary["rows_written"], "output": output.name,
            "found": summary["found"], "read_mode": summary["read_mode"]}


def submit_cell(endpoint_url: str, entities: Path, workdir: Path, threads: int,
                timeout_s: float, processes: int = 2, output_format: str = "parquet",
                extra_env: dict[str, str] | None = None, log_format: str = "console",
                logged: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """``extra_env`` (e.g. PYTHONPATH: another tree's featurepull) goes to the worker and the
    command; the worker's log stays in ``workdir/worker.log`` (``log_format``: json for
    scripts/bench_fleet_timeline.py), ``spawned_at`` is the command's start (epoch s). With
    ``logged``, the worker stops only once ``logged(log text)`` holds (at most 10 s): the job's
    end wakes the command before the pool process has logged its task's return, and a stop
    by then would lose that line."""
    from bench_methods import celery_worker, cpu_seconds

    from featurepull.local import start_redis

    redis_service = start_redis()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    output = workdir / f"submit.{output_format}"
    env = _env({"FEATUREPULL_REDIS_URL": redis_service.url, "FEATUREPULL_PROJECT": PROJECT,
                "FEATUREPULL_JOBS__QUEUE": queue, "FEATUREPULL_LOG_FORMAT": log_format,
                "FEATUREPULL_DYNAMODB__ENDPOINT_URL": endpoint_url,
                "FEATUREPULL_DYNAMODB__REGION": REGION,
                "FEATUREPULL_DYNAMODB__MAX_READ_WORKERS": str(threads), **(extra_env or {})})
    try:
        with celery_worker(env, queue, processes, workdir / "worker.log") as worker:
            children = worker.pool_pids()
            watched = {"worker_main": [worker.pid], "pool": children,
                       "redis": [redis_service.process.pid]}
            before = ({role: sum(map(cpu_seconds, pids)) for role, pids in watched.items()},
                      _children_cpu())
            cmd = [sys.executable, "-m", "featurepull", "submit",
                   *_common_flags(endpoint_url, entities, output, threads), "--wait"]
            spawned_at = time.time()
            wall, _ = _run_timed(cmd, env, timeout_s)
            by_process = {role: round(sum(map(cpu_seconds, pids)) - before[0][role], 3)
                          for role, pids in watched.items()}
            fleet_cpu = sum(by_process.values())
            submit_cpu = _children_cpu() - before[1]
            if sorted(worker.pool_pids()) != sorted(children):
                raise RuntimeError("a prefork child was replaced mid-job; its CPU is lost")
            deadline = time.monotonic() + 10.0
            while logged and not logged((workdir / "worker.log").read_text()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker never logged what the caller waits for:\n"
                                       f"{worker.log_tail()}")
                time.sleep(0.05)
    finally:
        redis_service.stop()
    rows = event_times(output)
    return {"wall_s": round(wall, 3), "cpu_s": round(fleet_cpu + submit_cpu, 3),
            "submitter_cpu_s": round(submit_cpu, 3), "cpu_by_process_s": by_process,
            "rows": len(rows), "output": output.name,
            "found": len(rows) - rows.null_count, "processes": processes,
            "spawned_at": spawned_at, "pool_pids": children}


def event_times(output: Path) -> Any:
    """The output's event_timestamp column (null where an entity has no item)."""
    if output.suffix == ".csv":
        import pyarrow.csv as pa_csv

        options = pa_csv.ConvertOptions(include_columns=["event_timestamp"])
        return pa_csv.read_csv(output, convert_options=options).column(0)
    if output.suffix == ".jsonl":
        import pyarrow.json as pa_json

        return pa_json.read_json(output).column("event_timestamp")
    return pq.read_table(output, columns=["event_timestamp"]).column(0)


def feast_cell(endpoint_url: str, entities: Path, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "feast", endpoint_url, str(entities)]
    started = time.perf_counter()
    out = subprocess.run(cmd, env=_env(), capture_output=True, check=True,
                         timeout=timeout_s).stdout.decode()
    whole = time.perf_counter() - started
    line = next(line for line in out.splitlines() if line.startswith(RESULT_PREFIX))
    result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
    result["process_wall_s"] = round(whole, 3)
    return result


def feast_online_read(endpoint_url: str, entities: str) -> dict[str, Any]:
    """Feast's own online_read over every entity, in this process (a fresh one)."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.infra.online_stores.dynamodb import DynamoDBOnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.repo_config import RepoConfig
    from feast.types import Float32, Float64, Int64, String, UnixTimestamp

    ids = [int(line) for line in Path(entities).read_text().split()[1:]]
    with tempfile.TemporaryDirectory() as folder:
        config = RepoConfig(
            project=PROJECT, provider="local", registry=str(Path(folder) / "registry.db"),
            entity_key_serialization_version=3,
            online_store={"type": "dynamodb", "region": REGION, "endpoint_url": endpoint_url,
                          "max_read_workers": FEAST_THREADS})
        driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        view = FeatureView(
            name=VIEW, entities=[driver], ttl=None,
            source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
            schema=[Field(name="driver_id", dtype=Int64),
                    Field(name="conv_rate", dtype=Float32),
                    Field(name="acc_rate", dtype=Float64),
                    Field(name="avg_daily_trips", dtype=Int64),
                    Field(name="city", dtype=String),
                    Field(name="last_trip_at", dtype=UnixTimestamp)])
        keys = [EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=i)])
                for i in ids]
        store = DynamoDBOnlineStore()  # type: ignore[no-untyped-call]
        cpu, started = time.process_time(), time.perf_counter()
        rows = store.online_read(config, view, keys, list(FEATURES))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rows": len(rows),
            "found": sum(row[0] is not None for row in rows), "threads": FEAST_THREADS}


METHODS = ("pull", "submit_wait", "feast_online_read")


def run(sizes: Sequence[int], found_share: float, threads: int, latencies: Sequence[float],
        timeout_s: float, log: Any = print, only: Sequence[str] = METHODS,
        formats: tuple[str, str] = ("csv", "parquet")) -> list[dict[str, Any]]:
    """The cells of the methods in ``only`` at every size and latency, one after another
    (Feast's only when it is importable); ``formats``: the entity file's and the output's
    (Feast reads the CSV file's ids either way)."""
    from bench_methods import cpu_seconds

    cells: list[dict[str, Any]] = []
    methods = [m for m in only if m != "feast_online_read" or feast_importable()]
    with tempfile.TemporaryDirectory(prefix="featurepull-bench-whole-") as folder:
        work = Path(folder)
        for latency in latencies:
            known = max(1, int(max(sizes) * found_share))
            with start_endpoint(drivers=known, latency_ms=latency) as endpoint:
                for size in sizes:
                    entities = work / f"entities-{size}.csv"
                    write_entities(entities, size, int(size * found_share), seed=size)
                    given = entities
                    if formats[0] == "parquet":
                        given = entities.with_suffix(".parquet")
                        import pyarrow.csv as pa_csv

                        pq.write_table(pa_csv.read_csv(entities), given)
                    for method in methods:
                        log(f"whole-process: {method} size={size:,} latency={latency}ms")
                        endpoint_cpu = cpu_seconds(endpoint.process.pid)
                        cell = {"method": method, "size": size, "latency_ms": latency,
                                "found_share": found_share, "threads": threads,
                                "entities": (entities if method == "feast_online_read"
                                             else given).name,
                                **_measure(method, endpoint.url,
                                           entities if method == "feast_online_read"
                                           else given, work, threads, timeout_s, formats[1])}
                        # Not in cpu_s: a real DynamoDB would not share this machine.
                        cell["endpoint_cpu_s"] = round(
                            cpu_seconds(endpoint.process.pid) - endpoint_cpu, 3)
                        cell["cpu_us_per_row"] = round(cell["cpu_s"] / size * 1e6, 2)
                        cell["load_average"] = [round(v, 2) for v in os.getloadavg()]
                        cells.append(cell)
                        log(f"  {json.dumps(cell)}")
    return cells


def _measure(method: str, endpoint_url: str, entities: Path, work: Path, threads: int,
             timeout_s: float, output_format: str) -> dict[str, Any]:
    if method == "pull":
        return pull_cell(endpoint_url, entities, work, threads, timeout_s, output_format)
    if method == "submit_wait":
        return submit_cell(endpoint_url, entities, work, threads, timeout_s,
                           output_format=output_format)
    return feast_cell(endpoint_url, entities, timeout_s)


def _feast_of(cells: Sequence[dict[str, Any]], cell: dict[str, Any]) -> dict[str, Any] | None:
    """Feast's cell on the same requests as ``cell`` (size, latency, share found)."""
    return next((c for c in cells if c["method"] == "feast_online_read"
                 and all(c[k] == cell[k] for k in ("size", "latency_ms", "found_share"))),
                None)


def format_cells(cells: Sequence[dict[str, Any]]) -> str:
    """The table, and each featurepull cell against Feast's read of the same requests."""
    lines = [f"{'method':18} {'size':>10} {'ms':>4} {'found':>5} {'wall s':>8} {'read s':>7} "
             f"{'cpu s':>7} {'µs/row':>7} {'endpoint cpu s':>14} {'vs feast':>9}"]
    for cell in cells:
        feast = _feast_of(cells, cell)
        ratio = f"{feast['wall_s'] / cell['wall_s']:.1f}x" if feast else "-"
        read = f"{cell['read_s']:.2f}" if "read_s" in cell else "-"
        lines.append(f"{cell['method']:18} {cell['size']:>10,} {cell['latency_ms']:>4g} "
                     f"{cell['found_share']:>5g} {cell['wall_s']:>8.2f} {read:>7} "
                     f"{cell['cpu_s']:>7.2f} {cell['cpu_us_per_row']:>7.2f} "
                     f"{cell.get('endpoint_cpu_s', 0.0):>14.2f} {ratio:>9}")
    return "\n".join(lines)


def targets(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets where the cells allow: pull's whole process at most 1.3x its read;
    submit --wait at least 10x Feast's online_read; pull at most 3 µs CPU per input row."""
    found: list[dict[str, Any]] = []
    for cell in cells:
        where = {"size": cell["size"], "latency_ms": cell["latency_ms"],
                 "found_share": cell["found_share"]}
        if cell["method"] == "pull":
            found.append({**where, "target": "pull whole / read", "limit": 1.3, "at_most": True,
                          "value": round(cell["wall_s"] / cell["read_s"], 2)})
            found.append({**where, "target": "pull CPU µs per row", "limit": 3.0,
                          "at_most": True, "value": cell["cpu_us_per_row"]})
        feast = _feast_of(cells, cell)
        if cell["method"] == "submit_wait" and feast is not None:
            found.append({**where, "target": "feast online_read / submit --wait", "limit": 10.0,
                          "at_most": False,
                          "value": round(feast["wall_s"] / cell["wall_s"], 2)})
    for target in found:
        value, limit = target["value"], target["limit"]
        target["met"] = value <= limit if target["at_most"] else value >= limit
    return found


def format_targets(cells: Sequence[dict[str, Any]]) -> str:
    return "\n".join(
        f"{t['target']} at {t['size']:,} / {t['latency_ms']:g} ms / {t['found_share']:g} found "
        f"= {t['value']:g} "
        f"(target {'<=' if t['at_most'] else '>='} {t['limit']:g}): "
        f"{'met' if t['met'] else 'NOT met'}" for t in targets(cells)) or "no targets"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "feast":
        print(RESULT_PREFIX + json.dumps(feast_online_read(sys.argv[2], sys.argv[3])),
              flush=True)
        sys.exit(0)
    print(__doc__, file=sys.stderr)
    sys.exit(2)
