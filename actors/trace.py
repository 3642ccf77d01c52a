"""`RecentBatches`: the batches a producer sent lately and what each sink did with them,
so `/v1/trace/{messageId}` can say where one event is.

Nothing per event: a producer keeps a reference to each batch it dispatched (the
object it put in Ray's object store anyway, for its consumer: no copy of its own) and,
per sink, the outcome of its write, up to `limit_bytes` of batches. A lookup reads those
batches back (without a copy, from the node's object store) and searches them for the
event's `"messageId":"..."` (a C-speed substring search, only when someone asks), newest
first.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from core import model
from sinks.base import Batch, Delivered, offsets_of


@dataclass
class SentBatch:
    """One batch on its way to (or delivered by) one sink: where it is in the log, and
    `ref`, the batch itself (in Ray's object store, for the producer)."""

    sink_uri: str
    log_id: str
    start: int
    end: int
    batch_id: str
    nbytes: int
    ref: Any
    sent_at: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: str = ""
    delivered: Delivered | None = None
    delivered_at: float = 0.0


def needle(message_id: str) -> bytes:
    """The bytes an event with `message_id` holds, as Sluice serialises it."""
    return b'"messageId":' + orjson.dumps(message_id)


def find(data: bytes, offsets: list[int], message_id: str) -> int | None:
    """The index of the event with `message_id` in `data` (events at `offsets`), if any."""
    at = data.rfind(needle(message_id))  # the latest copy, should it be there twice
    return None if at < 0 else bisect.bisect_right(offsets, at) - 1


class RecentBatches:
    """Sent batches, newest last: every batch in flight, and delivered ones up to
    `limit_bytes` of events in all.

    A batch in flight is held by its write anyway, so keeping it costs nothing; a
    delivered batch larger than `limit_bytes` (a Parquet file's 16 MiB of events) is let go
    once delivered, or every producer would hold its last one (tens of MiB each).
    `load` turns an entry's `ref` back into its `Batch` (awaiting a Ray object ref).
    """

    def __init__(
        self, limit_bytes: int, load: Callable[[Any], Awaitable[Batch]] | None = None
    ) -> None:
        self.limit_bytes = limit_bytes
        self.load = load or _awaited
        self.entries: deque[SentBatch] = deque()
        self.bytes = 0

    def add(self, sink_uri: str, batch: Batch, ref: Any) -> SentBatch:
        """Keep `batch` (whose `ref` is held) on its way to `sink_uri`; `batch` itself is
        not kept."""
        nbytes = batch.events.nbytes
        entry = SentBatch(
            sink_uri, batch.log_id, batch.start, batch.end, batch.batch_id, nbytes, ref
        )
        if self.limit_bytes <= 0:
            return entry
        self.entries.append(entry)
        self.bytes += nbytes
        self.trim()
        return entry

    def trim(self) -> None:
        """Forget delivered batches, oldest first, while past `limit_bytes`."""
        if self.bytes <= self.limit_bytes:
            return
        kept: deque[SentBatch] = deque()
        for entry in self.entries:
            if self.bytes > self.limit_bytes and entry.delivered is not None:
                self.bytes -= entry.nbytes
            else:
                kept.append(entry)
        self.entries = kept

    async def steps(self, message_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The event (parsed) and one step per sink batch that holds it, newest first."""
        event: dict[str, Any] | None = None
        steps: list[dict[str, Any]] = []
        for entry in list(reversed(self.entries)):  # a copy: entries change while we wait
            column = (await self.load(entry.ref)).events.column(0)
            data, bounds = column.buffers()[2].to_pybytes(), offsets_of(column).tolist()
            index = find(data, bounds, message_id)
            if index is None:
                continue
            if event is None:
                event = orjson.loads(data[bounds[index] : bounds[index + 1]])
            steps.append(_step(entry, index, event))
        return event, steps


async def _awaited(ref: Any) -> Batch:
    batch: Batch = await ref
    return batch


def _step(entry: SentBatch, index: int, event: dict[str, Any]) -> dict[str, Any]:
    step: dict[str, Any] = {
        "sink": entry.sink_uri,
        "log": entry.log_id,
        "offset": entry.start + index,
        "batch": entry.batch_id,
        "sent_at": _iso(entry.sent_at),
    }
    delivered = entry.delivered
    if delivered is None:
        step["status"] = "retrying" if entry.attempts else "in flight"
        if entry.last_error:
            step["attempts"] = entry.attempts
            step["last_error"] = entry.last_error
        return step
    step["delivered_at"] = _iso(entry.delivered_at)
    for rejected in delivered.rejected:
        if rejected.index == index:
            step.update(status="dead-lettered", reason=rejected.reason)
            return step
    step["status"] = "delivered"
    if delivered.by_index:
        step["location"] = delivered.locations[index]
    else:
        step["location"] = _partition_key(delivered.locations, event)
    return step


def _partition_key(locations: list[str], event: dict[str, Any]) -> str:
    """Of the keys a batch was written to, the one whose partition holds `event`."""
    received = str(event.get("receivedAt", ""))
    if len(received) >= 13:
        day, hour = model.hour_partition(received[:13])
        marker = f"source={event.get('source') or 'default'}/"
        for key in locations:
            if marker in key and f"/dt={day}/hr={hour}/" in key:
                return key
    return locations[0] if len(locations) == 1 else ", ".join(locations)


def _iso(epoch_s: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s)) + f".{epoch_s % 1:.3f}"[2:] + "Z"
    )
