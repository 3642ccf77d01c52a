"""The live debugger (`/debugger`), its stream and stats, and `/v1/trace/{messageId}`.

Watching costs nothing when nobody watches: the request path does not know the debugger
exists. An open page's stream reads the segment files the node's replicas append to
(`core.segments`), from where they were when the page connected, and sends a sample of
what it finds: at most `STREAM_EVENTS_PER_S` events a second (newest first), counting
the rest as dropped from view. Rejected events are the dead-letter log's records.

Access: the admin token, as `?token=` on the page's first load (then an HttpOnly
cookie), or `Authorization: Bearer TOKEN`. Write keys never open it.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from core import segments
from core.model import DEADLETTER

STATIC = Path(__file__).with_name("static")
COOKIE = "sluice_admin"
STREAM_TICK_S = 0.25
STREAM_EVENTS_PER_S = 100
#: Most records looked at per tick; past it a busy log's records count as dropped unread.
STREAM_SCAN_PER_TICK = 20_000

#: Asks the producers of this node where an event is (None: this node's producers have
#: not seen it lately). Given by the deployment, which knows Ray.
Tracer = Callable[[str], Awaitable[list[dict[str, Any]]]]


def authorized(request: Request, token: str) -> bool:
    """The request carries the admin token (query, cookie or Bearer header)."""
    offered = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        offered = header[7:].strip()
    return bool(token) and hmac.compare_digest(offered.encode(), token.encode())


def unauthorized() -> Response:
    body = {
        "success": False,
        "code": "admin_token_required",
        "message": "open /debugger?token=ADMIN_TOKEN (printed by sluice serve), or send "
        "Authorization: Bearer ADMIN_TOKEN; write keys do not open it",
    }
    return Response(orjson.dumps(body), 401, media_type="application/json")


def page(request: Request, token: str) -> Response:
    """GET /debugger (authorized): the page; a `?token=` sets the cookie the page's
    requests carry."""
    response = Response((STATIC / "debugger.html").read_bytes(), media_type="text/html")
    if request.query_params.get("token"):
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def script() -> Response:
    """GET /debugger/app.js: the page's script (nothing secret in it)."""
    return Response((STATIC / "debugger.js").read_bytes(), media_type="text/javascript")


class Filters:
    """What the page asked to see: record type, source, event name, text."""

    def __init__(self, query: Any) -> None:
        self.type = query.get("type") or ""
        self.source = query.get("source") or ""
        self.event = query.get("event") or ""
        self.text = (query.get("q") or "").encode()

    def logs(self, log_root: Path) -> list[Path]:
        names = sorted(os.listdir(log_root))  # a type asked for is one of them, never a path
        chosen = [n for n in names if n == self.type] if self.type else names
        return [log_root / n for n in chosen if (log_root / n / segments.WRITERS).is_dir()]

    def keeps(self, item: dict[str, Any]) -> bool:
        if self.source and item.get("source") != self.source:
            return False
        return not self.event or item.get("event") == self.event


def _summary(log: str, payload: bytes) -> dict[str, Any]:
    """What the page lists of one record: an event, or a dead letter (`reason`, `payload`,
    `source`, `receivedAt`) shown as its rejected event."""
    record: dict[str, Any] = orjson.loads(payload)
    event, rejected = record, None
    if log == DEADLETTER:
        rejected = record.get("reason", "")
        original = record.get("payload")
        event = original if isinstance(original, dict) else {"payload": original}
    context = event.get("context")
    sluice = context.get("sluice") if isinstance(context, dict) else None
    return {
        "rejected": rejected,
        "type": event.get("type", log if rejected is None else "?"),
        "event": event.get("event") or event.get("name"),
        "user": event.get("userId") or event.get("anonymousId"),
        "source": record.get("source"),
        "receivedAt": record.get("receivedAt"),
        "messageId": event.get("messageId"),
        "violations": sluice.get("violations") if isinstance(sluice, dict) else None,
        "json": event,
    }


class SegmentWatch:
    """New records in the node's replica segment files since the watch began."""

    def __init__(self, log_root: Path, filters: Filters) -> None:
        self.log_root = log_root
        self.filters = filters
        self.offsets: dict[Path, int] = {}
        self.poll(skip=True)

    def poll(self, skip: bool = False) -> list[tuple[str, bytes]]:
        """(log, payload) of records appended since the last poll (none when `skip`)."""
        found: list[tuple[str, bytes]] = []
        for log_dir in self.filters.logs(self.log_root):
            for path in sorted(log_dir.glob(f"{segments.WRITERS}/*/*{segments.SUFFIX}")):
                start = self.offsets.get(path, 0)
                try:
                    with path.open("rb") as f:
                        f.seek(start)
                        data = f.read() if not skip else b""
                        end = f.tell() if not skip else f.seek(0, os.SEEK_END)
                except FileNotFoundError:  # taken and deleted by the producer meanwhile
                    self.offsets.pop(path, None)
                    continue
                if skip:
                    self.offsets[path] = end
                    continue
                records, ends = segments.decode(data)
                self.offsets[path] = start + (ends[-1] if ends else 0)
                found += [(log_dir.name, payload) for _, payload in records]
        return found


async def stream(request: Request, log_root: Path) -> AsyncIterator[bytes]:
    """Server-sent events: one message per tick with a sample of the new events."""
    filters = Filters(request.query_params)
    watch = SegmentWatch(log_root, filters)
    budget = max(1, int(STREAM_EVENTS_PER_S * STREAM_TICK_S))
    yield b"retry: 2000\n\n"
    while not await request.is_disconnected():
        await asyncio.sleep(STREAM_TICK_S)
        records = await asyncio.to_thread(watch.poll)
        dropped = max(0, len(records) - STREAM_SCAN_PER_TICK)
        records = records[-STREAM_SCAN_PER_TICK:]
        if filters.text:
            records = [r for r in records if filters.text in r[1]]
        shown: list[dict[str, Any]] = []
        for log, payload in reversed(records):  # newest first
            if len(shown) >= budget:
                dropped += 1  # not read: counted whether or not it matches the filters
                continue
            try:
                item = _summary(log, payload)
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if filters.keeps(item):
                shown.append(item)
        message = {"events": shown, "dropped": dropped, "at": time.time()}
        yield b"data: " + orjson.dumps(message) + b"\n\n"


def stream_response(request: Request, log_root: Path) -> Response:
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        stream(request, log_root), media_type="text/event-stream", headers=headers
    )


def received_in_files(log_root: Path, message_id: str) -> dict[str, Any] | None:
    """The event if it is still in a replica's segment file (not taken by its producer)."""
    needle = b'"messageId":' + orjson.dumps(message_id)
    for path in log_root.glob(f"*/{segments.WRITERS}/*/*{segments.SUFFIX}"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        if needle not in data:
            continue
        for _, payload in segments.decode(data)[0]:
            if needle in payload:
                return {
                    "log": path.parent.parent.parent.name,
                    "replica": path.parent.name,
                    "file": str(path),
                    "event": orjson.loads(payload),
                }
    return None


async def trace(message_id: str, log_root: Path, tracer: Tracer | None) -> dict[str, Any]:
    """Where the event is: received, stored (log, offset), batched, per sink delivered."""
    steps: list[dict[str, Any]] = []
    event: dict[str, Any] | None = None
    received: dict[str, Any] = {"step": "received"}
    found = await asyncio.to_thread(received_in_files, log_root, message_id)
    if found is not None:
        event = found.pop("event")
        received.update(found)
    for hit in await tracer(message_id) if tracer else []:
        event = event or hit.get("event")
        stored: dict[str, Any] = {"step": "stored", "log": hit["record_type"], "log_id": hit["log"]}
        sinks = hit.get("sinks") or []
        if "offset" in hit:
            stored["offset"] = hit["offset"]
        elif sinks:
            stored["offset"] = sinks[0]["offset"]
        steps.append(stored)
        if not sinks:
            steps.append({"step": "batched", "status": "waiting for the next batch"})
        for sink in sinks:
            steps.append({"step": "batched", "sink": sink["sink"], "batch": sink["batch"]})
            steps.append({"step": sink["status"], **sink})
    if event is not None:
        steps.insert(0, {**received, "receivedAt": event.get("receivedAt")})
    return {"messageId": message_id, "found": event is not None, "event": event, "steps": steps}
