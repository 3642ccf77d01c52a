"""`RecentBatches`: what a producer keeps of the batches it sent, for traces."""

from __future__ import annotations

from actors.trace import RecentBatches
from sinks.base import Batch, Delivered


def batch(start: int, count: int, size: int = 1000) -> Batch:
    payloads = [b'{"messageId":"m-%d","pad":"%s"}' % (start + i, b"x" * size) for i in range(count)]
    return Batch.of("log", "track", start, payloads)


def test_delivered_batches_are_kept_up_to_the_limit_and_batches_in_flight_always() -> None:
    recent = RecentBatches(limit_bytes=50_000)
    big = recent.add("file://data", batch(0, 100))  # 100 KB, past the limit alone
    assert recent.steps("m-5")[1][0]["status"] == "in flight"  # held by its write anyway
    small = [recent.add("webhook+http://h/x", batch(100 + 10 * i, 10)) for i in range(3)]
    assert len(recent.entries) == 4  # nothing delivered yet: nothing let go
    big.delivered = Delivered(locations=["data/part.parquet"])
    recent.trim()
    assert [e.batch.start for e in recent.entries] == [100, 110, 120]
    assert recent.steps("m-5") == (None, [])
    for entry in small:
        entry.delivered = Delivered(locations=["HTTP 200"])
    recent.add("webhook+http://h/x", batch(130, 30))  # the oldest delivered go first
    assert [e.batch.start for e in recent.entries] == [120, 130]
    event, steps = recent.steps("m-121")
    assert event is not None and steps[0]["status"] == "delivered"
    assert recent.bytes == sum(e.batch.events.nbytes for e in recent.entries)


def test_no_limit_keeps_nothing() -> None:
    recent = RecentBatches(limit_bytes=0)
    recent.add("file://data", batch(0, 10))
    assert not recent.entries
