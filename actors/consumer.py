"""`Consumer`: an actor that writes batches to one sink; `ConsumerPool` spreads batches.

Consumers are restartable actors (Ray `max_restarts`), so a dead one comes back on its
own; the pool sends a batch whose consumer died to the next one. Writes are idempotent
per batch id, so a batch written twice (once by a consumer that died before replying)
replaces itself.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import ray

from core import memory
from core.config import SinkSpec
from core.model import DEADLETTER
from sinks import open_sink
from sinks.base import Batch, Delivered, arrow_allocates_with_malloc
from sinks.select import Selector, mapped_back

logger = logging.getLogger("sluice.consumer")


class Consumer:
    """Holds one open sink and writes the batches it is given; with `deadletters` (the
    dead-letter sink under this one), the dead-letter log's batches go there."""

    def __init__(self, spec: SinkSpec, deadletters: SinkSpec | None = None) -> None:
        # Not `memory.return_large_frees`: each batch's large buffers would then be mapped
        # and unmapped, a page fault per 4 KiB touched (a fifth of the work on a file
        # batch); the heap keeps them for the next batch instead.
        memory.keep_batch_heap()
        arrow_allocates_with_malloc()
        self.spec = spec
        self.sink = open_sink(spec)
        self.deadletters = open_sink(deadletters) if deadletters is not None else None
        self.selector = Selector.for_spec(spec)
        self.written = 0

    def write(self, batch: Batch) -> Delivered:
        if batch.record_type == DEADLETTER:
            if self.deadletters is None:
                raise RuntimeError(f"{self.spec.uri}: this consumer has no dead-letter sink")
            delivered = self.deadletters.write(batch)
        elif self.selector is None:
            delivered = self.sink.write(batch)
        else:
            chosen, kept, failed = self.selector.select(batch)
            written = self.sink.write(chosen) if kept else Delivered()
            delivered = mapped_back(written, kept, failed, batch.end - batch.start)
        self.written += batch.end - batch.start
        return delivered

    def ping(self) -> int:
        return self.written


class ConsumerPool:
    """Round-robin over one sink's consumers; a failed call moves to the next consumer.

    Consumers are named actors looked up on first use, so a restarted producer finds
    the same pool without holding handles in its constructor arguments.
    """

    def __init__(self, names: list[str], namespace: str) -> None:
        if not names:
            raise ValueError("a consumer pool needs at least one consumer")
        self.names = names
        self.namespace = namespace
        self._handles: dict[str, Any] = {}
        self._next = itertools.cycle(names)

    async def write(self, batch_ref: Any) -> Delivered:
        """Write through one consumer; raises what the sink or Ray raised (caller retries)."""
        name = next(self._next)
        consumer = self._handles.get(name)
        if consumer is None:
            consumer = self._handles[name] = ray.get_actor(name, namespace=self.namespace)
        result: Delivered = await consumer.write.remote(batch_ref)
        return result
