"""Faults injected end to end: jobs submitted through the client to real prefork Celery
workers whose DynamoDB endpoint is tests/faultproxy.py in front of the bench endpoint.

Every scenario ends with the job complete and its output equal, row by row, to the
fault-free read of the same entities — or failed with a reason that names the cause and no
output file. The proxy's counters prove each fault really happened, and the job's read
stats must count exactly what the proxy did. A pool process SIGKILLed while it writes a
job's output must leave neither a stuck job nor a stray temporary file. With FAULT_FIGURES_JSON=path set, each run
appends its figures (faults injected, rows checked, lost, wrong) to that file;
scripts/fault_figures.py runs this file that way and writes docs/faults.md.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess
from featurepull.client import Job, JobFailed
from featurepull.io import open_sink
from featurepull.local import RedisService
from featurepull.pull import PullRequest, pull
from tests.faultproxy import FaultPlan, FaultProxy
from tests.hardening._util import freeze_finisher_mid_write, run_job, write_entities
from tests.tasks.conftest import DRIVERS, Fleet, fast_dynamo, fleet  # noqa: F401

pytestmark = pytest.mark.slow  # starts worker fleets or runs for many seconds

# Not FEATUREPULL_*: tests/conftest.py clears those so settings cannot leak into tests.
FIGURES_ENV = "FAULT_FIGURES_JSON"
SEED_ENV = "FAULT_FIGURES_SEED"
DOC = Path(__file__).resolve().parents[2] / "docs" / "faults.md"
ENTITIES = 20_000
SHARD_SIZE = 2_000
BACKOFF_CAP_S = 0.2  # the workers' retry_max_delay_s (tests/tasks/conftest.py's Fleet)
JOB_TIMEOUT_S = 180.0  # a deadline for a loaded machine, not a figure: jobs take seconds
KILL_SCENARIO = "worker killed while finishing a job (SIGKILL mid-write)"


@dataclass(frozen=True)
class Scenario:
    """One kind of trouble: the proxy's plan, the job's retry deadline, and the counters
    that must be above zero afterwards (or the test proved nothing)."""

    name: str
    plan: Callable[[int], FaultPlan]
    faults: tuple[str, ...]
    deadline_s: float = 60.0
    fails_with: str | None = None  # a regex the failure must match; None: must succeed

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.split("(")[0].lower()).strip("-")


SCENARIOS = [
    Scenario("latency spikes (5% of requests held 1 s)",
             lambda seed: FaultPlan(latency_s=0.002, spike_rate=0.05, spike_s=1.0, seed=seed,
                                    first_hits=1),
             ("spikes",)),
    Scenario("throttling storm longer than the backoff cap, shorter than the deadline",
             lambda seed: FaultPlan(storm_s=3.0, storm_after=60, seed=seed),
             ("storm_throttled",), deadline_s=20.0),
    Scenario("throttling storm longer than the retry deadline",
             lambda seed: FaultPlan(storm_s=6.0, storm_after=60, seed=seed),
             ("storm_throttled",), deadline_s=1.5,
             fails_with=r"failed: shard \d+: \d+ of \d+ keys of table demo\.driver_stats .* "
                        r"still unanswered after retrying .*retry_deadline_s=1\.5\).* "
                        r"DynamoDB kept throttling"),
    Scenario("UnprocessedKeys at a high rate (50% of keys, shuffled answers)",
             lambda seed: FaultPlan(unprocessed_rate=0.5, shuffle=True, seed=seed,
                                    first_hits=1),
             ("unprocessed_keys", "shuffled")),
    Scenario("HTTP 500s (20% of requests)",
             lambda seed: FaultPlan(error_rate=0.2, seed=seed, first_hits=1), ("errors_500",)),
    Scenario("connections reset mid-response (RST, 15% of responses)",
             lambda seed: FaultPlan(drop_rate=0.15, drop_reset=True, seed=seed,
                                    first_hits=1), ("dropped",)),
    Scenario("connections cut mid-response (FIN, 15% of responses)",
             lambda seed: FaultPlan(drop_rate=0.15, seed=seed, first_hits=1), ("dropped",)),
    Scenario("everything at once",
             lambda seed: FaultPlan(unprocessed_rate=0.3, throttle_rate=0.1, error_rate=0.05,
                                    drop_rate=0.05, drop_reset=True, shuffle=True,
                                    latency_s=0.002, spike_rate=0.02, spike_s=0.5,
                                    storm_s=1.0, storm_after=100, seed=seed,
                                    first_hits=1),
             ("unprocessed_keys", "shuffled", "throttled", "storm_throttled", "errors_500",
              "dropped", "spikes")),
]


@dataclass
class RowCheck:
    """The output against the fault-free read. Lost: a row the truth has an item for that
    the output lacks (absent, or null); wrong: any other difference."""

    checked: int = 0
    lost: int = 0
    wrong: int = 0
    examples: list[str] = field(default_factory=list)


def check_rows(output: pa.Table, truth: pa.Table) -> RowCheck:
    got, want = output.to_pylist(), truth.to_pylist()
    check = RowCheck(checked=len(want), lost=max(0, len(want) - len(got)),
                     wrong=max(0, len(got) - len(want)))
    for n, (row, expected) in enumerate(zip(got, want, strict=False)):
        if row == expected:
            continue
        same_key = row.get("driver_id") == expected["driver_id"]
        if same_key and row.get("event_timestamp") is None:
            check.lost += 1
        else:
            check.wrong += 1
        if len(check.examples) < 3:
            check.examples.append(f"row {n}: {row} != {expected}")
    return check


def record(scenario: str, outcome: str, faults: dict[str, int], check: RowCheck,
           reason: str | None = None) -> None:
    """Append one run's figures to $FAULT_FIGURES_JSON (one JSON object a line), if set."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    names = [s.name for s in SCENARIOS] + [KILL_SCENARIO]
    line = {"scenario": scenario, "order": names.index(scenario), "outcome": outcome,
            "reason": reason, "faults": {k: v for k, v in faults.items() if v},
            "rows_checked": check.checked, "rows_lost": check.lost, "rows_wrong": check.wrong,
            "entities": ENTITIES, "shard_size": SHARD_SIZE, "backoff_cap_s": BACKOFF_CAP_S}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def fault_counts(scenario: Scenario, counts: dict[str, int]) -> dict[str, int]:
    """The proxy's counters that are faults (not traffic), named for the figures."""
    names = {"spikes": "latency spikes", "throttled": "throttled requests",
             "storm_throttled": "of them in the storm", "errors_500": "HTTP 500s",
             "dropped": "responses cut (RST)" if scenario.plan(0).drop_reset
             else "responses cut (FIN)",
             "unprocessed_keys": "keys left unprocessed", "shuffled": "shuffled responses"}
    return {label: counts[name] for name, label in names.items()}


def entity_ids(count: int, seed: int) -> list[int]:
    """Known drivers, 10% unknown ids (past the table and negative), 5% repeats, shuffled."""
    rng = random.Random(seed)
    known = rng.sample(range(DRIVERS), int(count * 0.85))
    unknown = [DRIVERS + i for i in range(count // 20)] + [-1 - i for i in range(count // 20)]
    ids = known + unknown
    ids += rng.choices(ids, k=count - len(ids))
    rng.shuffle(ids)
    return ids


def run_seed() -> int:
    return int(os.environ.get(SEED_ENV, "0"))


@pytest.fixture(scope="module")
def proxy(fast_dynamo: EndpointProcess) -> Iterator[FaultProxy]:  # noqa: F811
    with FaultProxy(fast_dynamo.url) as running:
        yield running


@pytest.fixture(scope="module")
def workers(redis_server: RedisService, proxy: FaultProxy) -> Iterator[Fleet]:
    with fleet(redis_server, proxy.url, shard_size=SHARD_SIZE) as running:
        assert running.env["FEATUREPULL_DYNAMODB__RETRY_MAX_DELAY_S"] == str(BACKOFF_CAP_S)
        running.start_worker(concurrency=2)
        yield running


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ids = entity_ids(ENTITIES, seed=7 + run_seed())
    return write_entities(tmp_path_factory.mktemp("entities") / "drivers.parquet", ids)


@pytest.fixture(scope="module")
def truth(entities: Path, workers: Fleet, fast_dynamo: EndpointProcess,  # noqa: F811
          tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """The same entities read in-process straight from the endpoint: no proxy, no faults."""
    settings = workers.settings()
    direct = settings.model_copy(update={"dynamodb": settings.dynamodb.model_copy(
        update={"endpoint_url": fast_dynamo.url})})
    out = tmp_path_factory.mktemp("truth") / "truth.parquet"
    outcome = pull(PullRequest("driver_stats", list(FEATURES)), str(entities), str(out), direct)
    assert outcome.stats.retries == 0
    table = pq.read_table(out)
    ids = table.column("driver_id").to_pylist()
    # Every known driver found, every unknown id a row of nulls: a truth worth comparing to.
    known = sum(0 <= i < DRIVERS for i in ids)
    assert table.num_rows == ENTITIES and len(set(ids)) < ENTITIES
    assert table.num_rows - table.column("event_timestamp").null_count == known
    assert table.column("conv_rate").null_count == ENTITIES - known
    return table


def settle(workers: Fleet, proxy: FaultProxy, quiet_s: float = 0.5) -> None:
    """Until no task is queued or running and the proxy has seen no request for quiet_s,
    so one scenario's stragglers cannot count towards the next."""
    client = workers.redis()
    deadline = time.monotonic() + 60
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        seen = proxy.counts["batch_requests"]
        busy = client.llen(workers.queue) or client.hlen("unacked")
        if seen != last or busy:
            last, since = seen, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)
    raise AssertionError("the workers did not go quiet within 60 s")


def start(scenario: Scenario, workers: Fleet, proxy: FaultProxy, entities: Path,
          output: Path) -> Job:
    settle(workers, proxy)
    proxy.plan = scenario.plan(run_seed() * 1000 + SCENARIOS.index(scenario))
    proxy.reset_counts()
    return run_job(workers, entities, output, dynamodb={"retry_deadline_s": scenario.deadline_s})


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.fails_with is None],
                         ids=lambda s: s.slug)
def test_job_completes_with_exact_rows(scenario: Scenario, workers: Fleet, proxy: FaultProxy,
                                       entities: Path, truth: pa.Table,
                                       tmp_path: Path) -> None:
    out = tmp_path / "job.parquet"
    job = start(scenario, workers, proxy, entities, out)
    try:
        status = job.wait(timeout=JOB_TIMEOUT_S, progress=False, poll_s=0.1)
        counts, storm_span_s = proxy.counts, proxy.storm_span_s
    finally:
        proxy.plan = FaultPlan()
    output = pq.read_table(out)
    check = check_rows(output, truth)
    record(scenario.name, "succeeded", fault_counts(scenario, counts), check)
    assert (check.checked, check.lost, check.wrong) == (ENTITIES, 0, 0), check.examples
    assert output.equals(truth)
    assert [p.name for p in tmp_path.iterdir()] == ["job.parquet"]  # no temporary left
    for name in scenario.faults:
        assert counts[name] > 0, (name, counts)
    if "storm_throttled" in scenario.faults:
        # Throttled without a break for much longer than one backoff delay can be.
        assert storm_span_s > 4 * BACKOFF_CAP_S, storm_span_s
    # The workers saw, and retried, exactly what the proxy did to them.
    summary = status.summary or {}
    read = summary["read"]
    assert summary["redelivered_shards"] == 0
    assert read["requests"] == counts["batch_requests"]
    assert read["throttles"] == counts["throttled"]
    assert read["server_errors"] == counts["errors_500"]
    assert read["connection_errors"] == counts["dropped"]
    assert read["unprocessed_retries"] == counts["unprocessed_keys"]
    assert read["found"] + read["missing"] == ENTITIES


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.fails_with is not None],
                         ids=lambda s: s.slug)
def test_job_fails_clearly_and_writes_nothing(scenario: Scenario, workers: Fleet,
                                              proxy: FaultProxy, entities: Path,
                                              tmp_path: Path) -> None:
    assert scenario.fails_with is not None
    out = tmp_path / "job.parquet"
    job = start(scenario, workers, proxy, entities, out)
    try:
        with pytest.raises(JobFailed, match=scenario.fails_with) as failed:
            job.wait(timeout=JOB_TIMEOUT_S, progress=False, poll_s=0.1)
        counts = proxy.counts
        # The storm outlasted the deadline: the job gave up while every request it sent was
        # still throttled (the storm never ended), its last one within back-offs of the
        # deadline — which counts from the first unanswered attempt, so the span of
        # throttled requests can end a back-off short of it.
        assert scenario.deadline_s / 2 < proxy.storm_span_s < proxy.plan.storm_s
        settle(workers, proxy)  # the other process's shard fails or stops too
    finally:
        proxy.plan = FaultPlan()
    reason = str(failed.value).split(": ", 1)[1]
    record(scenario.name, "failed", fault_counts(scenario, counts), RowCheck(), reason)
    for name in scenario.faults:
        assert counts[name] > 0, (name, counts)
    assert job.status().state == "failed"
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def check_csv(output: Path, truth: Path) -> RowCheck:
    """check_rows for CSV files: record by record, as the same encoder wrote them."""
    with open(output, newline="", encoding="utf-8") as got_file, \
            open(truth, newline="", encoding="utf-8") as want_file:
        got, want = list(csv.reader(got_file)), list(csv.reader(want_file))
    check = RowCheck(checked=len(want) - 1, lost=max(0, len(want) - len(got)),
                     wrong=max(0, len(got) - len(want)))
    if got[:1] != want[:1]:  # another header: no row means what it should
        check.wrong = check.checked
        return check
    for n, (row, expected) in enumerate(zip(got[1:], want[1:], strict=False)):
        if row != expected:
            # Columns: driver_id, event_timestamp, features; empty is null.
            lost = row[:1] == expected[:1] and row[1:2] == [""] and expected[1:2] != [""]
            check.lost += lost
            check.wrong += not lost
            check.examples.append(f"row {n}: {row} != {expected}")
    return check


def test_worker_killed_while_finishing(workers: Fleet, proxy: FaultProxy, entities: Path,
                                       truth: pa.Table, tmp_path: Path) -> None:
    # The pool child that writes the output is SIGKILLed mid-write: acks_late puts the
    # finish_job message back, and another process writes the whole file again. CSV, as
    # its rows are encoded one by one: the write lasts ~0.2 s here, Parquet's ~0.02 s.
    settle(workers, proxy)
    proxy.plan = FaultPlan()
    expected = tmp_path / "truth.csv"
    with open_sink(str(expected), truth.schema) as sink:
        sink.write(truth)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "job.csv"
    job, temporary, victim = freeze_finisher_mid_write(
        lambda: run_job(workers, entities, out), out_dir, out.name, JOB_TIMEOUT_S)
    assert victim in workers.children(workers.workers[0])
    # Looked at while the writer is frozen: once it is dead, another process writes anew.
    killed_mid_write = temporary.exists() and not out.exists()
    os.kill(victim, signal.SIGKILL)
    try:
        # Well inside the finisher lock's TTL (jobs.shard_time_limit_s, 1200 s here): the
        # redelivered message must not wait for the dead finisher's lock to expire.
        status = job.wait(timeout=120, progress=False, poll_s=0.1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; worker logs:\n{workers.log_text()[-4000:]}") from None
    check = check_csv(out, expected)
    record(KILL_SCENARIO, status.state, {"finisher processes killed": 1}, check)
    assert killed_mid_write
    assert (check.checked, check.lost, check.wrong) == (ENTITIES, 0, 0), check.examples[:3]
    assert [p.name for p in out_dir.iterdir()] == ["job.csv"]  # the dead one's is gone
    logs = workers.log_text()
    assert re.search(rf"pid:{victim} exited with 'signal 9", logs), logs[-3000:]
    assert (status.summary or {})["rows_written"] == ENTITIES


def test_doc_lists_every_scenario() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in [s.name for s in SCENARIOS] + [KILL_SCENARIO]:
        row = next((line for line in text.splitlines() if line.startswith(f"| {name} |")), None)
        assert row is not None, name
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        # scenario | runs | faults injected | rows checked | rows lost | rows wrong | outcome
        assert int(cells[1]) >= 1 and cells[4] == "0" and cells[5] == "0", row
    assert "scripts/fault_figures.py" in text
