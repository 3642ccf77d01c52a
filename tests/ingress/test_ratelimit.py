"""Rate limits: a token bucket per source (and per replica); over it, 429 + Retry-After."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ingress.ratelimit import TokenBucket, retry_after
from tests.ingress.harness import Ingress, error


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    assert [bucket.take(1) for _ in range(20)] == [0.0] * 20
    assert bucket.take(1) == pytest.approx(0.1)  # one token comes back every 0.1 s
    clock.now += 0.5
    assert [bucket.take(1) for _ in range(5)] == [0.0] * 5
    assert bucket.take(1) > 0
    clock.now += 100  # refills up to the burst, no further
    assert bucket.take(20) == 0.0 and bucket.take(1) > 0


def test_a_batch_larger_than_the_burst_passes_when_full_and_leaves_a_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=100, burst=50, clock=clock)
    assert bucket.take(500) == 0.0  # would otherwise be refused for ever
    assert bucket.take(1) == pytest.approx(4.51)  # 450 in debt, +1, at 100/s
    assert retry_after(4.51) == "5" and retry_after(0.01) == "1"


LIMITED = """
sources:
  - name: web
    write_keys: [web-key]
    rate_limit: {events_per_s: 1, burst: 3}
  - name: ios
    write_keys: [ios-key]
"""


def test_over_the_rate_is_429_with_retry_after(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(LIMITED)
    event = {"userId": "u", "event": "e"}
    assert ingress.post("/v1/batch", {"batch": [{**event, "type": "track"}] * 3}, "web-key").json()
    answer = ingress.post("/v1/track", event, "web-key")
    assert error(answer, 429)["code"] == "rate_limited"
    assert answer.headers["retry-after"] == "1"
    # Another source is not slowed down by it.
    assert all(ingress.post("/v1/track", event, "ios-key").status_code == 200 for _ in range(20))
    assert len(ingress.store.events()) == 23
