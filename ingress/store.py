"""`RayEventStore`: the ingress side of the producers. Events go through the replica's
`MicroBatcher`, one actor call per record type every few milliseconds.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.exceptions import RayActorError, RaySystemError

from actors.log import LogFull
from actors.supervisor import NAMESPACE, SUPERVISOR_NAME
from ingress.batcher import MicroBatcher
from ingress.events import IngressError

#: How long a replica reuses the supervisor's counters for /health and /metrics.
_STATS_TTL_S = 0.5


class RayEventStore:
    """Stores events in the producer actors; maps their failures to retryable 503s."""

    def __init__(self, window_s: float) -> None:
        self._supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
        self._producers: dict[str, Any] = {}
        self.batcher = MicroBatcher(self._store, window_s=window_s)
        self._stats: tuple[float, list[dict[str, Any]]] = (0.0, [])

    async def _store(self, record_type: str, payloads: list[bytes]) -> None:
        producer = self._producers.get(record_type)
        if producer is None:
            producer = await self._supervisor.producer.remote(record_type)
            self._producers[record_type] = producer
        await producer.append.remote(payloads)

    async def append(self, record_type: str, payloads: list[bytes]) -> None:
        try:
            await self.batcher.append(record_type, payloads)
        except LogFull as exc:
            raise IngressError(
                503,
                "log_full",
                f"{record_type} events are not accepted now: {exc}",
                {"Retry-After": "5"},
            ) from exc
        except (RayActorError, RaySystemError) as exc:
            # The producer died before storing: nothing was kept, so the client must retry.
            raise IngressError(
                503,
                "producer_unavailable",
                f"the {record_type} producer is restarting; retry shortly",
                {"Retry-After": "1"},
            ) from exc

    async def stats(self) -> list[dict[str, Any]]:
        at, cached = self._stats
        if time.monotonic() - at > _STATS_TTL_S:
            cached = await self._supervisor.stats.remote()
            self._stats = (time.monotonic(), cached)
        return cached
