"""`Producer`: the actor that owns one record type's log on one node and feeds every
sink from it.

Ingress replicas write to segment files of their own (`ingress/writer.py`); the producer
tails them every few milliseconds into its own log (`WriterTail`), and publishes its
fill state for the replicas' back-pressure. For each sink a dispatch loop cuts batches
by that sink's `BatchPolicy`, sends them to the sink's consumer pool through Ray's object
store, and commits the sink's cursor in order once the consumer has written them. A
restarted producer reopens its log and the writers' files and re-dispatches everything
a sink has not committed (at-least-once). Its loops are watched: one that raises is
logged, counted and started again from the last committed cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import ray

from actors.consumer import ConsumerPool
from actors.log import SegmentLog
from actors.tail import WriterTail
from actors.trace import RecentBatches, SentBatch, find
from core import memory, segments
from core.config import BatchPolicy, SinkSpec
from core.model import DEADLETTER
from sinks.base import Batch, Delivered, Rejected, arrow_allocates_with_malloc

logger = logging.getLogger("sluice.producer")

_RETRY_BASE_S = 0.2
_RETRY_CAP_S = 10.0
#: How often the replicas' files are tailed. Each take costs a few file operations per
#: writer and a commit of the positions, whatever it finds: under load, six producers
#: taking every 20 ms spent 0.03 cores more than every 50 ms, which adds little to a
#: batch's age (the replicas have answered already).
_TAIL_S = 0.05
#: How often the fill state is published for the replicas: while it changes, and at
#: least once a second (replicas take a producer silent for 3 s as not running).
_PUBLISH_S = 0.1
_PUBLISH_IDLE_S = 1.0
#: Log fill past which a sink marked `critical: false` dead-letters what it cannot write.
_DROP_AT_FILL = 0.8


@dataclass
class SinkStats:
    committed: int = 0
    batches: int = 0
    retries: int = 0
    deadlettered: int = 0
    dropped: int = 0  # a non-critical sink's events dead-lettered while the log was full
    values_rejected: int = 0  # typed tables: values that did not fit their column
    last_error: str = ""


@dataclass
class _SinkState:
    spec: SinkSpec
    pool: ConsumerPool
    dispatched: int  # next offset to put in a batch
    replay: list[tuple[int, int]] = field(default_factory=list)  # ranges sent before a restart
    done: dict[int, int] = field(default_factory=dict)  # written batches: start -> end
    stats: SinkStats = field(default_factory=SinkStats)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False  # its last write failed


class Producer:
    """Owns the log of one record type (or of the dead letters)."""

    def __init__(
        self,
        record_type: str,
        log_dir: str,
        sinks: list[tuple[SinkSpec, list[str]]],
        *,
        namespace: str,
        capacity_bytes: int,
        segment_bytes: int,
        fsync: bool,
        deadletter: str | None = None,
        supervisor: str | None = None,
        trace_bytes: int = 0,
    ) -> None:
        memory.return_large_frees()
        arrow_allocates_with_malloc()
        self.record_type = record_type
        self.log = SegmentLog(
            Path(log_dir),
            [spec.sink_id for spec, _ in sinks],
            capacity_bytes=capacity_bytes,
            segment_bytes=segment_bytes,
            fsync=fsync,
        )
        self.tail = WriterTail(Path(log_dir))
        self.namespace = namespace
        self.deadletter_name = deadletter  # the dead-letter producer's actor name, if any
        self.supervisor_name = supervisor  # who starts it with the first dead letter
        self.accepted = 0
        self.pending_bytes = 0  # in the replicas' files, not taken yet
        self.loop_restarts = 0
        self.published = 0
        self._tidied_at = 0.0
        self.flushing = False
        self.recent = RecentBatches(trace_bytes)
        self.sinks: dict[str, _SinkState] = {}
        for spec, consumers in sinks:
            cursor = self.log.cursors[spec.sink_id].offset
            self.sinks[spec.sink_id] = _SinkState(
                spec,
                ConsumerPool(consumers, namespace),
                cursor,
                replay=self.log.unfinished_batches(spec.sink_id),
            )
        # What the replicas of an earlier run left is taken before anything new.
        self._take()
        recovered = self.log.end - self.log.start
        if recovered:
            logger.warning("%s: reopened log with %d uncommitted events", record_type, recovered)
        self._publish()
        # Async actors run __init__ inside their event loop.
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._watched("tail", self._tail_loop))]
        for state in self.sinks.values():
            self._loops.append(
                loop.create_task(
                    self._watched(
                        f"dispatch to {state.spec.uri}",
                        functools.partial(self._dispatch, state),
                        functools.partial(self._rewind, state),
                    )
                )
            )

    # -- the replicas' files -------------------------------------------------------

    def _take(self) -> int:
        """Move what the replicas wrote into the log; returns how many events."""
        taken = self.tail.take()
        self.pending_bytes = taken.pending_bytes
        if taken.lengths:
            # Already acknowledged: stored whatever the fill (replicas stop at capacity).
            self.log.append_records(taken.lengths, taken.parts, taken.counts, taken.overheads)
            self._stored(len(taken.lengths))
        # Saved when it moved; once a second anyway, to clear writers that died.
        tidy = self._tidy_due()
        if taken.lengths or taken.positions != self.tail.positions or tidy:
            self.tail.commit(taken.positions, tidy=tidy)
        return len(taken.lengths)

    def _tidy_due(self) -> bool:
        now = time.monotonic()
        if now - self._tidied_at < 1.0:
            return False
        self._tidied_at = now
        return True

    def _stored(self, count: int) -> None:
        self.accepted += count
        for state in self.sinks.values():
            if self.log.end - state.dispatched >= state.spec.policy.max_events:
                state.wake.set()

    async def _tail_loop(self) -> None:
        published_at = 0.0
        last: tuple[int, ...] = ()
        while True:
            self._take()
            since = time.monotonic() - published_at
            now = (self.log.end, self.log.start, self.pending_bytes)
            if since >= _PUBLISH_IDLE_S or (since >= _PUBLISH_S and now != last):
                self._publish()
                published_at, last = time.monotonic(), now
            await asyncio.sleep(_TAIL_S)

    def state(self) -> dict[str, Any]:
        """Fill state and counters, as published in `state.json` (see `core.segments`)."""
        self.published += 1
        return {
            "seq": self.published,
            "published_at": time.time(),
            "record_type": self.record_type,
            "log": self.log.directory.name,
            "accepted": self.accepted,
            "end": self.log.end,
            "in_log": self.log.end - self.log.start,
            "held_bytes": self.log.held_bytes,
            "pending_bytes": self.pending_bytes,
            "capacity_bytes": self.log.capacity_bytes,
            "loop_restarts": self.loop_restarts,
            "sinks": {
                sink_id: {
                    "uri": s.spec.uri,
                    "cursor": self.log.cursors[sink_id].offset,
                    "committed": s.stats.committed,
                    "batches": s.stats.batches,
                    "retries": s.stats.retries,
                    "deadlettered": s.stats.deadlettered,
                    "dropped": s.stats.dropped,
                    "values_rejected": s.stats.values_rejected,
                    "last_error": s.stats.last_error,
                    "lag_s": self._lag_s(s),
                }
                for sink_id, s in self.sinks.items()
            },
        }

    def _lag_s(self, state: _SinkState) -> float:
        cursor = self.log.cursors[state.spec.sink_id].offset
        if cursor >= self.log.end:
            return 0.0
        return round(time.monotonic() - self.log.appended_at(cursor), 3)

    def _publish(self) -> None:
        path = self.log.directory / segments.STATE
        try:
            segments.write_atomic(path, orjson.dumps(self.state()))
        except OSError as exc:  # a full log dir: replicas see the old state, then stale
            logger.error("%s: cannot publish state: %s", self.record_type, exc)

    async def _watched(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        rewind: Callable[[], None] | None = None,
    ) -> None:
        """Run a loop for ever: an exception is logged, counted, and the loop restarted
        (after `rewind`, which may fail the same way and is then tried again)."""
        failed = False
        while True:
            try:
                if failed and rewind is not None:
                    rewind()
                await run()
            except asyncio.CancelledError:
                raise
            except Exception:
                failed = True
                self.loop_restarts += 1
                logger.exception("%s: %s loop failed; restarting it", self.record_type, name)
                await asyncio.sleep(0.5)

    def _rewind(self, state: _SinkState) -> None:
        """Dispatch again from the last committed cursor, in the ranges already sent."""
        state.dispatched = self.log.cursors[state.spec.sink_id].offset
        state.replay = self.log.unfinished_batches(state.spec.sink_id)
        state.done.clear()

    # -- called by other producers -------------------------------------------------

    async def append(self, payloads: list[bytes]) -> int:
        """Store events refused by a sink (this is the dead-letter producer)."""
        first = self.log.append(payloads, force=True)
        self._stored(len(payloads))
        return first

    # -- called by the supervisor --------------------------------------------------

    async def flush(self, timeout_s: float = 120.0) -> bool:
        """Send everything to every sink now and wait for the commits. True when drained."""
        while self._take():  # whatever the replicas wrote before they stopped
            pass
        self.flushing = True
        for state in self.sinks.values():
            state.wake.set()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if all(self.log.cursors[s].offset >= self.log.end for s in self.sinks):
                    return True
                await asyncio.sleep(0.02)
            return False
        finally:
            self.flushing = False

    async def ping(self) -> str:
        return self.log.log_id

    async def trace(self, message_id: str) -> dict[str, Any] | None:
        """Where the event `message_id` is, if this log had it lately (see actors/trace.py)."""
        event, steps = await self.recent.steps(message_id)
        found: dict[str, Any] = {"log": self.log.log_id, "record_type": self.record_type}
        if event is not None:
            return {**found, "event": event, "sinks": steps}
        # Stored, not in a batch yet: the part of the log no sink has been sent.
        start = max(self.log.start, min((s.dispatched for s in self.sinks.values()), default=0))
        if start >= self.log.end:
            return None
        data, offsets = self.log.read_joined(start, self.log.end)
        bounds = offsets.tolist()
        index = find(data.tobytes(), bounds, message_id)
        if index is None:
            return None
        event = orjson.loads(data[bounds[index] : bounds[index + 1]].tobytes())
        return {**found, "event": event, "offset": start + index, "sinks": []}

    # -- dispatch ------------------------------------------------------------------

    def _due(self, state: _SinkState, policy: BatchPolicy) -> bool:
        pending = self.log.end - state.dispatched
        if pending <= 0:
            return False
        if state.replay or self.flushing or pending >= policy.max_events:
            return True
        if time.monotonic() - self.log.appended_at(state.dispatched) >= policy.max_age_s:
            return True
        return self.log.bytes_between(state.dispatched, self.log.end) >= policy.max_bytes

    async def _dispatch(self, state: _SinkState) -> None:
        policy = state.spec.policy
        in_flight = asyncio.Semaphore(policy.max_in_flight)
        tick = min(0.05, max(policy.max_age_s / 4, 0.005))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), tick)
            state.wake.clear()
            while self._due(state, policy):
                await in_flight.acquire()
                start = state.dispatched
                if state.replay:  # the same ranges as before the restart: same batch ids
                    end = state.replay.pop(0)[1]
                else:
                    end = self.log.cut(start, policy.max_events, policy.max_bytes)
                    self.log.record_batch(state.spec.sink_id, start, end)
                batch = Batch.of_buffer(
                    self.log.log_id,
                    self.record_type,
                    start,
                    *self.log.read_joined(start, end),
                    waited_s=time.monotonic() - self.log.appended_at(start),
                )
                state.dispatched = end
                # The object store's copy is the only one outside the log: the producer
                # keeps the reference (for its write and traces), not the batch.
                sent = self.recent.add(state.spec.uri, batch, ray.put(batch))
                del batch
                task = asyncio.get_running_loop().create_task(self._deliver(state, sent))
                task.add_done_callback(lambda _t: in_flight.release())

    async def _deliver(self, state: _SinkState, sent: SentBatch) -> None:
        """Write one batch to its sink, retrying until it is in; then commit in order."""
        attempt = 0
        while True:
            if state.failing and self._may_drop(state):
                # Down, and the log is filling: no attempt, so the log drains fast.
                delivered = await self._drop(state, sent, RuntimeError(state.stats.last_error))
                break
            try:
                delivered = await state.pool.write(sent.ref)
                state.failing = False
                break
            except Exception as exc:  # any failure is retried: the log still holds the batch
                state.failing = True
                state.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                if self._may_drop(state):
                    delivered = await self._drop(state, sent, exc)
                    break
                attempt += 1
                state.stats.retries += 1
                state.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                sent.attempts, sent.last_error = attempt, state.stats.last_error
                delay = random.uniform(0, min(_RETRY_CAP_S, _RETRY_BASE_S * 2**attempt))
                logger.warning(
                    "%s -> %s: batch %s failed (attempt %d), retrying in %.1fs: %s",
                    self.record_type,
                    state.spec.uri,
                    sent.batch_id,
                    attempt,
                    delay,
                    state.stats.last_error,
                )
                await self._back_off(state, delay)
        sent.delivered, sent.delivered_at = delivered, time.time()
        self.recent.trim()
        state.stats.values_rejected += delivered.values_rejected
        if delivered.rejected:
            await self._deadletter(await sent.ref, delivered.rejected, state)
        state.stats.batches += 1
        state.done[sent.start] = sent.end
        self._commit(state)

    async def _back_off(self, state: _SinkState, delay: float) -> None:
        """Wait `delay` before the next attempt, or less if the sink may drop meanwhile."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._may_drop(state):
            await asyncio.sleep(min(0.25, deadline - time.monotonic()))

    def _may_drop(self, state: _SinkState) -> bool:
        """A non-critical sink gives up on a failing batch once the log is this full
        (counting what the replicas wrote and the producer has not taken yet)."""
        held = self.log.held_bytes + self.pending_bytes
        return not state.spec.critical and held >= self.log.capacity_bytes * _DROP_AT_FILL

    async def _drop(self, state: _SinkState, sent: SentBatch, exc: Exception) -> Delivered:
        reason = (
            f"{state.spec.uri} is not critical and was behind while the log was full "
            f"({type(exc).__name__}: {exc}); dropped from this sink"
        )[:500]
        count = sent.end - sent.start
        state.stats.dropped += count
        logger.warning("%s: %d events %s", self.record_type, count, reason)
        return Delivered([Rejected(i, reason) for i in range(count)])

    def _commit(self, state: _SinkState) -> None:
        cursor = self.log.cursors[state.spec.sink_id].offset
        start = cursor
        while cursor in state.done:
            cursor = state.done.pop(cursor)
        if cursor > start:
            state.stats.committed += cursor - start
            self.log.commit(state.spec.sink_id, cursor)

    async def _deadletter(self, batch: Batch, rejected: list[Any], state: _SinkState) -> None:
        payloads = batch.payloads()
        letters = []
        for item in rejected:
            event = orjson.loads(payloads[item.index])
            letters.append(
                orjson.dumps(
                    {
                        "reason": f"{state.spec.uri}: {item.reason}",
                        "source": event.get("source"),
                        "receivedAt": event.get("receivedAt"),
                        "payload": event,
                    }
                )
            )
        state.stats.deadlettered += len(letters)
        if self.deadletter_name is None:
            logger.error(
                "%d events refused by %s and no dead-letter sink", len(letters), state.spec.uri
            )
            return
        while True:
            try:
                producer = ray.get_actor(self.deadletter_name, namespace=self.namespace)
            except ValueError:  # the first dead letter on this node: ask for its producer
                await self._start_deadletter_producer()
                await asyncio.sleep(0.2)
                continue
            try:
                await producer.append.remote(letters)
                return
            except Exception as exc:  # the dead-letter log is full or restarting: wait
                logger.warning("dead-letter append failed, retrying: %s", exc)
                await asyncio.sleep(1.0)

    async def _start_deadletter_producer(self) -> None:
        if self.supervisor_name is None:
            logger.warning("no dead-letter producer and no supervisor to start one; waiting")
            await asyncio.sleep(1.0)
            return
        try:
            supervisor = ray.get_actor(self.supervisor_name, namespace=self.namespace)
            await supervisor.start_producer.remote(
                ray.get_runtime_context().get_node_id(), DEADLETTER
            )
        except Exception as exc:  # the supervisor restarting: asked again
            logger.warning("asking for the dead-letter producer failed: %s", exc)
            await asyncio.sleep(1.0)
