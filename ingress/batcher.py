"""`MicroBatcher`: gathers the events of concurrent requests, per record type, and stores
them with one actor call per batch. Every request waits for the call that carries its
events, so it is answered only once they are in the producer's log.

Batching adapts to load, as a group commit does: with no call in flight a request's
events go after its window (gathering the requests that arrive meanwhile); while
`max_in_flight` calls are under way, events pile up for the next one. Each actor call
costs both sides about a millisecond of CPU, so fewer, larger calls is what scales.
A request may bring its own window (batch requests wait longer than single events); a
gathering call goes at the earliest deadline of the requests in it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any


class _Pending:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.timer: asyncio.Handle | None = None
        self.due = float("inf")

    def send_by(self, due: float, flush: Callable[[], None]) -> None:
        """Make sure `flush` runs at `due` (loop time) at the latest."""
        # The due time is kept here: for a time already reached, uvloop's `call_at`
        # returns a plain `Handle`, which has no `when()`.
        if self.due <= due:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.due = due
        self.timer = asyncio.get_running_loop().call_at(due, flush)


class MicroBatcher:
    """One per ingress replica. `store(record_type, payloads)` performs the actor call."""

    def __init__(
        self,
        store: Callable[[str, list[bytes]], Awaitable[Any]],
        *,
        window_s: float = 0.0,
        max_in_flight: int = 2,
        max_events: int = 5000,
    ) -> None:
        self._store = store
        self.window_s = window_s
        self.max_in_flight = max_in_flight
        self.max_events = max_events
        self._pending: dict[str, _Pending] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()
        self.calls = 0

    async def append(
        self, record_type: str, payloads: list[bytes], window_s: float | None = None
    ) -> None:
        """Returns once `payloads` are stored; raises what storing raised.

        `window_s` (default: the batcher's) is the longest these events wait to be
        gathered with others before their call goes, when no call is in flight.
        """
        pending = self._pending.get(record_type)
        if pending is None:
            pending = self._pending[record_type] = _Pending()
        pending.payloads.extend(payloads)
        if len(pending.payloads) >= self.max_events:
            self._flush(record_type, pending)
        elif self._in_flight[record_type] < self.max_in_flight:
            due = asyncio.get_running_loop().time() + (
                self.window_s if window_s is None else window_s
            )
            pending.send_by(due, lambda: self._flush(record_type, pending))
        await asyncio.shield(pending.done)

    def _flush(self, record_type: str, pending: _Pending) -> None:
        if self._pending.get(record_type) is not pending:
            return  # already sent
        del self._pending[record_type]
        if pending.timer is not None:
            pending.timer.cancel()
        self._in_flight[record_type] += 1
        asyncio.get_running_loop().create_task(self._send(record_type, pending))

    async def _send(self, record_type: str, pending: _Pending) -> None:
        self.calls += 1
        try:
            await self._store(record_type, pending.payloads)
        except BaseException as exc:
            pending.done.set_exception(exc)
            pending.done.exception()  # marks it retrieved when no request awaits any more
        else:
            pending.done.set_result(None)
        finally:
            self._in_flight[record_type] -= 1
            waiting = self._pending.get(record_type)
            if waiting is not None:
                self._flush(record_type, waiting)
