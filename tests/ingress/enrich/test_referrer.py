"""`referrer`: medium and source of real referrer URLs."""

from __future__ import annotations

import pytest

from ingress.enrich.referrer import classify, enrich_referrer


@pytest.mark.parametrize(
    ("referrer", "medium", "source"),
    [
        ("https://www.google.com/", "search", "Google"),
        ("https://www.google.co.uk/search?q=shoes", "search", "Google"),
        ("https://www.bing.com/search?q=shoes", "search", "Bing"),
        ("https://duckduckgo.com/", "search", "DuckDuckGo"),
        ("https://l.facebook.com/l.php?u=https%3A%2F%2Fshop.example.com", "social", "Facebook"),
        ("https://t.co/AbCdEf", "social", "Twitter"),
        ("https://www.linkedin.com/feed/", "social", "LinkedIn"),
        ("https://mail.google.com/mail/u/0/", "email", "Gmail"),
        ("https://blog.someone.net/post", "unknown", "blog.someone.net"),
    ],
)
def test_known_sources(referrer: str, medium: str, source: str) -> None:
    assert classify(referrer) == {"medium": medium, "source": source}


def test_internal_referrers_and_the_event_field() -> None:
    page = {"url": "https://shop.example.com/cart", "referrer": "https://shop.example.com/"}
    event = enrich_referrer({"context": {"page": page}})
    assert event["context"]["referrer"] == {"medium": "internal", "source": "shop.example.com"}
    assert "referrer" not in enrich_referrer({"context": {"page": {"referrer": ""}}})["context"]
