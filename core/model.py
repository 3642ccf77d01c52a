"""The event model: record types and the fields every layer agrees on.

Kept import-light (no pyarrow): ingress replicas, actors and sinks all import it; the
Arrow conversion lives with the sinks (`sinks/columns.py`).
"""

from __future__ import annotations

import enum
from typing import Any


class RecordType(enum.StrEnum):
    """The Segment record types; each has its own producer and log."""

    TRACK = "track"
    IDENTIFY = "identify"
    PAGE = "page"
    SCREEN = "screen"
    GROUP = "group"
    ALIAS = "alias"


#: Where events rejected by validation or by a sink are kept, with the reason.
DEADLETTER = "_deadletter"


def partition_key(event: dict[str, Any]) -> str:
    """The key that keeps one user's events in order: userId, else anonymousId, else messageId."""
    for key in ("userId", "anonymousId", "messageId"):
        value = event.get(key)
        if value:
            return str(value)
    return ""


def hour_partition(received_at: str) -> tuple[str, str]:
    """`("YYYY-MM-DD", "HH")` of a server-written `receivedAt` (always ISO-8601 in UTC)."""
    return received_at[:10], received_at[11:13]
