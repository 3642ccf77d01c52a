"""`RecentBatches`: what a producer keeps of the batches it sent, for traces."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.trace import RecentBatches
from sinks.base import Batch, Delivered


def batch(start: int, count: int, size: int = 1000) -> Batch:
    payloads = [b'{"messageId":"m-%d","pad":"%s"}' % (start + i, b"x" * size) for i in range(count)]
    return Batch.of("log", "track", start, payloads)


class Store:
    """Stands in for Ray's object store: a reference is a key, loaded back on request."""

    def __init__(self) -> None:
        self.objects: dict[int, Batch] = {}
        self.loads = 0

    def put(self, recent: RecentBatches, sink_uri: str, one: Batch) -> Any:
        key = len(self.objects)
        self.objects[key] = one
        return recent.add(sink_uri, one, key)

    async def load(self, key: int) -> Batch:
        self.loads += 1
        return self.objects[key]


def steps(recent: RecentBatches, message_id: str) -> Any:
    return asyncio.run(recent.steps(message_id))


def test_delivered_batches_are_kept_up_to_the_limit_and_batches_in_flight_always() -> None:
    store = Store()
    recent = RecentBatches(limit_bytes=50_000, load=store.load)
    big = store.put(recent, "file://data", batch(0, 100))  # 100 KB, past the limit alone
    assert steps(recent, "m-5")[1][0]["status"] == "in flight"  # held by its write anyway
    small = [store.put(recent, "webhook+http://h/x", batch(100 + 10 * i, 10)) for i in range(3)]
    assert len(recent.entries) == 4  # nothing delivered yet: nothing let go
    big.delivered = Delivered(locations=["data/part.parquet"])
    recent.trim()
    assert [e.start for e in recent.entries] == [100, 110, 120]
    assert steps(recent, "m-5") == (None, [])
    for entry in small:
        entry.delivered = Delivered(locations=["HTTP 200"])
    store.put(recent, "webhook+http://h/x", batch(130, 30))  # the oldest delivered go first
    assert [e.start for e in recent.entries] == [120, 130]
    event, found = steps(recent, "m-121")
    assert event is not None and found[0]["status"] == "delivered"
    assert found[0]["batch"] == "log-000000000120-000000000129" and found[0]["offset"] == 121
    assert recent.bytes == sum(store.objects[e.ref].events.nbytes for e in recent.entries)


def test_no_limit_keeps_nothing_and_nothing_is_read_without_a_lookup() -> None:
    store = Store()
    recent = RecentBatches(limit_bytes=0, load=store.load)
    entry = store.put(recent, "file://data", batch(0, 10))
    assert not recent.entries and entry.ref == 0 and entry.end == 10
    assert store.loads == 0
