"""`referrer`: medium (search, social, email, internal, unknown) and source (Google,
Facebook, ...) of `context.page.referrer`, into `context.referrer`.

No maintained package fits (referer-parser's data stopped in 2016), so a small table of
the sources that bring most traffic is kept here; anything else is `unknown` with its
host as the source.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

#: Host suffix -> (medium, source). The longest matching suffix wins.
SOURCES: dict[str, tuple[str, str]] = {
    "google.": ("search", "Google"),
    "bing.com": ("search", "Bing"),
    "duckduckgo.com": ("search", "DuckDuckGo"),
    "search.yahoo.com": ("search", "Yahoo!"),
    "yandex.": ("search", "Yandex"),
    "baidu.com": ("search", "Baidu"),
    "ecosia.org": ("search", "Ecosia"),
    "search.brave.com": ("search", "Brave"),
    "naver.com": ("search", "Naver"),
    "facebook.com": ("social", "Facebook"),
    "fb.me": ("social", "Facebook"),
    "instagram.com": ("social", "Instagram"),
    "t.co": ("social", "Twitter"),
    "twitter.com": ("social", "Twitter"),
    "x.com": ("social", "Twitter"),
    "linkedin.com": ("social", "LinkedIn"),
    "lnkd.in": ("social", "LinkedIn"),
    "reddit.com": ("social", "Reddit"),
    "pinterest.com": ("social", "Pinterest"),
    "youtube.com": ("social", "YouTube"),
    "tiktok.com": ("social", "TikTok"),
    "news.ycombinator.com": ("social", "Hacker News"),
    "mail.google.com": ("email", "Gmail"),
    "outlook.live.com": ("email", "Outlook.com"),
    "mail.yahoo.com": ("email", "Yahoo! Mail"),
}


def _host(url: str) -> str:
    try:
        return (urlsplit(url[:2048]).hostname or "").lower()
    except ValueError:
        return ""


@functools.lru_cache(maxsize=8192)
def classify(referrer: str, page_url: str | None = None) -> dict[str, str]:
    """`{"medium", "source"}` of a referrer URL; internal when it is the page's own host.
    Cached (a page's events share it); callers copy before changing the result."""
    host = _host(referrer)
    if not host:
        return {}
    if page_url and _host(page_url) == host:
        return {"medium": "internal", "source": host}
    best: tuple[str, str] | None = None
    best_length = 0
    for suffix, found in SOURCES.items():
        # "google." matches google.com and google.co.uk; others match a host or its subdomains.
        hit = (
            (host.startswith(suffix) or f".{suffix}" in f".{host}")
            if suffix.endswith(".")
            else host == suffix or host.endswith(f".{suffix}")
        )
        if hit and len(suffix) > best_length:
            best, best_length = found, len(suffix)
    if best is None:
        return {"medium": "unknown", "source": host}
    return {"medium": best[0], "source": best[1]}


def enrich_referrer(event: dict[str, Any]) -> dict[str, Any]:
    context = event["context"]
    page = context.get("page")
    if not isinstance(page, dict) or not isinstance(page.get("referrer"), str):
        return event
    page_url = page.get("url") if isinstance(page.get("url"), str) else None
    found = classify(page["referrer"], page_url)
    if found:
        sent = context.get("referrer")
        context["referrer"] = {**(sent if isinstance(sent, dict) else {}), **found}
    return event
