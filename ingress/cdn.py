"""The settings analytics.js loads from Segment's CDN, served by Sluice itself.

`AnalyticsBrowser.load({writeKey, cdnURL})` fetches `{cdnURL}/v1/projects/{key}/settings`
and sends its events where the `Segment.io` integration's `apiHost` points: here, back
to this Sluice. So a site switches from Segment by setting `cdnURL` alone.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

import orjson

#: Browsers and proxies may keep the settings this long.
CACHE_CONTROL = "public, max-age=300"


def public_base(public_url: str, scheme: str, host: str) -> tuple[str, str]:
    """`(protocol, host[:port][/path])` where browsers reach Sluice: `public_url` or the request."""
    if public_url:
        parts = urlsplit(public_url)
        return parts.scheme or "https", (parts.netloc + parts.path).rstrip("/")
    return scheme, host


def settings(write_key: str, protocol: str, host: str) -> dict[str, Any]:
    """Segment-CDN-shaped settings whose only destination is this Sluice."""
    api_host = f"{host}/v1"
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        # The SDK's own delivery metrics come here too (`/v1/m`), counted, never stored.
        "metrics": {"sampleRate": 0.1, "host": api_host},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def encoded(write_key: str, protocol: str, host: str) -> tuple[bytes, str]:
    """The settings as JSON and their ETag."""
    body = orjson.dumps(settings(write_key, protocol, host))
    return body, '"' + hashlib.sha1(body).hexdigest()[:20] + '"'
