"""The retry policy for keys DynamoDB did not answer: capped exponential backoff with full
jitter, bounded by a deadline per key; and the tally of what failed, for the message of a read
that runs out of time. One small unit, so the policy lives in one place."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from featurepull.dynamo.stats import ReadStats

# Error codes DynamoDB (and the AWS front end) use when a request was refused for rate.
THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)
# Error codes that mean "the service failed this time"; the request may be sent again.
TRANSIENT_CODES = frozenset(
    {"InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException"}
)


@dataclass(frozen=True)
class Backoff:
    """Delay before the n-th retry: uniform in [0, min(cap, base * 2**(n-1))].

    Full jitter (rather than equal or decorrelated jitter) spreads the retries of many
    threads and processes best when they were all refused at the same moment.
    """

    base_s: float
    cap_s: float
    deadline_s: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 32)
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2**exponent)))

    def expired(self, first_failure: float, now: float) -> bool:
        """True when a key first refused at ``first_failure`` may not be retried any more."""
        return now - first_failure > self.deadline_s


# What a read that ran out of time says about each kind of failure: a headline (``{n}`` is
# how many requests failed that way, ``{example}`` the most frequent detail) and what to do.
_FAILURE_TEXT = {
    "connection": (
        "the endpoint could not be reached or its answers were lost ({n} requests failed on "
        "the connection; most often: {example})",
        "Check that the endpoint is up and reachable from here (--endpoint-url, --region, "
        "network, proxy), or raise --retry-deadline (retry_deadline_s) to wait out an outage."),
    "server": (
        "DynamoDB kept failing on its side ({n} requests answered with a server error; most "
        "often: {example})",
        "Retry later (check the AWS Health Dashboard for the region), or raise "
        "--retry-deadline (retry_deadline_s)."),
    "throttle": (
        "DynamoDB kept throttling ({n} requests throttled; most often: {example})",
        "Raise the table's read capacity, lower --max-read-workers, or raise --retry-deadline "
        "(retry_deadline_s)."),
    "unprocessed": (
        "DynamoDB kept leaving keys unprocessed ({n} answers left keys unprocessed)",
        "Raise the table's read capacity, lower --max-read-workers, or raise --retry-deadline "
        "(retry_deadline_s)."),
}
FAILURE_KINDS = tuple(_FAILURE_TEXT)
# Where each kind is counted: the read's own statistics, the one place for each count.
_COUNTED_AS = {"connection": "connection_errors", "server": "server_errors",
               "throttle": "throttles", "unprocessed": "unprocessed_requests"}
_EXAMPLE_CHARS = 200


@dataclass
class FailureTally:
    """What kept keys of one read unanswered, by kind (``FAILURE_KINDS``), with the most
    frequent detail of each, so a read that runs out of time names what actually failed —
    a dead endpoint is not a throttled table — and gives the advice that fits. The counts
    are those of ``stats`` (the read's ReadStats): :meth:`note` counts there."""

    stats: ReadStats = field(default_factory=ReadStats)
    details: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Failed requests (answers with keys unprocessed) by kind, from ``stats``."""
        return {kind: getattr(self.stats, _COUNTED_AS[kind]) for kind in FAILURE_KINDS}

    def note(self, kind: str, detail: str = "") -> None:
        """One request that failed (or came back with keys unprocessed) this way."""
        setattr(self.stats, _COUNTED_AS[kind], getattr(self.stats, _COUNTED_AS[kind]) + 1)
        if detail:
            self.details.setdefault(kind, Counter())[detail[:_EXAMPLE_CHARS]] += 1

    def dominant(self) -> str | None:
        """The kind most requests failed with (None before any failure)."""
        counts = self.counts
        kind = max(FAILURE_KINDS, key=lambda k: counts[k])
        return kind if counts[kind] else None

    def explain(self) -> str:
        """The headline and advice of the dominant kind, with the count of every kind."""
        kind, counts = self.dominant(), self.counts
        listed = ", ".join(f"{counts[k]} {k}" for k in FAILURE_KINDS)
        if kind is None:
            return f"no request failed (failed requests by kind: {listed})."
        headline, advice = _FAILURE_TEXT[kind]
        common = self.details.get(kind)
        example = common.most_common(1)[0][0] if common else "no detail"
        text = headline.format(n=counts[kind], example=example)
        return f"{text}. Failed requests by kind: {listed}. {advice}"
