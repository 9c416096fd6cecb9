"""Prometheus metrics of the shards and jobs this process runs: ``featurepull_*``, by table.

One label value is one DynamoDB table. A job over several tables (Feast views) counts in
each table's series: its rows, found and missing are those of that table's read, its
requests and RCU those it sent there, and its shards and its end are counted in each.

Recorded at two places only: where a shard's ReadStats are reported (``shard_done``) and
where a job's end is announced (once per job, see ``featurepull.tasks.notify``). A worker with
``metrics_port`` keeps them in prometheus_client's multiprocess files, one set per pool
process, and serves their sum (``featurepull.worker.metrics``); elsewhere they stay in memory.

    featurepull_rows_total{table}                 input rows of the shards read
    featurepull_keys_found_total{table}           rows DynamoDB returned an item for
    featurepull_keys_missing_total{table}         rows DynamoDB answered without an item
    featurepull_requests_total{table,outcome}     BatchGetItem calls: ok, throttled,
                                                  unprocessed, server_error, connection_error
    featurepull_consumed_rcu_total{table}         read capacity units DynamoDB reported
    featurepull_request_seconds{table}            histogram: one BatchGetItem call
    featurepull_shard_seconds{table}              histogram: one shard, read to rows stored
    featurepull_shards_running{table}             gauge: shards being read now (live processes)
    featurepull_jobs_total{table,state}           jobs ended: succeeded, failed, cancelled
    featurepull_queue_messages{queue}             gauge: messages waiting in Redis (at scrape)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from featurepull.dynamo import ReadStats

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SHARD_BUCKETS_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
# kombu's Redis transport keeps a queue as one list per priority step: NAME, then
# NAME\x06\x16<priority> for Celery's default steps.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(frozen=True)
class _Metrics:
    rows: Counter
    found: Counter
    missing: Counter
    requests: Counter
    rcu: Counter
    request_seconds: Histogram
    shard_seconds: Histogram
    shards_running: Gauge
    jobs: Counter


@functools.cache
def _metrics() -> _Metrics:
    # Imported on first use: prometheus_client picks its multiprocess mode at import, from
    # PROMETHEUS_MULTIPROC_DIR, which the worker sets before its pool forks.
    from prometheus_client import Counter, Gauge, Histogram

    table = ["table"]
    return _Metrics(
        rows=Counter("featurepull_rows", "Input rows of the shards read.", table),
        found=Counter("featurepull_keys_found", "Rows DynamoDB returned an item for.", table),
        missing=Counter("featurepull_keys_missing",
                        "Rows DynamoDB answered without an item (null features).", table),
        requests=Counter("featurepull_requests", "BatchGetItem calls by outcome.",
                         [*table, "outcome"]),
        rcu=Counter("featurepull_consumed_rcu",
                    "Read capacity units DynamoDB reported consuming.", table),
        request_seconds=Histogram("featurepull_request_seconds",
                                  "Seconds of one BatchGetItem call.", table,
                                  buckets=REQUEST_BUCKETS_S),
        shard_seconds=Histogram("featurepull_shard_seconds",
                                "Seconds of one shard, from its start to its rows stored.",
                                table, buckets=SHARD_BUCKETS_S),
        shards_running=Gauge("featurepull_shards_running", "Shards being read now.", table,
                             multiprocess_mode="livesum"),
        jobs=Counter("featurepull_jobs", "Jobs ended, by state.", [*table, "state"]),
    )


def request_outcomes(stats: ReadStats) -> dict[str, int]:
    """A shard's BatchGetItem calls split by outcome; they add up to ``stats.requests``."""
    failed = {"throttled": stats.throttles, "unprocessed": stats.unprocessed_requests,
              "server_error": stats.server_errors, "connection_error": stats.connection_errors}
    return {"ok": stats.requests - sum(failed.values()), **failed}


def record_shard(tables: Mapping[str, ReadStats], seconds: float) -> None:
    """Count one shard read to the end (called where its ``shard_done`` line is logged):
    the read of each of its tables (one, or one per Feast view) in that table's series."""
    for table, stats in tables.items():
        _record_read(table, stats, seconds)


def _record_read(table: str, stats: ReadStats, seconds: float) -> None:
    m = _metrics()
    m.rows.labels(table).inc(stats.keys)
    m.found.labels(table).inc(stats.found)
    m.missing.labels(table).inc(stats.missing)
    m.rcu.labels(table).inc(stats.consumed_rcu)
    for outcome, count in request_outcomes(stats).items():
        if count:
            m.requests.labels(table, outcome).inc(count)
    latency = m.request_seconds.labels(table)
    for ms in stats.latencies_ms:
        latency.observe(ms / 1000.0)
    m.shard_seconds.labels(table).observe(seconds)


@contextmanager
def shard_running(tables: Iterable[str]) -> Iterator[None]:
    """``featurepull_shards_running`` of each of the shard's tables is one higher while the
    block runs."""
    gauges = [_metrics().shards_running.labels(table) for table in tables]
    for gauge in gauges:
        gauge.inc()
    try:
        yield
    finally:
        for gauge in gauges:
            gauge.dec()


def record_job_end(tables: Iterable[str], state: str) -> None:
    """Count a job that ended in each table it read (once per job, by whoever announces
    its end)."""
    for table in tables:
        _metrics().jobs.labels(table, state).inc()


def queue_depth(redis: Any, queues: Iterable[str]) -> Metric:
    """``featurepull_queue_messages{queue}``: messages waiting in each queue, read now."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily("featurepull_queue_messages",
                               "Task messages waiting in the Redis queue (not yet taken).",
                               labels=["queue"])
    for queue in queues:
        names = [queue, *(f"{queue}{_PRIORITY_SEPARATOR}{p}" for p in _PRIORITY_STEPS[1:])]
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        family.add_metric([queue], float(sum(pipe.execute())))
    return family
