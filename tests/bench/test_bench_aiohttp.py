"""The benchmark's aiohttp transport (scripts/bench_aiohttp.py) reads exactly what the fast
transport reads — so its figures compare HTTP clients, not answers — and ``bench.py
--transports fast,aiohttp`` plans it for in-process pulls only (featurepull's workers do not
have it)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from featurepull.bench.endpoint import FEATURES, EndpointProcess, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
TABLE = "bench.driver_stats"
LAYOUT = FeastLayout({"driver_id": "int64"})


def script(name: str) -> ModuleType:
    """A module of scripts/ (they import each other by plain name)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointProcess]:
    with start_endpoint(drivers=2_000, table=TABLE, latency_ms=1) as running:
        yield running


def test_aiohttp_reads_what_the_fast_transport_reads(endpoint: EndpointProcess,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bench_aiohttp = script("bench_aiohttp")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "bench")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench")
    ids = [*range(0, 2_000, 3), *range(9_000, 9_150), *range(0, 300)]
    keys = LAYOUT.keys_for({"driver_id": ids})
    reader = BatchReader(TABLE, LAYOUT, DynamoSettings(
        region="us-east-1", endpoint_url=endpoint.url, max_read_workers=6))
    fast = reader.read(keys, list(FEATURES))
    with bench_aiohttp.installed():
        posts = bench_aiohttp.AiohttpTransport.posts
        through_aiohttp = reader.read(keys, list(FEATURES))
        # Every request went through aiohttp, not the fast transport's own connections.
        assert bench_aiohttp.AiohttpTransport.posts - posts == through_aiohttp.stats.requests
        built = bench_aiohttp.reader_module.transport_for(reader.client, reader.settings)
        assert isinstance(built, bench_aiohttp.AiohttpTransport)
        built.close()
    assert through_aiohttp.rows == fast.rows
    assert through_aiohttp.stats.requests == fast.stats.requests
    assert (through_aiohttp.stats.found, through_aiohttp.stats.missing) == (667 + 300, 150)
    # Out of the block the reader builds its own transport again.
    assert not isinstance(bench_aiohttp.reader_module.transport_for(
        reader.client, reader.settings), bench_aiohttp.AiohttpTransport)


def test_bench_plans_aiohttp_for_in_process_pulls_only() -> None:
    bench = script("bench")
    args = bench.parse_args(["--sizes", "10000", "--threads", "10,32", "--latencies", "10",
                             "--methods", "featurepull_pull,celery_1",
                             "--transports", "fast,aiohttp"])
    transports = bench.chosen_transports(args)
    assert transports == ["fast", "aiohttp"]
    labels = {(cell.label, cell.threads)
              for cell in bench.plan_cells(args, 10.0, 10_000, transports)}
    assert ("featurepull_pull[aiohttp]", 10) in labels
    assert ("featurepull_pull[aiohttp]", 32) in labels
    assert not any(label.startswith("celery") and "aiohttp" in label for label, _ in labels)
    assert any(label == "celery_1[fast]" for label, _ in labels)
    # By default (no --transports) the benchmark's own transport is left out.
    default = bench.parse_args(["--sizes", "10000"])
    assert "aiohttp" not in bench.chosen_transports(default)
    with pytest.raises(SystemExit, match="no transport curl"):
        bench.chosen_transports(bench.parse_args(["--transports", "fast,curl"]))
