"""Live traffic for the bench endpoint: what a feature server does to the table featurepull
reads — small BatchGetItem calls at a steady rate, each needed now, none retried.

    with LiveTraffic(endpoint.url, table, drivers=10_000, rcu_per_s=1_600) as live:
        ...  # run featurepull meanwhile
    live.result.throttled_share   # requests not served in full (refused or keys left over)

It signs its requests with its own access key id ("live"), so the endpoint's
``GET /stats/capacity`` tells its consumption from featurepull's.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

from featurepull.bench.endpoint import SyntheticTable

LIVE_CLIENT = "live"
KEYS_PER_REQUEST = 20  # 10 RCU a request, eventually consistent


@dataclass
class LiveResult:
    """What the live client saw."""

    requests: int = 0
    throttled: int = 0  # refused, or answered with keys left unprocessed
    errors: int = 0  # anything else (connection lost, 5xx)

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


class LiveTraffic:
    """A thread that reads ``rcu_per_s`` from the table until stopped."""

    def __init__(self, url: str, table: str, drivers: int, rcu_per_s: float,
                 seed: int = 1) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.table = table
        self.interval = KEYS_PER_REQUEST * 0.5 / rcu_per_s
        self.result = LiveResult()
        synthetic = SyntheticTable(0)
        rng = random.Random(seed)
        # Distinct drivers: a request with a key twice is refused (ValidationException).
        picked = rng.sample(range(drivers), min(drivers, 2_000))
        self._ids = [synthetic.entity_id(driver) for driver in picked]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-traffic", daemon=True)

    def __enter__(self) -> LiveTraffic:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> LiveResult:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.result

    def _body(self, n: int) -> bytes:
        start = (n * KEYS_PER_REQUEST) % (len(self._ids) - KEYS_PER_REQUEST)
        keys = [{"entity_id": {"S": i}} for i in self._ids[start:start + KEYS_PER_REQUEST]]
        return json.dumps({"RequestItems": {self.table: {"Keys": keys}},
                           "ReturnConsumedCapacity": "TOTAL"}).encode()

    def _run(self) -> None:
        headers = {"Content-Type": "application/x-amz-json-1.0",
                   "X-Amz-Target": "DynamoDB_20120810.BatchGetItem",
                   "Authorization": f"AWS4-HMAC-SHA256 Credential={LIVE_CLIENT}/20260101/"
                                    "us-east-1/dynamodb/aws4_request"}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        next_at, n = time.monotonic(), 0
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            next_at += self.interval
            n += 1
            try:
                conn.request("POST", "/", self._body(n), headers)
                response = conn.getresponse()
                answer = json.loads(response.read())
            except (OSError, http.client.HTTPException, ValueError):
                self.result.requests += 1
                self.result.errors += 1
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                continue
            self.result.requests += 1
            if response.status != 200:
                if "ProvisionedThroughputExceeded" in str(answer.get("__type", "")):
                    self.result.throttled += 1
                else:
                    self.result.errors += 1
            elif answer.get("UnprocessedKeys"):
                self.result.throttled += 1
        conn.close()
