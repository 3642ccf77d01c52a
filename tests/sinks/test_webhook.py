"""The webhook sink against a real receiver on loopback (no Ray): Segment's batch shape,
retries on 5xx, 429 and timeouts, dead letters on other 4xx, filters and transform."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from actors.consumer import Consumer
from core.config import SinkSpec
from ingress import events
from sinks.base import Batch
from sinks.webhook import WebhookSink, lanes_of
from tests.receiver import Receiver

POST_EVENTS = 100


def spec(url: str, **options: object) -> SinkSpec:
    return SinkSpec.parse(f"webhook+{url}", Path.cwd(), {"timeout_s": 1.0, **options})


def batch(n: int, start: int = 0) -> Batch:
    payloads = [
        orjson.dumps(
            {
                "type": "track",
                "event": "Tick" if i % 2 else "Tock",
                "userId": f"u{i % 3}",
                "messageId": f"m{i}",
                "source": "web",
                "properties": {"seq": i},
            }
        )
        for i in range(start, start + n)
    ]
    return Batch.of("log1", "track", start, payloads)


def test_batches_in_segment_shape_with_headers_and_retries() -> None:
    with Receiver([503, 503, 429, "timeout"], hang_s=2.0) as receiver:
        options = {
            "headers": {"Authorization": "Bearer s3cret"},
            "post_lanes": 1,
            "post_events": 100,
        }
        sink = WebhookSink(spec(receiver.url, **options))
        sink.backoff_base_s = 0.01
        delivered = sink.write(batch(250))
    assert delivered.rejected == []
    assert receiver.ids() == [f"m{i}" for i in range(250)]  # in order, once each
    assert receiver.requests == 4 + 3  # three POSTs of at most 100, after four failures
    assert all(h["authorization"] == "Bearer s3cret" for h in receiver.headers)
    assert all(h["content-type"] == "application/json" for h in receiver.headers)
    assert sink.retries == 4
    assert delivered.locations == [f"{receiver.url}: HTTP 200"]


def test_a_4xx_refuses_its_post_for_good_and_the_rest_goes_on() -> None:
    with Receiver([400]) as receiver:
        sink = WebhookSink(spec(receiver.url, post_lanes=1, post_events=POST_EVENTS))
        delivered = sink.write(batch(POST_EVENTS + 10))
    assert [r.index for r in delivered.rejected] == list(range(POST_EVENTS))
    assert "webhook answered 400" in delivered.rejected[0].reason
    assert '"scripted"' in delivered.rejected[0].reason
    assert receiver.ids() == [f"m{i}" for i in range(POST_EVENTS, POST_EVENTS + 10)]


def test_a_receiver_down_for_good_raises_so_the_producer_retries_later() -> None:
    sink = WebhookSink(spec("http://127.0.0.1:9/hook"))
    sink.give_up_after_s = 0.3
    sink.backoff_base_s = 0.01
    with pytest.raises(RuntimeError, match="still failing"):
        sink.write(batch(5))


def double_seq(event: dict[str, object]) -> dict[str, object] | None:
    if event["userId"] == "u2":
        return None
    if event["userId"] == "u1":
        raise ValueError("no u1 here")
    event["properties"] = {"seq": 2 * event["properties"]["seq"]}  # type: ignore[index]
    return event


def test_filters_and_transform_apply_before_the_sink() -> None:
    with Receiver() as receiver:
        consumer = Consumer(
            spec(
                receiver.url,
                filters={"events": ["Tick"]},
                transform="tests.sinks.test_webhook:double_seq",
            )
        )
        delivered = consumer.write(batch(12))
    # Tick events are the odd ones; u2 dropped by the transform, u1 refused by it.
    sent = [(e["messageId"], e["properties"]["seq"]) for e in receiver.events]
    assert sent == [(f"m{i}", 2 * i) for i in range(12) if i % 2 and i % 3 == 0]
    assert sorted(r.index for r in delivered.rejected) == [
        i for i in range(12) if i % 2 and i % 3 == 1
    ]
    assert "no u1 here" in delivered.rejected[0].reason


def _per_user_in_order(receiver: Receiver, users: int) -> None:
    per_user: dict[str, list[int]] = {}
    for event in receiver.events:
        per_user.setdefault(event["userId"], []).append(event["properties"]["seq"])
    assert len(per_user) == users
    assert all(seqs == sorted(seqs) for seqs in per_user.values())


def test_a_sink_keeping_up_posts_one_after_another_in_log_order() -> None:
    with Receiver() as receiver:
        sink = WebhookSink(spec(receiver.url, post_lanes=4, post_events=10))
        for start in range(0, 1200, 300):
            assert sink.write(batch(300, start)).rejected == []
    assert receiver.ids() == [f"m{i}" for i in range(1200)]
    assert receiver.requests == 120 and receiver.most_in_flight == 1


def test_lanes_post_at_once_when_the_sink_falls_behind_and_keep_each_users_order() -> None:
    with Receiver(delay_s=0.02) as receiver:
        sink = WebhookSink(spec(receiver.url, post_lanes=4, post_events=10))
        behind = dataclasses.replace(batch(480), waited_s=sink.behind_s + 1)
        assert sink.write(behind).rejected == []
    assert sorted(receiver.ids()) == sorted(f"m{i}" for i in range(480))
    assert receiver.most_in_flight > 1  # lanes at once (three users, up to three lanes)
    _per_user_in_order(receiver, 3)


def test_a_users_events_share_a_lane_however_their_json_was_written() -> None:
    """Events the ingress stored (keys first, ids nested in properties too), anonymous
    ones, and records of other shapes (dead letters) searched for their key."""
    sent = []
    for i in range(600):
        user = f"user-{i % 50}"
        if i % 3 == 0:
            item = {"type": "track", "event": "E", "properties": {"userId": "x"}, "userId": user}
        elif i % 3 == 1:
            item = {"type": "track", "event": "E", "anonymousId": user, "properties": {"i": i}}
        else:
            item = {"reason": "refused", "payload": {"userId": user}}
        sent.append((user, item))
    stored = [
        events.accept([item], record_type="track", source="web", ip=None).by_type["track"][0]
        if "type" in item
        else orjson.dumps(item)
        for _, item in sent
    ]
    column = Batch.of("log1", "track", 0, stored).events.column(0)
    lanes = lanes_of(column, 4)
    by_user: dict[str, set[int]] = {}
    for (user, _), lane in zip(sent, lanes, strict=True):
        by_user.setdefault(user, set()).add(int(lane))
    assert all(len(lane) == 1 for lane in by_user.values())
    assert len(set(lanes.tolist())) == 4  # 50 users spread over every lane
    assert (lanes_of(column.slice(100, 200), 4) == lanes[100:300]).all()
