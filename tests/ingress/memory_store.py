"""`MemoryEventStore`: the app's `EventStore` seam kept in a dict, for tests without Ray."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from core.model import DEADLETTER
from ingress.events import IngressError


class MemoryEventStore:
    """Keeps every appended payload per record type; can be told to answer 503 (full)."""

    def __init__(self, capacity_events: int = 1_000_000) -> None:
        self.payloads: dict[str, list[bytes]] = {}
        self.capacity_events = capacity_events

    async def append_many(self, by_log: Mapping[str, list[bytes]], bulk: bool = False) -> None:
        for record_type, payloads in by_log.items():  # a full log refuses them all
            if len(self.payloads.get(record_type, [])) + len(payloads) > self.capacity_events:
                raise IngressError(
                    503,
                    "log_full",
                    f"{record_type} events are not accepted now",
                    {"Retry-After": "5"},
                )
        for record_type, payloads in by_log.items():
            self.payloads.setdefault(record_type, []).extend(payloads)

    async def stats(self) -> list[dict[str, Any]]:
        return [
            {
                "record_type": kind,
                "log": kind,
                "accepted": len(held),
                "in_log": len(held),
                "held_bytes": sum(map(len, held)),
                "capacity_bytes": 1 << 40,
                "loop_restarts": 0,
                "sinks": {},
            }
            for kind, held in self.payloads.items()
        ]

    def events(self, record_type: str | None = None) -> list[dict[str, Any]]:
        """The stored events (of one record type, or all but dead letters), decoded."""
        kinds = [record_type] if record_type else [k for k in self.payloads if k != DEADLETTER]
        return [orjson.loads(p) for k in kinds for p in self.payloads.get(k, [])]

    def deadletters(self) -> list[dict[str, Any]]:
        return self.events(DEADLETTER)
