"""Scoring in the worker: registered scorers run on each shard's rows in real prefork workers
and give exactly what the same function gives on `featurepull pull`'s rows; every way a
scorer can go wrong fails the job (or the worker's start, or the submit) with a clear message."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import JobFailed, submit
from featurepull.local import RedisService, ServiceError
from featurepull.tasks import JobRequest
from featurepull.tasks.scoring import (
    LoadedScorer,
    ScorerError,
    UnknownScorer,
    apply_scorer,
)
from tests.tasks import scorers_for_tests
from tests.tasks.conftest import DRIVERS, Fleet, fleet

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

ENTITIES = 12_000
SHARD_SIZE = 1_000
TEST_SCORERS = ("linear", "trips_bucket", "boom", "one_short", "scalar", "records", "clash")
REGISTRY = [{"name": name, "path": f"tests.tasks.scorers_for_tests:{name}"}
            for name in TEST_SCORERS]


def write_entities(path: Path, count: int, seed: int = 5) -> Path:
    """Known drivers, 10% unknown ids and some repeats, shuffled."""
    rng = random.Random(seed)
    ids = rng.sample(range(DRIVERS), int(count * 0.85))
    ids += [DRIVERS + i for i in range(count // 10)]
    ids += rng.choices(ids, k=count - len(ids))
    rng.shuffle(ids)
    pq.write_table(pa.table({"driver_id": pa.array(ids, pa.int64())}), path)
    return path


@pytest.fixture(scope="module")
def entities_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_entities(tmp_path_factory.mktemp("entities") / "drivers.parquet", ENTITIES)


@pytest.fixture(scope="module")
def small_entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_entities(tmp_path_factory.mktemp("entities") / "few.parquet", 2_000)


def pull_command(entities: Path, output: Path, endpoint: EndpointProcess,
                 *extra: str) -> list[str]:
    return [sys.executable, "-m", "featurepull", "pull", "--project", "demo", "--table",
            "driver_stats", "--features", ",".join(FEATURES), "--entities", str(entities),
            "--output", str(output), "--endpoint-url", endpoint.url, "--region", "us-east-1",
            *extra]


@pytest.fixture(scope="module")
def reference(entities_file: Path, fast_dynamo: EndpointProcess,
              tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """What `featurepull pull` (in-process, no scorer) writes for the same entities."""
    out = tmp_path_factory.mktemp("reference") / "pull.parquet"
    subprocess.run(pull_command(entities_file, out, fast_dynamo), check=True,
                   capture_output=True, timeout=300)
    return pq.read_table(out)


def scored_offline(rows: pa.Table, function: Callable[[pa.Table], Any]) -> pa.Table:
    """The scorer applied by hand to pulled rows, with `_found` as the interface defines it
    (feast layout: an entity has an item exactly when it has an event_timestamp)."""
    found = pc.is_valid(rows.column("event_timestamp"))
    result = function(rows.append_column("_found", found))
    return result if isinstance(result, pa.Table) else pa.table(result)


@pytest.fixture(scope="module")
def workers(redis_server: RedisService, fast_dynamo: EndpointProcess) -> Iterator[Fleet]:
    """One worker instance with 2 prefork processes and the test scorers registered."""
    with fleet(redis_server, fast_dynamo.url, shard_size=SHARD_SIZE) as running:
        running.env["FEATUREPULL_SCORERS"] = json.dumps(REGISTRY)
        running.start_worker(concurrency=2)
        yield running


def test_scores_through_two_worker_processes_equal_the_function_on_pulled_rows(
        workers: Fleet, entities_file: Path, reference: pa.Table, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    job = submit("driver_stats", list(FEATURES), str(entities_file), str(out),
                 settings=workers.settings(), scorer="linear")
    status = job.wait(timeout=240, progress=False)
    assert status.shards == ENTITIES // SHARD_SIZE
    scores = pq.read_table(out)
    assert scores.column_names == ["driver_id", "score", "seen"]
    assert scores.column("driver_id").equals(reference.column("driver_id"))
    expected = scored_offline(reference, scorers_for_tests.linear)
    assert scores.column("score").to_pylist() == expected.column("score").to_pylist()
    assert scores.column("seen").to_pylist() == expected.column("seen").to_pylist()
    unknown = reference.column("event_timestamp").null_count
    assert scores.column("score").null_count == unknown > 0
    # Both prefork children scored shards (one shard_done log line per shard).
    done = [line for line in map(json_line, workers.log_text().splitlines())
            if line.get("event") == "shard_done" and line.get("job_id") == job.id]
    assert len(done) == status.shards and {line["scorer"] for line in done} == {"linear"}
    assert len({line["process"] for line in done}) == 2


def json_line(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def test_with_features_keeps_the_pulled_rows_beside_the_scores(
        workers: Fleet, entities_file: Path, reference: pa.Table, tmp_path: Path) -> None:
    # No output: the scored rows stay in Redis, and Job.save unifies the shards' schemas.
    job = submit("driver_stats", list(FEATURES), str(entities_file), None,
                 settings=workers.settings(), scorer="trips_bucket", with_features=True)
    job.wait(timeout=240, progress=False)
    saved = tmp_path / "saved.parquet"
    assert job.save(str(saved)) == ENTITIES
    table = pq.read_table(saved)
    assert table.column_names == [*reference.column_names, "trips_bucket"]
    assert table.select(reference.column_names).equals(reference)
    expected = scored_offline(reference, scorers_for_tests.trips_bucket)
    assert table.column("trips_bucket").to_pylist() == expected.column("trips_bucket").to_pylist()


def test_in_process_pull_with_scorer_gives_the_same_scores(
        fast_dynamo: EndpointProcess, entities_file: Path, reference: pa.Table,
        tmp_path: Path) -> None:
    # The in-process path loads the registry from the same settings: here a TOML file.
    config = tmp_path / "scorers.toml"
    config.write_text("".join(f'[[scorers]]\nname = "{entry["name"]}"\npath = "{entry["path"]}"\n'
                              for entry in REGISTRY))
    out = tmp_path / "pulled.parquet"
    proc = subprocess.run(pull_command(entities_file, out, fast_dynamo, "--config",
                                       str(config), "--scorer", "linear"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    scores = pq.read_table(out)
    expected = scored_offline(reference, scorers_for_tests.linear)
    assert scores.column_names == ["driver_id", "score", "seen"]
    assert scores.column("driver_id").equals(reference.column("driver_id"))
    assert scores.column("score").to_pylist() == expected.column("score").to_pylist()

    failing = subprocess.run(pull_command(entities_file, tmp_path / "never.parquet",
                                          fast_dynamo, "--config", str(config),
                                          "--scorer", "boom"),
                             capture_output=True, text=True, timeout=300)
    assert failing.returncode == 1
    assert "scorer 'boom' raised ZeroDivisionError: division by zero" in failing.stderr
    assert not (tmp_path / "never.parquet").exists()


def test_a_raising_scorer_fails_the_job_with_its_name_shard_and_exception(
        workers: Fleet, small_entities: Path, tmp_path: Path) -> None:
    out = tmp_path / "never.parquet"
    job = submit("driver_stats", list(FEATURES), str(small_entities), str(out),
                 settings=workers.settings(), scorer="boom")
    with pytest.raises(JobFailed, match=r"failed: shard \d+: scorer 'boom' raised "
                                        r"ZeroDivisionError: division by zero \(at "
                                        r"scorers_for_tests.py:\d+"):
        job.wait(timeout=120, progress=False)
    assert not out.exists()


@pytest.mark.parametrize(("scorer", "message"), [
    ("one_short", r"scorer 'one_short' returned 999 values in column 'score' for 1,000 input "
                  r"rows; a scorer returns exactly one value per input row"),
    ("scalar", r"scorer 'scalar' returned a float \(0.5\); a scorer returns a pyarrow.Table, "
               r"or a dict of column name → array or list"),
    ("records", r"scorer 'records' returned a list of 1000 items \(dict first\); a scorer "
                r"returns a pyarrow.Table"),
    ("clash", r"scorer 'clash' returned a column 'driver_id', which its input already has"),
])
def test_a_scorer_result_that_is_not_one_score_per_row_fails_the_job(
        workers: Fleet, small_entities: Path, scorer: str, message: str) -> None:
    job = submit("driver_stats", list(FEATURES), str(small_entities), None,
                 settings=workers.settings(), scorer=scorer)
    with pytest.raises(JobFailed, match=r"failed: shard \d+: " + message):
        job.wait(timeout=120, progress=False)


def test_an_unknown_scorer_is_refused_at_submit_and_nothing_is_enqueued(
        workers: Fleet, small_entities: Path) -> None:
    client = workers.redis()

    def job_ids() -> set[bytes]:
        # By job id, and no new one: an earlier test's ended job may still have keys
        # written or removed by its last tasks after its wait returned.
        return {key.split(b":")[2] for key in client.scan_iter("featurepull:job:*")}

    before = job_ids()
    with pytest.raises(UnknownScorer, match="scorer 'nope' is not registered "
                                            r"\(registered scorers: linear, trips_bucket, boom"):
        submit("driver_stats", list(FEATURES), str(small_entities), None,
               settings=workers.settings(), scorer="nope")
    assert job_ids() <= before
    assert client.llen(workers.queue) == 0


@pytest.mark.parametrize(("path", "reason"), [
    ("tests.tasks.no_such_module:score",
     "cannot be imported: ModuleNotFoundError: No module named 'tests.tasks.no_such_module'"),
    ("tests.tasks.scorers_for_tests:no_such_function",
     "module 'tests.tasks.scorers_for_tests' has no attribute 'no_such_function'"),
])
def test_a_scorer_that_cannot_be_imported_stops_the_worker_at_start(
        redis_server: RedisService, fast_dynamo: EndpointProcess, path: str,
        reason: str) -> None:
    with fleet(redis_server, fast_dynamo.url) as broken:
        broken.env["FEATUREPULL_SCORERS"] = json.dumps([{"name": "broken", "path": path}])
        # featurepull.local.start_worker reports the exit, with a non-zero code.
        with pytest.raises(ServiceError, match=r"worker \S+ exited with code [1-9-]"):
            broken.start_worker(concurrency=1)
        log = broken.log_text()
        assert f"featurepull worker: cannot start: scorer 'broken' (path '{path}')" in log
        assert reason in log


# The contract without services: what a job may carry, and what apply_scorer accepts.

def test_a_job_can_name_a_scorer_but_never_carry_an_import_path() -> None:
    base = {"table": "t", "features": ["f"], "entities": "e.parquet"}
    with pytest.raises(ValidationError, match="scorer"):
        JobRequest(**base, scorer="os:system")
    with pytest.raises(ValidationError, match="with_features keeps the features beside"):
        JobRequest(**base, with_features=True)
    assert JobRequest(**base, scorer="driver_risk").scorer == "driver_risk"


def rows_of(ids: list[int], found: list[bool]) -> pa.Table:
    return pa.table({"driver_id": ids, "event_timestamp": pa.array([None] * len(ids),
                                                                   pa.timestamp("us")),
                     "conv_rate": [0.1 * i if f else None for i, f in zip(ids, found,
                                                                          strict=True)]})


def scorer(function: Callable[[pa.Table], Any]) -> LoadedScorer:
    return LoadedScorer("test", "tests:test", function)


def test_apply_scorer_keeps_input_order_and_accepts_arrays_and_lists() -> None:
    rows = rows_of([3, 1, 2], [True, False, True])
    seen: list[pa.Table] = []

    def two_columns(table: pa.Table) -> dict[str, Any]:
        seen.append(table)
        return {"double": pc.multiply(table.column("conv_rate"), 2.0),
                "label": ["a", None, "c"]}

    scored = apply_scorer(rows, [True, False, True], scorer(two_columns), ["driver_id"])
    assert seen[0].column_names == ["driver_id", "event_timestamp", "conv_rate", "_found"]
    assert seen[0].column("_found").to_pylist() == [True, False, True]
    assert scored.to_pylist() == [{"driver_id": 3, "double": pytest.approx(0.6), "label": "a"},
                                  {"driver_id": 1, "double": None, "label": None},
                                  {"driver_id": 2, "double": pytest.approx(0.4), "label": "c"}]
    kept = apply_scorer(rows, [True, False, True], scorer(two_columns), ["driver_id"],
                        with_features=True)
    assert kept.column_names == ["driver_id", "event_timestamp", "conv_rate", "double", "label"]


@pytest.mark.parametrize(("result", "message"), [
    (pa.table([[1, 2], [3, 4]], names=["s", "s"]), "returned the column 's' twice"),
    ({}, "returned no columns"),
    ({"_found": [1, 2]}, "returned a column '_found', which its input already has"),
    ({"s": "ab"}, r"returned a str \('ab'\) as column 's'"),
    ({"s": [1, "x"]}, "column 's' cannot be an Arrow array"),
    (None, "returned None"),
])
def test_apply_scorer_refuses_results_that_are_not_new_score_columns(
        result: Any, message: str) -> None:
    with pytest.raises(ScorerError, match=message):
        apply_scorer(rows_of([1, 2], [True, True]), [True, True], scorer(lambda _: result),
                     ["driver_id"])
