"""Validation, enrichment and limits of Segment payloads (pure functions, no Ray)."""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime

import orjson
import pytest

from ingress import events
from ingress.events import IngressError


def accept_one(
    event: dict[str, object], record_type: str | None = "track", **kw: object
) -> events.Parsed:
    return events.accept([event], record_type=record_type, source="web", ip="10.0.0.1", **kw)  # type: ignore[arg-type]


def stored(parsed: events.Parsed, record_type: str) -> list[dict[str, object]]:
    return [orjson.loads(p) for p in parsed.by_type[record_type]]


@pytest.mark.parametrize(
    ("record_type", "event", "code"),
    [
        ("track", {"event": "x"}, "missing_field"),
        ("track", {"userId": "u"}, "missing_field"),
        ("track", {"userId": "u", "event": ""}, "missing_field"),
        ("group", {"userId": "u"}, "missing_field"),
        ("alias", {"userId": "u"}, "missing_field"),
        ("alias", {"anonymousId": "a", "previousId": "p"}, "missing_field"),
        ("identify", {"userId": True}, "invalid_field"),
        ("identify", {"userId": "u", "traits": [1]}, "invalid_field"),
        ("page", {"userId": "u", "timestamp": "yesterday"}, "invalid_timestamp"),
        ("page", {"userId": "u", "timestamp": "2026-01-01" + " " * 100}, "invalid_timestamp"),
    ],
)
def test_required_fields_per_type(record_type: str, event: dict[str, object], code: str) -> None:
    parsed = accept_one(event, record_type)
    assert parsed.accepted == 0
    assert [r.code for r in parsed.rejected] == [code]


@pytest.mark.parametrize(
    ("record_type", "event"),
    [
        ("track", {"userId": "u", "event": "Clicked"}),
        ("identify", {"anonymousId": "a", "traits": {"email": "a@b.c"}}),
        ("page", {"userId": 42, "name": "Home"}),
        ("screen", {"userId": "u", "name": "Main"}),
        ("group", {"userId": "u", "groupId": "g"}),
        ("alias", {"userId": "u", "previousId": "old"}),
    ],
)
def test_valid_events_of_every_type_are_accepted(
    record_type: str, event: dict[str, object]
) -> None:
    parsed = accept_one(event, record_type)
    assert parsed.rejected == []
    (out,) = stored(parsed, record_type)
    assert out["type"] == record_type
    assert out["source"] == "web"
    assert out["context"] == {"ip": "10.0.0.1"}


def test_server_fields_and_clock_correction() -> None:
    # The client's clock is 1 hour fast: sentAt and timestamp are both an hour ahead.
    parsed = accept_one(
        {
            "userId": "u",
            "event": "e",
            "timestamp": "2030-01-01T11:00:00Z",
            "sentAt": "2030-01-01T11:00:05Z",
            "writeKey": "secret",
            "context": {"ip": "1.2.3.4"},
        }
    )
    (out,) = stored(parsed, "track")
    received = datetime.fromisoformat(str(out["receivedAt"]))
    timestamp = datetime.fromisoformat(str(out["timestamp"]))
    assert (received - timestamp).total_seconds() == pytest.approx(5, abs=0.002)
    assert out["originalTimestamp"] == "2030-01-01T11:00:00.000Z"
    assert len(str(out["messageId"])) == 36  # generated when missing
    assert "writeKey" not in out  # never stored
    assert out["context"] == {"ip": "1.2.3.4"}  # a client-sent ip is kept


def test_each_event_of_a_batch_gets_its_own_clock_correction() -> None:
    # A request's events share their times' work when they share the texts; one with a
    # time of its own, or with its own sentAt, is worked out for itself.
    sent = "2030-01-01T11:00:05Z"
    items = [
        {"type": "track", "userId": "u", "event": "e", "timestamp": "2030-01-01T11:00:00Z"},
        {"type": "track", "userId": "u", "event": "e", "timestamp": "2030-01-01T11:00:00Z"},
        {"type": "track", "userId": "u", "event": "e", "timestamp": "2030-01-01T10:59:00Z"},
        {
            "type": "track",
            "userId": "u",
            "event": "e",
            "timestamp": "2030-01-01T11:00:00Z",
            "sentAt": "2030-01-01T11:00:02Z",
        },
        {"type": "track", "userId": "u", "event": "e"},
        {"type": "track", "userId": "u", "event": "e", "timestamp": ["not", "a", "time"]},
    ]
    parsed = events.accept(
        items, record_type=None, source="web", ip=None, defaults={"sentAt": sent}
    )
    assert [(r.index, r.code) for r in parsed.rejected] == [(5, "invalid_timestamp")]
    ages = []
    for out in stored(parsed, "track"):
        received = datetime.fromisoformat(str(out["receivedAt"]))
        ages.append((received - datetime.fromisoformat(str(out["timestamp"]))).total_seconds())
    assert ages == pytest.approx([5, 5, 65, 2, 0], abs=0.002)
    assert [out.get("sentAt") for out in stored(parsed, "track")] == [
        "2030-01-01T11:00:05.000Z",
        "2030-01-01T11:00:05.000Z",
        "2030-01-01T11:00:05.000Z",
        "2030-01-01T11:00:02.000Z",
        "2030-01-01T11:00:05.000Z",
    ]


def test_timestamp_defaults_to_received_at_and_naive_times_are_utc() -> None:
    (out,) = stored(accept_one({"userId": "u", "event": "e", "messageId": "m1"}), "track")
    assert out["timestamp"] == out["receivedAt"]
    assert out["messageId"] == "m1"
    (out,) = stored(
        accept_one({"userId": "u", "event": "e", "timestamp": "2024-05-01T10:00:00"}), "track"
    )
    assert out["timestamp"] == "2024-05-01T10:00:00.000Z"


def test_batch_takes_each_type_and_batch_level_context() -> None:
    items = [
        {"type": "track", "userId": "u", "event": "e"},
        {"type": "identify", "userId": "u"},
        {"type": "bogus", "userId": "u"},
        "not an object",
    ]
    parsed = events.accept(
        items,
        record_type=None,
        source="web",
        ip=None,
        defaults={"context": {"library": {"name": "x"}}, "sentAt": datetime.now(UTC).isoformat()},
    )
    assert sorted(parsed.by_type) == ["identify", "track"]
    assert [(r.index, r.code) for r in parsed.rejected] == [
        (2, "invalid_type"),
        (3, "invalid_type"),
    ]
    (out,) = stored(parsed, "track")
    assert out["context"] == {"library": {"name": "x"}}
    letters = [orjson.loads(x) for x in events.deadletters(parsed, "web")]
    assert letters[0]["payload"] == items[2] and "invalid_type" in letters[0]["reason"]


def test_oversize_event_is_rejected() -> None:
    parsed = accept_one({"userId": "u", "event": "e", "properties": {"blob": "x" * 40_000}})
    assert [r.code for r in parsed.rejected] == ["event_too_large"]


def test_gzip_within_limit_and_bomb_refused() -> None:
    body = orjson.dumps({"userId": "u"})
    assert events.decompress(gzip.compress(body), "gzip", 1000) == body
    bomb = gzip.compress(b" " * 10_000_000)
    with pytest.raises(IngressError) as info:
        events.decompress(bomb, "gzip", events.MAX_BATCH_BYTES)
    assert info.value.status == 413
    with pytest.raises(IngressError) as info:
        events.decompress(b"not gzip", "gzip", 1000)
    assert info.value.status == 400
    with pytest.raises(IngressError) as info:
        events.decompress(body, "br", 1000)
    assert info.value.status == 415


@pytest.mark.parametrize("body", [b"", b"{", b"[1,2]", b'"x"', b"\xff\xfe"])
def test_bad_json_bodies(body: bytes) -> None:
    with pytest.raises(IngressError) as info:
        events.parse_json(body)
    assert info.value.status == 400 and info.value.code == "invalid_json"


#: Strings that hold quotes and backslashes, and some that hold brackets too.
_PLAIN = ["", "q", 'x\\"', "\\\\", '\\\\"', "\\n"]
_BRACKETED = [*_PLAIN, "a{", "]", 'x\\"{', '\\"}', "[]"]


def _nest(value: object, rng: random.Random, levels: int, texts: list[str]) -> object:
    """`value` wrapped `levels` times, with `texts`, empty strings and empty containers
    beside it."""
    for _ in range(levels):
        wrap = rng.randrange(5)
        if wrap == 0:
            value = [value]
        elif wrap == 1:
            value = {rng.choice(texts): value, "e": rng.choice(texts)}
        elif wrap == 2:
            value = [1, rng.choice(texts), value, {}, []]
        elif wrap == 3:
            value = {"": value, "k": [rng.choice(texts)]}
        else:
            value = {"z": value}
    return value


@pytest.mark.parametrize("seed", range(4))
def test_nesting_read_off_the_bytes_is_the_parsed_trees(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        texts = rng.choice([_PLAIN, _BRACKETED])
        inner = rng.choice(["", "q", 1, {}, *texts])
        body = orjson.dumps(_nest(inner, rng, rng.randrange(50, 80), texts))
        if rng.random() < 0.5:  # escapes written as \uXXXX too
            body = json.dumps(orjson.loads(body), ensure_ascii=True).encode()
        data = orjson.loads(body)
        for limit in (rng.randrange(40, 80), events.MAX_DEPTH):
            assert events._depth_exceeds(body, data, limit) == events._nested_deeper(data, limit)


def test_long_time_texts_are_refused_without_being_cached() -> None:
    before = events._parsed_time.cache_info().currsize
    for n in range(50):
        parsed = accept_one({"userId": "u", "timestamp": f"{n}" + "x" * 30_000}, "page")
        assert [r.code for r in parsed.rejected] == ["invalid_timestamp"]
    assert events._parsed_time.cache_info().currsize == before


def test_an_event_without_message_id_gets_the_same_id_when_sent_again() -> None:
    item = {"userId": "u", "event": "Clicked", "timestamp": "2026-11-25T10:00:00Z"}
    first = events.accept([dict(item)], record_type="track", source="web", ip=None)
    again = events.accept([dict(item)], record_type="track", source="web", ip=None)
    other = events.accept([{**item, "event": "Other"}], record_type="track", source="web", ip=None)
    ids = [orjson.loads(p.by_type["track"][0])["messageId"] for p in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]
    assert len(ids[0]) == 36


def test_dead_letters_never_hold_the_write_key() -> None:
    parsed = events.accept(
        [{"writeKey": "secret-key", "event": "no user id"}],
        record_type="track",
        source="web",
        ip=None,
    )
    assert parsed.rejected
    assert b"secret-key" not in b"".join(events.deadletters(parsed, "web"))
