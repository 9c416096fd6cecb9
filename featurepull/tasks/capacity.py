"""The fleet's read budget: one token bucket per table in Redis, shared by every process that
reads the table under a budget — all worker children on all machines, and every job.

    featurepull:capacity:{table}          hash  the table's bucket: ``debt`` (units taken
                                                and not yet refilled, as of ``at``), refilled
                                                at ``rate``, the largest budget that took from
                                                it within the last second (until ``until``)
    featurepull:capacity:{table}:{rate}   str   the bucket of the budgets of ``rate`` RCU/s:
                                                its "theoretical arrival time", the moment it
                                                is full again (GCRA)

A take needs room in both: jobs sharing a table together stay within the largest of their
budgets (the table's bucket), and each within its own (its rate's bucket; jobs with the same
budget share it). A take by a small budget costs the table's bucket its units, refilled at
the largest budget's rate — not its own, slow, time: a 10 RCU/s job's 50-unit request once
held a 2,000 RCU/s job on the same table back for 5 s.

Each take is one Lua script, on Redis's clock (``TIME``), so processes on machines whose
clocks disagree still share one budget. Refill is the clock moving: a worker SIGKILLed
between a take and its answer leaks nothing, and an idle key expires. A settlement (what
DynamoDB charged less what was reserved) rides along with the next take, so a request costs
one round trip.
"""

from __future__ import annotations

from typing import Any

from featurepull.dynamo.pacing import BURST_S, Pacer, PacerFactory

PREFIX = "featurepull:capacity:"
# How long the table's bucket remembers the largest budget that took from it: a little
# longer than any pause between one job's requests (it refills at that rate meanwhile).
LARGEST_RATE_MEMORY_S = 1.0
# KEYS: the table's bucket, the rate's bucket. ARGV: rate (units/s), burst (s), units to
# take, units to settle (may be negative), LARGEST_RATE_MEMORY_S.
# Returns "0" when taken, else the seconds to wait (as a string: Lua numbers become integers).
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local units, settle = tonumber(ARGV[3]), tonumber(ARGV[4])
local memory = tonumber(ARGV[5])
-- The rate's bucket: GCRA at this budget's rate.
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
tat = tat + settle / rate
if tat < now then tat = now end
local cost = units / rate
local wait = tat + cost - now - math.max(burst, cost)
-- The table's bucket: units owed, refilled since `at` at the rate then largest.
local held = redis.call('HMGET', KEYS[1], 'debt', 'at', 'rate', 'until')
local debt = tonumber(held[1] or '0')
local largest, until_ = tonumber(held[3] or '0'), tonumber(held[4] or '0')
debt = debt - (now - tonumber(held[2] or tostring(now))) * largest
if rate >= largest or until_ < now then
    largest = rate
    until_ = now + memory
end
debt = math.max(debt, 0) + settle
if debt < 0 then debt = 0 end
local table_wait = (debt + units - math.max(largest * burst, units)) / largest
if table_wait > wait then wait = table_wait end
if wait <= 0.000001 then
    tat = tat + cost
    debt = debt + units
    wait = 0
end
redis.call('SET', KEYS[2], string.format('%.6f', tat), 'PX',
           math.ceil((tat - now + burst) * 1000) + 1000)
redis.call('HSET', KEYS[1], 'debt', string.format('%.6f', debt),
           'at', string.format('%.6f', now), 'rate', string.format('%.6f', largest),
           'until', string.format('%.6f', until_))
redis.call('PEXPIRE', KEYS[1],
           math.ceil((math.max(debt / largest, until_ - now) + burst) * 1000) + 1000)
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
        self.rate_key = f"{PREFIX}{table}:{rate!r}"
        self._take = client.register_script(_TAKE)
        self._owed = 0.0  # settlements not yet sent

    def reserve(self, units: float) -> float:
        owed, self._owed = self._owed, 0.0
        wait = float(self._take(keys=[self.key, self.rate_key],
                                args=[repr(self.rate), repr(self.burst_s), repr(units),
                                      repr(owed), repr(LARGEST_RATE_MEMORY_S)]))
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
