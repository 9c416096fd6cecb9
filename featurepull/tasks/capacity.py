"""The fleet's read budget: one token bucket per table in Redis, shared by every process that
reads the table under a budget — all worker children on all machines, and every job.

    featurepull:capacity:{table}   str   the bucket's "theoretical arrival time": the
                                         moment, on Redis's clock, it is full again (GCRA)

Each take is one Lua script, on Redis's clock (``TIME``), so processes on machines whose
clocks disagree still share one budget. Refill is the clock moving: a worker SIGKILLed
between a take and its answer leaks nothing, and an idle key expires. A take passes its own
rate: each job's reads cost ``units / its budget`` seconds of bucket time, so jobs sharing a
table together stay within the largest of their budgets, and each within its own.
A settlement (what DynamoDB charged less what was reserved) rides along with the next take,
so a request costs one round trip.
"""

from __future__ import annotations

from typing import Any

from featurepull.dynamo.pacing import BURST_S, Pacer, PacerFactory

PREFIX = "featurepull:capacity:"
# ARGV: rate (units/s), burst (s), units to take, units to settle (may be negative).
# Returns "0" when taken, else the seconds to wait (as a string: Lua numbers become integers).
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local units, settle = tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + settle / rate
if tat < now then tat = now end
local cost = units / rate
local depth = burst
if cost > depth then depth = cost end
local wait = tat + cost - now - depth
if wait <= 0.000001 then
    tat = tat + cost
    wait = 0
end
local ttl = math.ceil((tat - now + burst) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', ttl)
return string.format('%.6f', wait)
"""


class RedisBucket:
    """A :class:`~featurepull.dynamo.pacing.Pacer` whose bucket is a Redis key per table."""

    def __init__(self, client: Any, table: str, rate: float, burst_s: float = BURST_S) -> None:
        if rate <= 0:
            raise ValueError(f"a read budget must be above 0 RCU/s, got {rate}")
        self.rate = rate
        self.burst_s = burst_s
        self.key = f"{PREFIX}{table}"
        self._take = client.register_script(_TAKE)
        self._owed = 0.0  # settlements not yet sent

    def reserve(self, units: float) -> float:
        owed, self._owed = self._owed, 0.0
        wait = float(self._take(keys=[self.key],
                                args=[repr(self.rate), repr(self.burst_s), repr(units),
                                      repr(owed)]))
        return wait

    def settle(self, reserved: float, consumed: float) -> None:
        self._owed += consumed - reserved

    def flush(self) -> None:
        if self._owed:
            self.reserve(0.0)


def redis_pacers(client: Any) -> PacerFactory:
    """A pacer factory for readers in a worker: every bucket lives in ``client``'s Redis."""
    def pacer(table: str, rate: float) -> Pacer:
        return RedisBucket(client, table, rate)

    return pacer
