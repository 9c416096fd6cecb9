"""A pool process imports none of featurepull's, pyarrow's or protobuf's modules for its
shards and the finisher: the worker's main process imported them before the pool forked
(``featurepull.worker.app._preload_before_fork``). A fresh interpreter stands in for a pool
process: it imports what a worker's main process has, runs the preload, then every shard
and the finisher of a real job (real redis-server and the session's endpoint, a Parquet
file output, an int key and int, double, text and time features), and lists what it
imported after the preload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from featurepull.config import Settings
from featurepull.tasks import JobStore
from tests.tasks.conftest import NewJob

_AS_A_POOL_PROCESS = """
import json, sys
from celery.signals import celeryd_init
from featurepull.worker.app import _preload_before_fork
from featurepull.tasks import celery_tasks
from featurepull.config import load_settings
from featurepull.tasks.store import JobStore, connect

_preload_before_fork(signal=celeryd_init, sender="test", instance=None, conf=None, options={})
before = set(sys.modules)
job_id, shards, overrides = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
settings = load_settings(overrides=overrides)
store = JobStore(connect(settings.redis_url), settings.jobs.ttl_s)
for shard in range(shards):
    celery_tasks.run_shard(job_id, shard, settings, store)
celery_tasks.finish_job(job_id, settings, store)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_a_pool_process_imports_nothing_for_its_shards_and_the_finisher(
        new_job: NewJob, settings: Settings, store: JobStore, tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    ids = [199_900 + 3 * i for i in range(250)] + [199_900]  # found, missing, a duplicate
    meta = new_job(ids, output=str(output),
                   features=["conv_rate", "avg_daily_trips", "city", "last_trip_at"])
    assert meta.shards == 3
    overrides = {"redis_url": settings.redis_url, "project": settings.project,
                 "dynamodb": {"endpoint_url": settings.dynamodb.endpoint_url,
                              "region": settings.dynamodb.region},
                 "jobs": {"shard_size": settings.jobs.shard_size}}
    proc = subprocess.run(
        [sys.executable, "-c", _AS_A_POOL_PROCESS, meta.job_id, str(meta.shards),
         json.dumps(overrides)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    imported = json.loads(proc.stdout.splitlines()[-1])
    # The job ran there: its output is whole, in input order.
    table = pq.read_table(output)
    assert table.column("driver_id").to_pylist() == ids
    assert table.column("avg_daily_trips").null_count == sum(i >= 200_000 for i in ids)
    assert [name for name in imported
            if name.split(".")[0] in ("featurepull", "pyarrow", "google")] == []
