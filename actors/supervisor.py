"""`Supervisor`: creates and watches the producers (one per record type) and the consumer
pools (one per sink), and drives a flush of everything on shutdown.

Every producer is created at start (so no request waits for one), the logs that still
hold events first: a service restarted on an old log directory delivers them first.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import ray

from actors.consumer import Consumer
from actors.producer import Producer
from sinks.deadletter import deadletter_spec
from sluice.config import Config, SinkSpec
from sluice.model import DEADLETTER, RecordType, log_name, record_type_of

logger = logging.getLogger("sluice.supervisor")

NAMESPACE = "sluice"
SUPERVISOR_NAME = "supervisor"
_ACTOR_CPUS = 0.05


def producer_name(log: str) -> str:
    return f"producer:{log}"


def _is_log_name(name: str) -> bool:
    kind, dot, shard = name.partition(".")
    return kind in set(RecordType) and (not dot or shard.isdigit())


class Supervisor:
    """One per service; a named actor ingress replicas look up."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pools: dict[str, list[str]] = {}
        self.consumers: list[Any] = []
        self.producers: dict[str, Any] = {}
        for spec in self._all_sinks():
            names = [f"consumer:{spec.sink_id}:{i}" for i in range(spec.consumers)]
            self.pools[spec.sink_id] = names
            self.consumers += [
                ray.remote(Consumer)
                .options(
                    name=name,
                    namespace=NAMESPACE,
                    num_cpus=_ACTOR_CPUS,
                    max_restarts=-1,
                    max_task_retries=0,
                    scheduling_strategy="SPREAD",
                )
                .remote(spec)
                for name in names
            ]
        log_root = config.log_path
        log_root.mkdir(parents=True, exist_ok=True)
        # Logs left by an earlier run are reopened (and drained) before new traffic.
        if self.config.deadletter_sink:
            self._ensure(DEADLETTER)
        for path in sorted(log_root.iterdir()):
            if path.is_dir() and _is_log_name(path.name):
                self._ensure(path.name)
        # Every producer up front: the first request of a type must not wait for one.
        for kind in RecordType:
            for shard in range(config.shards):
                self._ensure(log_name(kind.value, shard, config.shards))

    def _all_sinks(self) -> list[SinkSpec]:
        dl = self.config.deadletter_sink
        return [*self.config.sinks, *([deadletter_spec(dl)] if dl else [])]

    def _ensure(self, log: str) -> Any:
        """The producer of log `log` (`track`, `track.3`, `_deadletter`), created if new."""
        if log in self.producers:
            return self.producers[log]
        if log == DEADLETTER:
            dl = self.config.deadletter_sink
            assert dl is not None
            specs = [deadletter_spec(dl)]
            deadletter = None
        else:
            specs = list(self.config.sinks)
            deadletter = None
            if self.config.deadletter_sink:
                self._ensure(DEADLETTER)
                deadletter = producer_name(DEADLETTER)
        handle = (
            ray.remote(Producer)
            .options(
                name=producer_name(log),
                namespace=NAMESPACE,
                num_cpus=_ACTOR_CPUS,
                max_restarts=-1,
                max_task_retries=0,  # a call lost in a crash is answered 503, never retried blindly
                max_concurrency=1000,
                scheduling_strategy="SPREAD",  # a record type's shards go to different nodes
            )
            .remote(
                record_type_of(log),
                str(self.config.log_path / log),
                [(spec, self.pools[spec.sink_id]) for spec in specs],
                namespace=NAMESPACE,
                capacity_bytes=self.config.log_capacity_bytes,
                segment_bytes=self.config.segment_bytes,
                fsync=self.config.should_fsync(),
                deadletter=deadletter,
            )
        )
        self.producers[log] = handle
        return handle

    async def producer(self, log: str) -> Any:
        """The producer of log `log` (see `sluice.model.log_name`), created on first use."""
        handle = self._ensure(log)
        await handle.ping.remote()
        return handle

    async def flush(self, timeout_s: float = 120.0) -> bool:
        """Drain every log to every sink; record types first, then the dead letters."""
        order = [t for t in self.producers if t != DEADLETTER]
        ok = all(await asyncio.gather(*(self.producers[t].flush.remote(timeout_s) for t in order)))
        if DEADLETTER in self.producers:
            ok = await self.producers[DEADLETTER].flush.remote(timeout_s) and ok
        return bool(ok)

    async def stats(self) -> list[dict[str, Any]]:
        """Each producer's counters (see `Producer.stats`)."""
        results = await asyncio.gather(
            *(p.stats.remote() for p in self.producers.values()), return_exceptions=True
        )
        return [r for r in results if isinstance(r, dict)]

    async def ready(self) -> bool:
        await asyncio.gather(*(p.ping.remote() for p in self.producers.values()))
        return True


def log_root_holds_events(log_root: Path) -> bool:
    """Whether any log under `log_root` has segment files (used for the startup message)."""
    return any(log_root.glob("*/*.seg")) if log_root.exists() else False
