"""`TokenBucket`: a source's rate limit, in events per second with a burst.

Each ingress replica keeps its own buckets (no coordination on the hot path), so the
limit holds per replica: with N replicas a source may send up to N times its rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """Refills `rate` tokens a second up to `burst`; one token per event."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    def take(self, events: int) -> float:
        """Take `events` tokens and return 0, or return the seconds to wait and take none.

        A request larger than the burst passes when the bucket is full and leaves it in
        debt, so big batches are slowed down, never refused for good.
        """
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        needed = min(events, self.burst)
        if self._tokens >= needed:
            self._tokens -= events
            return 0.0
        return (needed - self._tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """The `Retry-After` value for a wait: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
