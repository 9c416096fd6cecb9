"""scripts/bench_requests.py measures each layer on the same requests, and its reader layer
reads what the endpoint holds."""

from __future__ import annotations

import pytest

from featurepull.bench.endpoint import start_endpoint
from tests.bench.test_bench_aiohttp import script


def test_every_layer_sends_the_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    bench_requests = script("bench_requests")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "bench")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench")
    with start_endpoint(drivers=150, latency_ms=1) as endpoint:
        cells = bench_requests.measure(endpoint.url, 1_500, 0.1, 4, bench_requests.LAYERS)
    assert [cell["layer"] for cell in cells] == ["pool", "transport", "reader"]
    assert all(cell["requests"] == 15 and cell["cpu_s"] >= 0 for cell in cells)
    assert cells[2]["found"] == 150  # drivers 0..149 of ids 0..1,499
