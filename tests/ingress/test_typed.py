"""The typed path stores what `events.accept` stores, and leaves it every request it
would answer otherwise (pure functions, no Ray)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from core.config import Config
from ingress import events, typed
from ingress.enrich import Enrichment

_NOW = datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=UTC)


class _Clock(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return _NOW


_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
_CONTEXTS = [
    {"library": {"name": "analytics.js", "version": "5"}, "userAgent": _UA, "ip": "8.8.8.8"},
    {"page": {"url": "https://x.example/?utm_source=news", "referrer": "https://www.google.com/"}},
    {"userAgent": "Googlebot/2.1 (+http://www.google.com/bot.html)"},
    {"sluice": {"violations": []}, "locale": "de-DE", "emoji": "\u00e9\u2603"},
    {},
]
_KINDS = ["track", "identify", "page", "screen", "group", "alias"]


def _event(rng: random.Random, n: int, kind: str, typed_body: bool) -> dict[str, Any]:
    event: dict[str, Any] = {"messageId": f"m-{n}"}
    if typed_body:
        event["type"] = kind
    roll = rng.random()
    if roll < 0.5:
        event["userId"] = f"u{rng.randrange(100)}"
    if roll > 0.3 or kind == "alias":
        event["anonymousId"] = rng.choice([f"a{rng.randrange(100)}", None, ""]) or "a"
    if rng.random() < 0.2:
        event["userId" if "userId" not in event else "anonymousId"] = rng.choice([None, ""])
    if kind == "alias":
        event["userId"], event["previousId"] = "u1", "p1"
    if kind == "track":
        event["event"] = rng.choice(["Order Completed", "Signed \u00dcp", 'say "hi"'])
    if kind == "group":
        event["groupId"] = "g1"
    if kind in ("page", "screen") and rng.random() < 0.7:
        event["name"], event["category"] = "Home", rng.choice(["Docs", None])
    for part in ("properties", "traits", "integrations"):
        if rng.random() < 0.5:
            event[part] = rng.choice(
                [{"a": 1, "b": [1, {"c": None}], "big": 2**60}, {}, None, {"x": "\u2028"}]
            )
    if rng.random() < 0.5:
        event["context"] = rng.choice([*_CONTEXTS, None])
    if rng.random() < 0.8:
        event["timestamp"] = rng.choice(
            ["2026-11-26T11:59:59.000Z", "2026-11-26T12:59:59+01:00", "2026-11-26T11:00:00Z"]
        )
    if rng.random() < 0.3:
        event["sentAt"] = "2026-11-26T12:00:00.000Z"
    if rng.random() < 0.2:
        event["originalTimestamp"] = "2026-11-26T11:59:58.000Z"
    if rng.random() < 0.2:
        event["channel"], event["_metadata"] = "client", {"bundled": ["Segment.io"]}
    if rng.random() < 0.02:  # its id derived from its content
        del event["messageId"]
    if rng.random() < 0.01:  # a number as an id: made text
        event["anonymousId"] = 7
    for server_set in ("receivedAt", "source"):
        if rng.random() < 0.1:
            event[server_set] = "forged"
    return event


def _bodies(seed: int, count: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    bodies = []
    for n in range(count):
        if rng.random() < 0.3:
            kind = rng.choice(_KINDS)
            event = _event(rng, n, kind, rng.random() < 0.3)
            if rng.random() < 0.3:
                event["writeKey"] = "k"
            bodies.append((kind, orjson.dumps(event)))
            continue
        batch: dict[str, Any] = {
            "batch": [_event(rng, n * 1000 + i, rng.choice(_KINDS), True) for i in range(20)]
        }
        if rng.random() < 0.7:
            batch["context"] = rng.choice([*_CONTEXTS, None, [1]])
        if rng.random() < 0.5:
            batch["integrations"] = rng.choice([{"All": False}, None])
        if rng.random() < 0.5:
            batch["sentAt"] = "2026-11-26T12:00:01.000Z"
        if rng.random() < 0.2:
            batch["writeKey"] = "k"
        bodies.append(("batch", orjson.dumps(batch)))
    return bodies


def _both(
    endpoint: str, body: bytes, enrichment: Enrichment | None
) -> tuple[events.Parsed | None, events.Parsed]:
    found = typed.decode(body, endpoint)
    record_type = None if endpoint == "batch" else endpoint
    fast = None
    if found is not None:
        times = events.Times(_NOW, found.sent_at)
        prepared = typed.prepare(found, body, times, record_type=record_type, allowed_types=None)
        if prepared is not None:
            fast = typed.accept(prepared, times, source="web", ip="10.0.0.1", enrichment=enrichment)
    data = orjson.loads(body)
    items = data["batch"] if endpoint == "batch" else [data]
    slow = events.accept(
        items,
        record_type=record_type,
        source="web",
        ip="10.0.0.1",
        defaults=data,
        enrichment=enrichment,
    )
    return fast, slow


@pytest.mark.parametrize("seed", range(3))
def test_typed_path_stores_what_accept_stores(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "datetime", _Clock)
    # No enrichment; the default enrichers; and those with crawlers' events dropped.
    enrichment = Enrichment.from_config(Config(bots="drop" if seed == 2 else "flag"), None)
    taken = left = dropped = 0
    for endpoint, body in _bodies(seed, 300):
        fast, slow = _both(endpoint, body, enrichment if seed else None)
        dropped += slow.dropped
        if fast is None:
            left += 1
            continue
        taken += 1
        assert fast.ids == slow.ids
        assert fast.dropped == slow.dropped
        assert fast.rejected == slow.rejected == []
        for kind, payloads in slow.by_type.items():
            ours = fast.by_type[kind]
            assert [orjson.loads(p) for p in ours] == [orjson.loads(p) for p in payloads]
            # The partition key where sinks read it: the first field.
            assert [p[:12] for p in ours] == [p[:12] for p in payloads]
        assert fast.by_type.keys() == slow.by_type.keys()
    # Most of these are what SDKs send; the rest (an id to derive, a number as an id)
    # are left to `events.accept`.
    assert taken > 150 and left > 20, (taken, left)
    assert (dropped > 0) == (seed == 2)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("track", b'{"userId":"u","event":"e","messageId":"m","unknown":1}'),
        ("track", b'{"userId":5,"event":"e","messageId":"m"}'),
        ("track", b'{"userId":"u","event":"e"}'),  # its id is derived from its content
        ("track", b'{"userId":"u","event":"e","messageId":"m","properties":[1]}'),
        ("track", b'{"userId":"u","event":"e","messageId":"m","timestamp":"yesterday"}'),
        ("track", b'{"userId":"u","event":"e","messageId":"m",\n"properties":{}}'),
        (
            "track",
            b'{"userId":"u","event":"e","messageId":"m","properties":'
            + b"[" * 70
            + b"]" * 70
            + b"}",
        ),
        ("batch", b'{"batch":[{"type":"trak","userId":"u","messageId":"m"}]}'),
        ("batch", b'{"batch":{"type":"track"}}'),
        ("batch", b'{"batch":[{"type":"track","userId":"u","messageId":"m","event":"e"}'),
        ("batch", b"[]"),
    ],
)
def test_what_the_typed_path_leaves_to_accept(endpoint: str, body: bytes) -> None:
    found = typed.decode(body, endpoint)
    if found is not None:
        times = events.Times(_NOW, found.sent_at)
        record_type = None if endpoint == "batch" else endpoint
        assert (
            typed.prepare(found, body, times, record_type=record_type, allowed_types=None) is None
        )


def test_an_event_too_large_once_enriched_is_rejected_with_what_was_sent() -> None:
    big = "x" * (events.MAX_ENRICHED_BYTES - 200)
    body = orjson.dumps(
        {
            "batch": [
                {
                    "type": "track",
                    "userId": "u",
                    "event": "e",
                    "messageId": "m1",
                    "properties": {"big": big},
                },
                {"type": "track", "userId": "u", "event": "e", "messageId": "m2"},
            ],
            "context": {"userAgent": _UA},
        }
    )
    found = typed.decode(body, "batch")
    assert found is not None
    times = events.Times(_NOW, found.sent_at)
    prepared = typed.prepare(found, body, times, record_type=None, allowed_types=None)
    assert prepared is not None
    parsed = typed.accept(prepared, times, source="web", ip=None, enrichment=None)
    assert [r.code for r in parsed.rejected] == ["event_too_large"]
    assert parsed.rejected[0].payload == orjson.loads(body)["batch"][0]
    assert parsed.ids == {"track": ["m2"]}
