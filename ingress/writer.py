"""`SegmentWriter`: a replica appends accepted events straight into shared memory.

Each replica has a segment file of its own per log in its node's log directory (see
`core.segments`). The events of every request that reach it within one turn of the
event loop go out in one `write` per log (a group commit), and each request is
answered only after that write returned. No actor call and no message per request:
the producer of each log tails the files.

Back-pressure without a call either: the producer publishes its fill state in
`state.json`; a replica refuses (503) while that log is full, or while its producer
has not taken anything for a while (or never published: not started) and this replica
has already written a share of the capacity since. A log with no producer yet (the
dead letters', whose producer starts with the first one) is reported to `unowned`,
which asks for one, at most once per `STALE_AFTER_S`. A failed or short write is cut
back to the last whole record and answered 503, so a full disk never leaves half a
record behind an acknowledged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from core import segments
from ingress.events import IngressError

logger = logging.getLogger("sluice.ingress")

#: How long a replica trusts a producer's published state before reading it again.
_STATE_TTL_S = 0.05
#: A producer that has published nothing this long is taken as not running.
STALE_AFTER_S = 3.0


class StoreUnavailable(IngressError):
    """The log cannot take events now; the client should retry after `Retry-After`."""

    def __init__(self, code: str, message: str, retry_after_s: int = 1) -> None:
        super().__init__(503, code, message, {"Retry-After": str(retry_after_s)})


@dataclass
class _Segment:
    number: int
    fd: int
    size: int


@dataclass
class _Group:
    """The events of one log waiting for this loop turn's write."""

    payloads: list[bytes] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


@dataclass
class _Fill:
    read_at: float = 0.0
    asked_at: float = -STALE_AFTER_S  # when `unowned` was last told
    state: dict[str, Any] | None = None
    written_since: int = 0  # bytes this replica wrote since the producer last published


class SegmentWriter:
    """One replica's writer. Use from one event loop (the replica's HTTP server's)."""

    def __init__(
        self,
        log_root: Path,
        *,
        capacity_bytes: int,
        segment_bytes: int,
        fsync: bool = False,
        writer_id: str | None = None,
        unowned: Callable[[str], None] | None = None,
    ) -> None:
        self.log_root = log_root
        self.unowned = unowned
        self.capacity_bytes = capacity_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.writer_id = writer_id or uuid.uuid4().hex[:12]
        self._segments: dict[str, _Segment] = {}
        self._groups: dict[str, _Group] = {}
        self._fills: dict[str, _Fill] = {}
        self._commit_scheduled = False
        self._stats: tuple[float, list[dict[str, Any]]] = (0.0, [])

    # -- EventStore ------------------------------------------------------------------

    async def append(self, log: str, payloads: list[bytes], bulk: bool = False) -> None:
        """Returns once `payloads` are written to this replica's segment of `log`."""
        await self.append_many({log: payloads}, bulk)

    async def append_many(self, by_log: Mapping[str, list[bytes]], bulk: bool = False) -> None:
        """Returns once the payloads of every log are written to this replica's segments
        (one wait for a request's record types). A full log refuses them all."""
        for log in by_log:
            self._check_fill(log)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        for log, payloads in by_log.items():
            group = self._groups.get(log)
            if group is None:
                group = self._groups[log] = _Group()
            group.payloads.extend(payloads)
            group.waiters.append(done)
        if not self._commit_scheduled:
            # Next turn of the loop: the requests that arrived with this one join the write.
            self._commit_scheduled = True
            loop.call_soon(self._commit)
        await done

    async def stats(self) -> list[dict[str, Any]]:
        """The producers' published states (see `Producer.state`), cached for 0.5 s."""
        at, cached = self._stats
        if time.monotonic() - at > 0.5:
            cached = []
            for path in sorted(self.log_root.glob(f"*/{segments.STATE}")):
                try:
                    cached.append(orjson.loads(path.read_bytes()))
                except (OSError, orjson.JSONDecodeError):
                    continue  # being replaced, or gone with its log
            self._stats = (time.monotonic(), cached)
        return cached

    def close(self) -> None:
        for segment in self._segments.values():
            os.close(segment.fd)
        self._segments.clear()

    # -- writing -----------------------------------------------------------------------

    def _commit(self) -> None:
        self._commit_scheduled = False
        groups, self._groups = self._groups, {}
        stamp = time.monotonic_ns()
        # A request waits on every log it wrote to: answered once all are written, with
        # the first failure if one was not.
        failed: dict[asyncio.Future[None], BaseException] = {}
        for log, group in groups.items():
            try:
                self._write(log, segments.encode(group.payloads, stamp))
            except Exception as exc:  # whatever it is, the requests get an answer
                logger.error("cannot append to log %s: %s", log, exc)
                error = _unavailable(log, exc)
                for waiter in group.waiters:
                    failed.setdefault(waiter, error)
        for group in groups.values():
            for waiter in group.waiters:
                if waiter.done():
                    continue  # answered (another log's), or cancelled: its events are written
                refused = failed.get(waiter)
                if refused is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(refused)

    def _write(self, log: str, data: bytes) -> None:
        segment = self._segment(log)
        try:
            written = os.write(segment.fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")
            if self.fsync:
                os.fsync(segment.fd)
        except OSError:
            try:
                os.ftruncate(segment.fd, segment.size)  # back to the last whole record
            except OSError as exc:
                # The file cannot be cut back: the next write goes to the next segment
                # (never an earlier number, which the producer has passed); whatever
                # is past the last whole record here was never acknowledged.
                logger.error("cannot roll back %s: %s", log, exc)
                segment.size = self.segment_bytes
            raise
        segment.size += written
        self._fills.setdefault(log, _Fill()).written_since += written

    def _segment(self, log: str) -> _Segment:
        segment = self._segments.get(log)
        if segment is not None and segment.size < self.segment_bytes:
            return segment
        directory = self.log_root / log / segments.WRITERS / self.writer_id
        if segment is None:
            if not directory.exists():
                # Made whole under a hidden name, then renamed: a producer never sees a
                # writer without its pid (and takes it for a dead one).
                hidden = directory.with_name(f".{self.writer_id}")
                hidden.mkdir(parents=True, exist_ok=True)
                (hidden / "pid").write_text(str(os.getpid()))
                os.rename(hidden, directory)
            number = 0
        else:
            with contextlib.suppress(OSError):  # already closed under us, say
                os.close(segment.fd)
            number = segment.number + 1
        path = directory / segments.segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        segment = self._segments[log] = _Segment(number, fd, os.fstat(fd).st_size)
        return segment

    # -- back-pressure -----------------------------------------------------------------

    def _check_fill(self, log: str) -> None:
        fill = self._fills.get(log)
        if fill is None:
            fill = self._fills[log] = _Fill()
        now = time.monotonic()
        if now - fill.read_at > _STATE_TTL_S:
            fill.read_at = now
            try:
                state = orjson.loads((self.log_root / log / segments.STATE).read_bytes())
            except (OSError, orjson.JSONDecodeError):
                state = None  # no producer yet: the segment files keep the events
            if state is not None and (fill.state is None or state["seq"] != fill.state["seq"]):
                fill.written_since = 0
            fill.state = state
        state = fill.state
        if state is None:
            if self.unowned is not None and now - fill.asked_at >= STALE_AFTER_S:
                fill.asked_at = now
                self.unowned(log)
            if fill.written_since > self.capacity_bytes // 4:
                raise StoreUnavailable(
                    "producer_unavailable",
                    f"the {log} producer has not started yet; retry shortly",
                )
            return
        if state["held_bytes"] + state["pending_bytes"] >= state["capacity_bytes"]:
            raise StoreUnavailable(
                "log_full",
                f"{log} events are not accepted now: the log holds its capacity of "
                f"{state['capacity_bytes']} bytes because a sink is behind or down",
                retry_after_s=5,
            )
        stale = time.time() - state["published_at"] > STALE_AFTER_S
        if stale and fill.written_since > self.capacity_bytes // 4:
            raise StoreUnavailable(
                "producer_unavailable",
                f"the {log} producer is not taking events; retry shortly",
            )


def _unavailable(log: str, exc: Exception) -> StoreUnavailable:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreUnavailable(
            "log_full",
            f"{log} events are not accepted now: the log directory is out of space",
            retry_after_s=5,
        )
    return StoreUnavailable("store_unavailable", f"{log} events cannot be stored now: {exc}")
