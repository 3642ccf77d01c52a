"""CORS for the ingestion endpoints, so web pages on other origins can send events.

Write keys are public in web pages (as at Segment), so any origin may send unless its
source lists `allowed_origins`. A preflight carries no write key, so it is answered for
an origin that any source accepts; the request itself is then checked against its own
source, and a refused origin gets a 403 with no CORS headers. Admin endpoints never
get these headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from core.config import Source

#: How long a browser may cache a preflight (Chrome caps it at two hours).
MAX_AGE_S = 7200
_METHODS = "GET, POST, OPTIONS"
_DEFAULT_HEADERS = "Authorization, Content-Type, Content-Encoding"


class CorsPolicy:
    """Which origins each source accepts, and the headers that say so to a browser."""

    def __init__(self, sources: Iterable[Source]) -> None:
        self._by_source = {s.name: s.allowed_origins for s in sources}
        self._open = any(not origins for origins in self._by_source.values())

    def allows(self, origin: str, source: str | None = None) -> bool:
        """Whether `origin` may send for `source` (for any source when None). An origin
        that is not printable ASCII is no origin a browser sends, and is never echoed."""
        if not _printable_ascii(origin):
            return False
        origin = origin.lower()
        if source is None:
            return self._open or any(
                _matches(origin, patterns) for patterns in self._by_source.values()
            )
        patterns = self._by_source.get(source, ())
        return not patterns or _matches(origin, patterns)

    def headers(self, origin: str) -> dict[str, str]:
        """Headers of an answer to `origin` (already known to be allowed)."""
        # The origin echoed rather than `*`: a fetch with credentials accepts no wildcard.
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    def preflight_headers(self, origin: str, requested_headers: str) -> dict[str, str]:
        """Headers of a preflight answer: methods, headers and how long to cache it."""
        return {
            **self.headers(origin),
            "Access-Control-Allow-Methods": _METHODS,
            # SDKs may add headers of their own (analytics.js's `additionalHeaders`).
            "Access-Control-Allow-Headers": (
                requested_headers if _printable_ascii(requested_headers) else _DEFAULT_HEADERS
            ),
            "Access-Control-Max-Age": str(MAX_AGE_S),
        }


def _printable_ascii(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable()


def _matches(origin: str, patterns: Iterable[str]) -> bool:
    return any(origin == p or ("*" in p and fnmatchcase(origin, p)) for p in patterns)
