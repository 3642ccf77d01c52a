"""`Supervisor`: creates and watches the producers (one per record type per node) and the
consumer pools (one per sink), and drives a flush of everything on shutdown.

Dead letters go under the first file or S3 sink, so that sink's consumers write them
too: no pool of idle consumers (a Ray worker process each) waits for them. A node's
dead-letter producer starts with the first dead letter, not with the node: whoever
writes one (a replica into its segment file, a producer for a sink's refusals) asks
for it with `start_producer`, and a node whose log already holds dead letters (an
earlier run's) gets it at once. Most runs never have one, and its idle process is a
Ray worker of ~70 MiB.

Producers and consumers are detached actors with names: they outlive a supervisor
crash, and a restarted supervisor finds them again by name instead of making new ones.
Ingress replicas never call the supervisor, so requests go on while it restarts.
Every node gets its producers at start, and a node that joins later within seconds.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.consumer import Consumer
from actors.producer import Producer
from core.config import Config
from core.model import DEADLETTER, RecordType
from sinks.deadletter import deadletter_spec

logger = logging.getLogger("sluice.supervisor")

NAMESPACE = "sluice"
SUPERVISOR_NAME = "supervisor"
_ACTOR_CPUS = 0.05
_RECORD_LOGS = frozenset(kind.value for kind in RecordType)
#: How often the supervisor looks for nodes that joined the cluster.
_WATCH_NODES_S = 5.0


def producer_name(node_id: str, log: str) -> str:
    return f"producer:{node_id[:12]}:{log}"


def _get_or_create(cls: type, name: str, options: dict[str, Any], *args: Any, **kw: Any) -> Any:
    """The detached actor `name`: the running one (after a supervisor restart), else new."""
    return (
        ray.remote(cls)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=_ACTOR_CPUS,
            max_restarts=-1,
            **options,
        )
        .remote(*args, **kw)
    )


def alive_nodes() -> list[str]:
    """Ids of the nodes that can run actors."""
    return sorted(
        n["NodeID"]
        for n in ray.nodes()  # type: ignore[no-untyped-call]
        if n["Alive"] and n["Resources"].get("CPU", 0) > 0
    )


class Supervisor:
    """One per service; a named actor, restarted by Ray, that adopts what it finds."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pools: dict[str, list[str]] = {}
        self.consumers: list[Any] = []
        self.producers: dict[tuple[str, str], Any] = {}
        dl = config.deadletter_sink
        for spec in config.sinks:
            names = [f"consumer:{spec.sink_id}:{i}" for i in range(spec.consumers)]
            self.pools[spec.sink_id] = names
            letters = deadletter_spec(spec) if spec is dl else None
            if letters is not None:
                self.pools[letters.sink_id] = names
            self.consumers += [
                _get_or_create(
                    Consumer,
                    name,
                    {"max_task_retries": 0, "scheduling_strategy": "SPREAD"},
                    spec,
                    letters,
                )
                for name in names
            ]
        for node in alive_nodes():
            self._ensure_node(node)
        self._watch = asyncio.get_running_loop().create_task(self._watch_nodes())

    def _ensure_node(self, node: str) -> None:
        """Every producer of `node`; the dead letters' too if its log holds any, or if it
        runs (found after a supervisor restart)."""
        if self.config.deadletter_sink and (node, DEADLETTER) not in self.producers:
            try:
                self.producers[(node, DEADLETTER)] = ray.get_actor(
                    producer_name(node, DEADLETTER), namespace=NAMESPACE
                )
            except ValueError:  # not running
                if log_root_holds_events(self.config.node_log_path(node) / DEADLETTER):
                    self._ensure(node, DEADLETTER)
        for kind in RecordType:
            self._ensure(node, kind.value)

    async def start_producer(self, node: str, log: str) -> None:
        """Start the producer of `log` on `node` if it is not running: something was
        written there that nobody tails (the first dead letter, mostly)."""
        if log in _RECORD_LOGS or (log == DEADLETTER and self.config.deadletter_sink):
            self._ensure(node, log)

    def _ensure(self, node: str, log: str) -> Any:
        """The producer of `log` on `node`, found by name or created."""
        if (node, log) in self.producers:
            return self.producers[(node, log)]
        if log == DEADLETTER:
            dl = self.config.deadletter_sink
            assert dl is not None
            specs = [deadletter_spec(dl)]
            deadletter = None
        else:
            specs = list(self.config.sinks)
            deadletter = producer_name(node, DEADLETTER) if self.config.deadletter_sink else None
        handle = _get_or_create(
            Producer,
            producer_name(node, log),
            {
                "max_task_retries": 0,
                "max_concurrency": 1000,
                # On the node whose replicas write the files it tails.
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False),
            },
            log,
            str(self.config.node_log_path(node) / log),
            [(spec, self.pools[spec.sink_id]) for spec in specs],
            namespace=NAMESPACE,
            capacity_bytes=self.config.log_capacity_bytes,
            segment_bytes=self.config.segment_bytes,
            fsync=self.config.should_fsync(),
            deadletter=deadletter,
            supervisor=SUPERVISOR_NAME,
            trace_bytes=self.config.trace_bytes if self.config.debugger else 0,
        )
        self.producers[(node, log)] = handle
        return handle

    async def _watch_nodes(self) -> None:
        while True:
            await asyncio.sleep(_WATCH_NODES_S)
            try:
                for node in alive_nodes():
                    self._ensure_node(node)
            except Exception:
                logger.exception("watching the cluster's nodes failed; trying again")

    def _alive_producers(self) -> dict[tuple[str, str], Any]:
        alive = set(alive_nodes())
        return {key: p for key, p in self.producers.items() if key[0] in alive}

    async def flush(self, timeout_s: float = 120.0) -> bool:
        """Drain every log to every sink; record types first, then the dead letters."""
        for node in alive_nodes():
            self._ensure_node(node)  # dead letters whose producer was not asked for yet
        first = [p for (_, log), p in self._alive_producers().items() if log != DEADLETTER]
        ok = all(await asyncio.gather(*(p.flush.remote(timeout_s) for p in first)))
        # Read again: refusals met while flushing may have started a dead-letter producer.
        last = [p for (_, log), p in self._alive_producers().items() if log == DEADLETTER]
        ok = all(await asyncio.gather(*(p.flush.remote(timeout_s) for p in last))) and ok
        return bool(ok)

    async def ready(self) -> bool:
        await asyncio.gather(*(p.ping.remote() for p in self._alive_producers().values()))
        return True

    async def shutdown(self) -> None:
        """Stop the detached producers and consumers (after a flush)."""
        self._watch.cancel()
        for actor in [*self.producers.values(), *self.consumers]:
            ray.kill(actor, no_restart=True)


def log_root_holds_events(root: Path) -> bool:
    """Whether `root` (a log, or a directory of logs) holds segment files."""
    if not root.exists():
        return False
    return any(
        any(root.glob(pattern))
        for pattern in ("*.seg", "writers/*/*.seg", "*/*.seg", "*/writers/*/*.seg")
    )
