"""The bench endpoint's provisioned mode: a table's read capacity as DynamoDB enforces it.

A token bucket of ``rcu`` units per second holding at most ``burst_s`` seconds of them.
BatchGetItem serves the keys the bucket can pay for; the rest come back in UnprocessedKeys,
and a request it can pay for none of is refused with ProvisionedThroughputExceededException.
What each client consumed is recorded per wall-clock second — a client is the access key id
that signed the request — so tests and benchmarks can check a budget window by window
(``GET /stats/capacity``).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def client_of(authorization: str) -> str:
    """The access key id in a SigV4 ``Authorization`` header ("anonymous" without one)."""
    found = _CREDENTIAL.search(authorization)
    return found.group(1) if found else "anonymous"


@dataclass
class ClientUsage:
    """One client's reads: requests, those not served in full, RCU by wall-clock second."""

    requests: int = 0
    throttled: int = 0
    rcu: float = 0.0
    per_second: dict[int, float] = field(default_factory=lambda: defaultdict(float))

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "throttled": self.throttled,
                "rcu": round(self.rcu, 3),
                "per_second": {str(s): round(v, 3) for s, v in sorted(self.per_second.items())}}


@dataclass
class Capacity:
    """A table's read capacity: provisioned (``rcu`` > 0) or on-demand (``rcu`` 0, with an
    optional ``on_demand_max`` that DescribeTable reports but nothing enforces)."""

    rcu: float = 0.0
    burst_s: float = 1.0
    on_demand_max: float = 0.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    clients: dict[str, ClientUsage] = field(default_factory=lambda: defaultdict(ClientUsage))

    def __post_init__(self) -> None:
        self._tokens = self.rcu * self.burst_s
        self._last = self.clock()

    @property
    def provisioned(self) -> bool:
        return self.rcu > 0

    def describe(self) -> Mapping[str, Any]:
        """The capacity fields of DescribeTable's ``Table``."""
        if self.provisioned:
            return {"BillingModeSummary": {"BillingMode": "PROVISIONED"},
                    "ProvisionedThroughput": {"ReadCapacityUnits": self.rcu,
                                              "WriteCapacityUnits": self.rcu,
                                              "NumberOfDecreasesToday": 0}}
        described: dict[str, Any] = {
            "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
            "ProvisionedThroughput": {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0,
                                      "NumberOfDecreasesToday": 0}}
        if self.on_demand_max > 0:
            described["OnDemandThroughput"] = {"MaxReadRequestUnits": self.on_demand_max,
                                               "MaxWriteRequestUnits": -1}
        return described

    def _refill(self) -> None:
        # The capacity earned since the last request, up to burst_s seconds of it.
        now = self.clock()
        self._tokens = min(self.rcu * self.burst_s, self._tokens + (now - self._last) * self.rcu)
        self._last = now

    def admit(self, client: str, keys: int, per_key: float) -> int:
        """How many of ``keys`` (each costing ``per_key``) this request is served; records
        the client's consumption. 0 means the request is refused."""
        usage = self.clients[client]
        usage.requests += 1
        served = keys
        if self.provisioned:
            self._refill()
            served = min(keys, int(self._tokens / per_key + 1e-9))
            self._tokens -= served * per_key
        if served < keys:
            usage.throttled += 1
        units = served * per_key
        usage.rcu += units
        usage.per_second[int(self.wall())] += units
        return served

    def charge(self, client: str, units: float) -> bool:
        """A request whose cost is known only once served (a Scan page): served while the
        bucket holds any capacity, which may then go below zero, as DynamoDB lets a scan
        overdraw; False means refused. Records the client's consumption."""
        usage = self.clients[client]
        usage.requests += 1
        if self.provisioned:
            self._refill()
            if self._tokens <= 0:
                usage.throttled += 1
                return False
            self._tokens -= units
        usage.rcu += units
        usage.per_second[int(self.wall())] += units
        return True

    def stats(self) -> dict[str, Any]:
        """``GET /stats/capacity``."""
        return {"provisioned_rcu": self.rcu, "burst_s": self.burst_s,
                "on_demand_max": self.on_demand_max,
                "clients": {name: usage.to_dict() for name, usage in self.clients.items()}}
