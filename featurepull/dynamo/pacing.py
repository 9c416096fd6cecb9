"""Read budgets: how many read capacity units per second a read may spend on a table.

The reader asks a :class:`Pacer` before each request (``reserve`` an estimate of what the
request will cost) and tells it afterwards what DynamoDB charged (``settle`` from the answer's
``ConsumedCapacity``). A pacer is a token bucket in the GCRA form: one number, the
"theoretical arrival time" — the moment the bucket would be full again. Taking ``u`` units
pushes it ``u / rate`` seconds later; a take is allowed when, after it, it lies no further
ahead of now than the bucket's depth: ``burst_s``, or one request when that is larger. So any
window of ``T`` seconds sees at most ``rate * T`` plus one depth. Refill is nothing but the
clock moving, so a reader that dies holding a reservation leaks nothing.

This module holds the local pacer (one process: ``featurepull pull``, a notebook) and the
budget arithmetic; ``featurepull.tasks.capacity`` holds the one shared in Redis by a fleet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from featurepull.dynamo.errors import TableError

# The bucket's depth in seconds of budget (at least one request): the burst a budget allows
# on top of its rate. Small, so that every 1-second window stays within ~5% of the budget.
BURST_S = 0.05
# Waits shorter than this are none (clocks and float sums are not finer).
_RESOLUTION_S = 1e-6
# DynamoDB's charge per key of BatchGetItem, up to 4 KB of item (found or not).
RCU_PER_KEY_EVENTUAL = 0.5
RCU_PER_KEY_STRONG = 1.0
# Weight of the latest answer in the learned per-key cost (items over 4 KB cost more).
COST_LEARNING_RATE = 0.2


class BudgetError(TableError):
    """A read budget that cannot apply to this table (a percentage of no maximum)."""


class Pacer(Protocol):
    """What the reader calls around each request to keep a table's read budget."""

    rate: float  # RCU per second

    def reserve(self, units: float) -> float:
        """Take ``units`` now and return 0.0, or take nothing and return the seconds to wait
        before asking again."""

    def settle(self, reserved: float, consumed: float) -> None:
        """Correct a reservation by what DynamoDB charged (``consumed`` may be 0: refused)."""

    def flush(self) -> None:
        """Apply settlements still held back (the read is over)."""


PacerFactory = Callable[[str, float], Pacer]


class LocalBucket:
    """A token bucket in this process (thread-safe): a budget for one process's reads."""

    def __init__(self, rate: float, burst_s: float = BURST_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"a read budget must be above 0 RCU/s, got {rate}")
        self.rate = rate
        self.burst_s = burst_s
        self._clock = clock
        self._tat = 0.0  # when the bucket is full again
        self._lock = threading.Lock()

    def reserve(self, units: float) -> float:
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            cost = units / self.rate
            ahead = tat + cost - now - max(self.burst_s, cost)
            if ahead > _RESOLUTION_S:
                return ahead
            self._tat = tat + cost
            return 0.0

    def settle(self, reserved: float, consumed: float) -> None:
        with self._lock:
            now = self._clock()
            # Never fuller than full: giving back units only pulls the arrival time to now.
            self._tat = max(max(self._tat, now) + (consumed - reserved) / self.rate, now)

    def flush(self) -> None:
        """Nothing is held back: settlements apply at once."""


def local_pacer(table: str, rate: float) -> Pacer:
    """The default :data:`PacerFactory`: a bucket of this process only."""
    return LocalBucket(rate)


@dataclass
class ReadCost:
    """What a key is expected to cost: DynamoDB's minimum until answers show items larger
    than 4 KB, then what they cost (learned from ``ConsumedCapacity``)."""

    consistent: bool
    per_key: float = 0.0

    def __post_init__(self) -> None:
        self.per_key = self.minimum

    @property
    def minimum(self) -> float:
        return RCU_PER_KEY_STRONG if self.consistent else RCU_PER_KEY_EVENTUAL

    def estimate(self, keys: int) -> float:
        return keys * self.per_key

    def learn(self, keys: int, consumed: float) -> None:
        if keys <= 0 or consumed <= 0:
            return
        sample = consumed / keys
        blended = self.per_key + COST_LEARNING_RATE * (sample - self.per_key)
        # Larger items are believed at once (overspending is what a budget is for).
        self.per_key = max(self.minimum, sample if sample > self.per_key else blended)


@dataclass
class ReadPace:
    """One read's use of a pacer: reservations, settlements, and time spent held back."""

    pacer: Pacer | None
    cost: ReadCost
    waited_s: float = 0.0
    _held_since: float | None = field(default=None, repr=False)

    @property
    def rate(self) -> float:
        return self.pacer.rate if self.pacer is not None else 0.0

    def reserve(self, keys: int, now: float) -> tuple[float, float]:
        """``(units reserved, 0.0)``, or ``(0.0, seconds to wait)`` when the budget is spent."""
        units = self.cost.estimate(keys)
        if self.pacer is None:
            return units, 0.0
        wait = self.pacer.reserve(units)
        if wait > 0:
            if self._held_since is None:
                self._held_since = now
            return 0.0, wait
        if self._held_since is not None:
            self.waited_s += now - self._held_since
            self._held_since = None
        return units, 0.0

    def settle(self, reserved: float, consumed: float | None, keys_answered: int) -> None:
        """``consumed`` None: the answer carried no ConsumedCapacity; charge the estimate."""
        if consumed is None:
            consumed = self.cost.estimate(keys_answered)
        else:
            self.cost.learn(keys_answered, consumed)
        if self.pacer is not None and reserved != consumed:
            self.pacer.settle(reserved, consumed)

    def finish(self, now: float) -> None:
        if self._held_since is not None:
            self.waited_s += now - self._held_since
            self._held_since = None
        if self.pacer is not None:
            self.pacer.flush()


# --------------------------------------------------------------------------------------
# Budget values (checked in featurepull.config.budget) against what DescribeTable says.
# --------------------------------------------------------------------------------------

def table_read_capacity(description: Mapping[str, Any]) -> float | None:
    """The table's read capacity from DescribeTable: provisioned ReadCapacityUnits, or an
    on-demand table's OnDemandThroughput.MaxReadRequestUnits; None when it has no maximum."""
    billing = description.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    provisioned = float(description.get("ProvisionedThroughput", {})
                        .get("ReadCapacityUnits", 0) or 0)
    if billing != "PAY_PER_REQUEST" and provisioned > 0:
        return provisioned
    maximum = float(description.get("OnDemandThroughput", {})
                    .get("MaxReadRequestUnits", -1) or -1)
    return maximum if maximum > 0 else None


def resolve_budget(setting: str, value: float | str | None, table: str,
                   description: Mapping[str, Any]) -> float | None:
    """RCU/s of one budget value on this table (``setting`` names it in errors)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    capacity = table_read_capacity(description)
    if capacity is None:
        raise BudgetError(
            f"{setting}={value}: table {table} is on-demand with no maximum read throughput "
            "(OnDemandThroughput.MaxReadRequestUnits), so a percentage has nothing to be a "
            "share of; give a number of RCU per second instead (e.g. --max-rcu-per-s 2000)")
    return capacity * float(value[:-1]) / 100.0


def effective_budget(job: float | str | None, ceiling: float | str | None, table: str,
                     description: Mapping[str, Any]) -> float | None:
    """The budget a read keeps: the job's own and the operator's ceiling for the table
    (``dynamodb.table_budgets``), each resolved to RCU/s; the smaller when both are set."""
    values = [resolve_budget("dynamodb.max_rcu_per_s", job, table, description),
              resolve_budget(f"dynamodb.table_budgets[{table!r}]", ceiling, table,
                             description)]
    given = [v for v in values if v is not None]
    return min(given) if given else None
