"""`campaign`: utm parameters of the page URL."""

from __future__ import annotations

from ingress.enrich.campaign import enrich_campaign


def test_utm_parameters_become_context_campaign() -> None:
    url = (
        "https://shop.example.com/sale?utm_source=newsletter&utm_medium=email"
        "&utm_campaign=black%20friday&utm_term=shoes&utm_content=hero&other=1"
    )
    event = enrich_campaign({"context": {"page": {"url": url}}})
    assert event["context"]["campaign"] == {
        "source": "newsletter",
        "medium": "email",
        "name": "black friday",
        "term": "shoes",
        "content": "hero",
    }


def test_the_clients_own_campaign_wins_and_no_utm_adds_nothing() -> None:
    url = "https://shop.example.com/?utm_source=ads&utm_campaign=x"
    sent = {"page": {"url": url}, "campaign": {"name": "from the SDK"}}
    assert enrich_campaign({"context": sent})["context"]["campaign"] == {
        "source": "ads",
        "name": "from the SDK",
    }
    plain = {"context": {"page": {"url": "https://shop.example.com/cart"}}}
    assert "campaign" not in enrich_campaign(plain)["context"]
