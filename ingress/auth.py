"""Write keys: which source a request belongs to. Keys are compared in constant time."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable
from typing import Any

from core.config import WriteKey
from ingress.events import IngressError


class WriteKeys:
    """The configured write keys and their sources."""

    def __init__(self, keys: Iterable[WriteKey]) -> None:
        self._keys = [(k.key.encode(), k.source) for k in keys]

    def source_of(self, authorization: str | None, body: dict[str, Any] | None) -> str:
        """The source for HTTP Basic auth (key as user name) or a body `writeKey`; else 401."""
        key = _basic_user(authorization) if authorization else None
        if key is None and body is not None and isinstance(body.get("writeKey"), str):
            key = body["writeKey"]
        if not key:
            raise IngressError(
                401,
                "missing_write_key",
                "send your write key as the HTTP Basic user name (empty password) "
                "or as 'writeKey' in the body",
            )
        found = self.known(key)
        if found is None:
            raise IngressError(
                401, "invalid_write_key", "the write key is not known to this Sluice"
            )
        return found

    def known(self, key: str) -> str | None:
        """The source of `key`, or None when it is not a configured write key."""
        candidate = key.encode()
        found = None
        for stored, source in self._keys:
            # Check every key, in constant time, so timing tells nothing about them.
            if hmac.compare_digest(stored, candidate) and found is None:
                found = source
        return found


def _basic_user(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise IngressError(
            401, "invalid_authorization", "Authorization header is not valid Basic"
        ) from None
    return decoded.partition(":")[0]
