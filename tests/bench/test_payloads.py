"""What the load generator sends is valid Segment, varied, and never repeats a messageId."""

from __future__ import annotations

import random
from collections import Counter

import orjson

from bench.generator import percentile
from bench.payloads import BATCH_SIZE, EventPool, MessageIds, accepted_ids
from ingress import events


def test_batches_mix_all_six_types_and_pass_sluice_validation() -> None:
    pool = EventPool(random.Random(1), size=50)
    ids = MessageIds()
    body = orjson.loads(pool.batch(ids.take(BATCH_SIZE)))
    batch = body["batch"]
    assert len(batch) == BATCH_SIZE
    assert set(Counter(e["type"] for e in batch)) == {
        "track", "identify", "page", "screen", "group", "alias"
    }  # fmt: skip
    assert len({e["userId"] if "userId" in e else e["anonymousId"] for e in batch}) > 20
    parsed = events.accept(batch, record_type=None, source="bench", ip=None, defaults=body)
    assert parsed.rejected == []
    assert parsed.accepted == BATCH_SIZE


def test_single_track_passes_sluice_validation() -> None:
    pool = EventPool(random.Random(2), size=10)
    event = orjson.loads(pool.track("m-1"))
    parsed = events.accept([event], record_type="track", source="bench", ip=None)
    assert parsed.rejected == [] and event["messageId"] == "m-1"


def test_message_ids_are_unique_and_change_prefix_on_reset() -> None:
    ids = MessageIds()
    first = ids.take(1000)
    ids.reset()  # what a forked Locust worker does
    second = ids.take(1000)
    assert len(set(first) | set(second)) == 2000


def test_rejected_events_are_not_counted_as_acked() -> None:
    answer = orjson.dumps({"success": True, "rejected": [{"index": 1, "code": "x"}]})
    assert accepted_ids(["a", "b", "c"], answer) == ["a", "c"]
    assert accepted_ids(["a"], b'{"success":true}') == ["a"]


def test_percentile_of_a_locust_histogram() -> None:
    histogram = {1: 90, 5: 9, 40: 1}
    assert percentile(histogram, 0.5) == 1
    assert percentile(histogram, 0.95) == 5
    assert percentile(histogram, 1.0) == 40
    assert percentile({}, 0.5) is None
