"""The retry policy for keys DynamoDB did not answer: capped exponential backoff with full
jitter, bounded by a deadline per key. One small unit, so the policy lives in one place."""

from __future__ import annotations

import random
from dataclasses import dataclass

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
