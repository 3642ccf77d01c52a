"""What the load generator sends: unique message ids and valid Segment events of every type.

Pure Python with no Locust import (Locust patches the process with gevent), so the runner
and the tests can use it too.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from typing import Any

import orjson

BATCH_SIZE = 100

# Out of every 20 events of a batch; all six record types appear in every batch.
_MIX = {"track": 10, "identify": 2, "page": 3, "screen": 2, "group": 2, "alias": 1}
BATCH_TYPES = [kind for kind, share in _MIX.items() for _ in range(share * BATCH_SIZE // 20)]
random.Random(5).shuffle(BATCH_TYPES)

_TRACK_NAMES = ("Order Completed", "Product Viewed", "Signed Up", "Cart Updated")
_PAGES = ("Home", "Pricing", "Checkout", "Docs")
# What a browser's events carry, so every enricher has work: a user agent, a page with
# campaign parameters and a search-engine referrer, and a public address.
_CONTEXT = {
    "library": {"name": "sluice-bench", "version": "1"},
    "locale": "en-US",
    "userAgent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36"
    ),
    "page": {
        "url": "https://shop.example.com/checkout?utm_source=newsletter&utm_medium=email"
        "&utm_campaign=bench",
        "path": "/checkout",
        "referrer": "https://www.google.com/",
    },
    "ip": "8.8.8.8",
}


class MessageIds:
    """Unique message ids: a random prefix per process and a counter."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new prefix: call it in a forked child, which must not repeat its parent's ids."""
        self.prefix = uuid.uuid4().hex[:12] + "-"
        self.counter = itertools.count()

    def take(self, n: int) -> list[str]:
        prefix, counter = self.prefix, self.counter
        return [f"{prefix}{next(counter)}" for _ in range(n)]


def now_text() -> str:
    """The current time as Segment SDKs write it (ISO-8601, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def make_event(kind: str, message_id: str, now: str, rng: random.Random) -> dict[str, Any]:
    """One valid Segment event of record type `kind` with varied user ids and fields."""
    user = f"user-{rng.randrange(1_000_000)}"
    event: dict[str, Any] = {"type": kind, "messageId": message_id, "timestamp": now}
    if rng.random() < 0.2:
        event["anonymousId"] = f"anon-{rng.randrange(10_000_000)}"
    else:
        event["userId"] = user
    if kind == "track":
        event["event"] = rng.choice(_TRACK_NAMES)
        event["properties"] = {"revenue": rng.randrange(1, 500), "currency": "EUR", "sku": "A-1"}
    elif kind == "identify":
        event["traits"] = {"email": f"{user}@example.com", "plan": rng.choice(("free", "pro"))}
    elif kind in ("page", "screen"):
        name = rng.choice(_PAGES)
        event["name"] = name
        event["properties"] = {"path": "/" + name.lower(), "referrer": ""}
    elif kind == "group":
        event["groupId"] = f"org-{rng.randrange(10_000)}"
        event["traits"] = {"name": "Acme", "employees": rng.randrange(1, 5000)}
    else:  # alias needs both ids
        event["userId"] = user
        event["previousId"] = f"anon-{rng.randrange(10_000_000)}"
    return event


class EventPool:
    """Pre-serialized events, so a request costs the generator little more than a join.

    Each event's JSON is stored without `messageId` and `timestamp`, which every request
    writes fresh; `size` events per record type keep user ids and fields varied.
    """

    def __init__(self, rng: random.Random, size: int = 2000) -> None:
        self.size = size
        self.rng = rng
        self.tails: dict[str, list[bytes]] = {}
        for kind in _MIX:
            tails = []
            for _ in range(size):
                event = make_event(kind, "", "", rng)
                del event["messageId"], event["timestamp"]
                if kind == "track":
                    del event["type"]  # /v1/track implies it; batches keep it (below)
                tails.append(orjson.dumps(event)[1:])  # without the opening brace
            self.tails[kind] = tails
        type_tag = {kind: b'"type":"' + kind.encode() + b'",' for kind in _MIX}
        track = [type_tag["track"] + tail for tail in self.tails["track"]]
        self._by_position = [track if kind == "track" else self.tails[kind] for kind in BATCH_TYPES]
        self._context = orjson.dumps(_CONTEXT)

    def _events(self, ids: list[str], tails: list[list[bytes]], now: bytes) -> list[bytes]:
        start = self.rng.randrange(self.size)
        size = self.size
        stamp = b'","timestamp":"' + now + b'",'
        return [
            b'{"messageId":"' + mid.encode() + stamp + tails[i % len(tails)][(start + i) % size]
            for i, mid in enumerate(ids)
        ]

    def track(self, message_id: str) -> bytes:
        """A `/v1/track` body."""
        now = now_text().encode()
        return self._events([message_id], [self.tails["track"]], now)[0]

    def batch(self, ids: list[str]) -> bytes:
        """A `/v1/batch` body with one event per id, mixing all six record types."""
        now = now_text().encode()
        events = self._events(ids, self._by_position, now)
        return (
            b'{"batch":['
            + b",".join(events)
            + b'],"context":'
            + self._context
            + b',"sentAt":"'
            + now
            + b'"}'
        )


def accepted_ids(ids: list[str], answer: bytes) -> list[str]:
    """`ids` minus the events a 200 answer lists as rejected (a partly valid batch)."""
    if b'"rejected"' not in answer:
        return ids
    rejected = {item["index"] for item in orjson.loads(answer).get("rejected", [])}
    return [mid for i, mid in enumerate(ids) if i not in rejected]
