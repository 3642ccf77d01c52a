"""`campaign`: `utm_*` parameters of the page URL into `context.campaign`, as Segment's
browser SDK does (`utm_campaign` becomes `name`). What the client sent wins.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_FIELDS = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}


@functools.lru_cache(maxsize=8192)
def campaign_of(url: str) -> dict[str, str]:
    """The campaign fields in a URL's query string (empty when there are none). Cached:
    a page's events share its URL; callers copy before changing the result."""
    if "utm_" not in url:
        return {}
    query = urlsplit(url[:4096]).query
    return {_FIELDS[k]: v for k, v in parse_qsl(query) if k in _FIELDS and v}


def enrich_campaign(event: dict[str, Any]) -> dict[str, Any]:
    context = event["context"]
    page = context.get("page")
    url = page.get("url") if isinstance(page, dict) else None
    search = page.get("search") if isinstance(page, dict) else None
    found = {}
    if isinstance(url, str):
        found = campaign_of(url)
    if not found and isinstance(search, str):
        found = campaign_of("?" + search.lstrip("?"))
    if found:  # a new dict: the cached one is shared
        sent = context.get("campaign")
        context["campaign"] = {**found, **(sent if isinstance(sent, dict) else {})}
    return event
