"""An enricher of your own: an event dict in, the event out (or None to drop it).

    # sluice.yaml
    enrich: [useragent, campaign, referrer, bot, geoip, "enrichers:add_team"]

    PYTHONPATH=examples sluice serve --config sluice.yaml

The module must be importable where Sluice runs (installed, or on PYTHONPATH); Sluice
loads it at start and says so clearly when it cannot. It runs in the request path of
every ingress replica, after the built-in enrichers listed before it: keep it fast. An
exception is counted in /metrics (sluice_enrich_errors_total) and the event is stored
without this enricher's fields.
"""

from __future__ import annotations

from typing import Any

#: Which team owns which product area, by the first part of the page path.
TEAMS = {"checkout": "payments", "search": "discovery", "account": "identity"}


def add_team(event: dict[str, Any]) -> dict[str, Any]:
    """Add `context.team` from the page path (`/checkout/...` -> `payments`)."""
    page = event["context"].get("page") or {}
    path = page.get("path") if isinstance(page, dict) else None
    if isinstance(path, str):
        area = path.strip("/").split("/")[0]
        if area in TEAMS:
            event["context"]["team"] = TEAMS[area]
    return event
