"""`useragent` on real user-agent strings."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.enrich.useragent import enrich_useragent

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def enriched(user_agent: str, **context: Any) -> dict[str, Any]:
    event = {"type": "page", "context": {"userAgent": user_agent, **context}}
    return enrich_useragent(event)["context"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("user_agent", "browser", "os", "device"),
    [
        (CHROME_WINDOWS, "Chrome", "Windows", None),
        (SAFARI_IOS, "Mobile Safari", "iOS", "iPhone"),
        (FIREFOX_LINUX, "Firefox", "Linux", None),
        (GOOGLEBOT, "Googlebot", None, "Spider"),
    ],
)
def test_browsers_systems_and_devices(
    user_agent: str, browser: str, os: str | None, device: str | None
) -> None:
    context = enriched(user_agent)
    assert context["browser"]["name"] == browser
    assert (context.get("os") or {}).get("name") == os
    assert (context.get("device") or {}).get("model") == device


def test_versions_and_what_the_client_sent_wins() -> None:
    context = enriched(CHROME_WINDOWS, os={"name": "Windows", "version": "11"})
    assert context["browser"]["version"] == "120.0"
    assert context["os"] == {"name": "Windows", "version": "11"}


def test_no_user_agent_adds_nothing() -> None:
    event = {"type": "track", "context": {"ip": "8.8.8.8"}}
    assert enrich_useragent(event) == {"type": "track", "context": {"ip": "8.8.8.8"}}
