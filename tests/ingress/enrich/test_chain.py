"""`Enrichment`: the chain, its remembered results, and what a user enricher sees."""

from __future__ import annotations

from typing import Any

import orjson

from core.config import Config
from ingress import events
from ingress.enrich import Enrichment
from ingress.plans import TrackingPlan
from tests.ingress.enrich.test_useragent import CHROME_WINDOWS, GOOGLEBOT

PAGE = {"url": "https://shop.example.com/?utm_source=ads", "referrer": "https://t.co/x"}


def event(**context: Any) -> dict[str, Any]:
    return {"type": "page", "context": {"userAgent": CHROME_WINDOWS, "page": PAGE, **context}}


def test_the_second_event_gets_what_the_first_did() -> None:
    chain = Enrichment.from_config(Config())
    first, second = chain(event(ip="8.8.8.8")), chain(event(ip="8.8.8.8"))
    assert first == second
    assert first is not None and first["context"]["browser"]["name"] == "Chrome"
    assert first["context"]["location"] == {"country": "US"}
    assert first["context"]["campaign"] == {"source": "ads"}
    assert first["context"]["bot"] is False


def test_what_the_client_sent_still_wins() -> None:
    chain = Enrichment.from_config(Config())
    chain(event(ip="8.8.8.8"))  # remembered
    sent = chain(event(ip="8.8.8.8", campaign={"name": "from the SDK"}))
    assert sent is not None
    assert sent["context"]["campaign"] == {"source": "ads", "name": "from the SDK"}


def test_drop_and_ip_options_hold_for_remembered_events() -> None:
    chain = Enrichment.from_config(Config(bots="drop", geoip_ip="drop"))
    for _ in range(2):
        assert chain(event(userAgent=GOOGLEBOT)) is None
        kept = chain(event(ip="8.8.8.8"))
        assert kept is not None and "ip" not in kept["context"]
        assert kept["context"]["location"] == {"country": "US"}


def test_a_user_enricher_changing_what_it_finds_changes_its_event_only() -> None:
    def rename(e: dict[str, Any]) -> dict[str, Any]:
        e["context"]["browser"]["name"] = "renamed"
        return e

    chain = Enrichment([*Enrichment.from_config(Config()).enrichers, ("rename", rename)], None, 5)
    assert chain(event())["context"]["browser"]["name"] == "renamed"  # type: ignore[index]
    probe = Enrichment.from_config(Config())
    probe._memo = chain._memo  # what the chain remembered is intact
    assert probe(event())["context"]["browser"]["name"] == "Chrome"  # type: ignore[index]


def _stored_batch(chain: Enrichment, items: list[dict[str, Any]], **kw: Any) -> Any:
    sent = {"userAgent": CHROME_WINDOWS, "page": PAGE}
    parsed = events.accept(
        items,
        record_type=None,
        source="web",
        ip="8.8.8.8",
        defaults={"context": sent},
        enrichment=chain,
        **kw,
    )
    stored = [orjson.loads(x) for kind in sorted(parsed.by_type) for x in parsed.by_type[kind]]
    return parsed, stored, sent


def test_a_batch_context_enriched_once_reaches_each_of_its_events_whole() -> None:
    plan = TrackingPlan.compile([("track/Strict.json", '{"required": ["sku"]}')])
    items = [
        {"type": "track", "userId": "u", "event": "A"},
        {"type": "track", "userId": "u", "event": "Strict"},  # a violation: its own context
        {"type": "track", "userId": "u", "event": "B", "context": {"locale": "fr"}},
        {"type": "identify", "userId": "u"},
    ]
    parsed, stored, sent = _stored_batch(Enrichment.from_config(Config()), items, plan=plan)
    assert parsed.accepted == 4
    identify, first, strict, own = stored  # by record type, then as sent
    assert sent == {"userAgent": CHROME_WINDOWS, "page": PAGE}  # the client's intact
    assert first["context"] == identify["context"]
    assert first["context"]["browser"]["name"] == "Chrome"
    assert first["context"]["ip"] == "8.8.8.8" and first["context"]["campaign"] == {"source": "ads"}
    assert strict["context"]["sluice"]["violations"][0]["path"] == "properties"
    assert {k: v for k, v in strict["context"].items() if k != "sluice"} == first["context"]
    assert own["context"] == {"locale": "fr", "ip": "8.8.8.8", "location": {"country": "US"}}


def test_a_batch_context_the_bot_filter_drops_drops_every_event_that_takes_it() -> None:
    items = [{"type": "track", "userId": "u", "event": str(i)} for i in range(3)]
    items.append({"type": "track", "userId": "u", "event": "own", "context": {"locale": "fr"}})
    chain = Enrichment.from_config(Config(bots="drop"))
    sent = {"userAgent": GOOGLEBOT, "page": PAGE}
    parsed = events.accept(
        items, record_type=None, source="web", ip=None, defaults={"context": sent}, enrichment=chain
    )
    assert parsed.dropped == 3 and len(parsed.by_type["track"]) == 1


def test_a_user_enricher_gets_each_event_of_a_batch_with_a_context_of_its_own() -> None:
    seen: list[int] = []

    def count(e: dict[str, Any]) -> dict[str, Any]:
        seen.append(id(e["context"]))
        e["context"]["n"] = len(seen)
        return e

    chain = Enrichment([*Enrichment.from_config(Config()).enrichers, ("count", count)], None, 5)
    items = [{"type": "track", "userId": "u", "event": str(i)} for i in range(3)]
    _, stored, _ = _stored_batch(chain, items)
    assert [e["context"]["n"] for e in stored] == [1, 2, 3]
    assert all(e["context"]["browser"]["name"] == "Chrome" for e in stored)
