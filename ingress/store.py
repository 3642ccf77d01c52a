"""`RayEventStore`: the ingress side of the producers. Events go through the replica's
`MicroBatcher`, one actor call per record type every few milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import ray
from ray.exceptions import RayActorError, RaySystemError

from actors.log import LogFull
from actors.supervisor import NAMESPACE, SUPERVISOR_NAME
from ingress.batcher import MicroBatcher
from ingress.events import IngressError
from sluice import model
from sluice.model import DEADLETTER

#: How long a replica reuses the supervisor's counters for /health and /metrics.
_STATS_TTL_S = 0.5


class RayEventStore:
    """Stores events in the producer actors; maps their failures to retryable 503s.

    With `shards > 1` each record type has that many producers, and an event goes to
    the one its partition key hashes to, so one user's events keep one log and order.
    """

    def __init__(
        self,
        window_s: float,
        shards: int = 1,
        in_flight: int = 1,
        bulk_window_s: float | None = None,
    ) -> None:
        self._supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
        self._producers: dict[str, Any] = {}
        self.shards = shards
        self.bulk_window_s = window_s if bulk_window_s is None else bulk_window_s
        self.batcher = MicroBatcher(self._store, window_s=window_s, max_in_flight=in_flight)
        self._stats: tuple[float, list[dict[str, Any]]] = (0.0, [])

    async def _store(self, log: str, payloads: list[bytes]) -> None:
        producer = self._producers.get(log)
        if producer is None:
            producer = await self._supervisor.producer.remote(log)
            self._producers[log] = producer
        await producer.append.remote(payloads)

    def _by_log(self, record_type: str, payloads: list[bytes]) -> dict[str, list[bytes]]:
        if self.shards <= 1 or record_type == DEADLETTER:
            return {record_type: payloads}
        logs: dict[str, list[bytes]] = {}
        for payload in payloads:
            shard = model.shard_of(model.partition_key(orjson.loads(payload)), self.shards)
            logs.setdefault(model.log_name(record_type, shard, self.shards), []).append(payload)
        return logs

    async def append(self, record_type: str, payloads: list[bytes], bulk: bool = False) -> None:
        window_s = self.bulk_window_s if bulk else None
        try:
            await asyncio.gather(
                *(
                    self.batcher.append(log, part, window_s)
                    for log, part in self._by_log(record_type, payloads).items()
                )
            )
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
