"""`Enrichment`: the chain, its remembered results, and what a user enricher sees."""

from __future__ import annotations

from typing import Any

from core.config import Config
from ingress.enrich import Enrichment
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
