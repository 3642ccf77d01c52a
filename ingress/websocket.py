"""`GET /v1/ws`: Segment calls as JSON-RPC 2.0 over one long-lived WebSocket.

Methods `track`, `identify`, `page`, `screen`, `group`, `alias` and `batch` take the
Segment payload as `params` and go through what an HTTP request goes through
(`app.accept_and_store`): the same validation, plan, enrichment, rate limit, dead
letters and counters. A call's response leaves once its events are in the log, as a 200
does; a notification (no `id`) is stored and not answered.

Frames are handled as they arrive, several at once up to `ws_max_in_flight`, so the
calls of one connection share the writer's group commits; each frame starts storing in
the order it arrived, which keeps one user's events in order. Past that limit, and for
the `Retry-After` of a full log, the server stops reading the socket: the client's
sends block on TCP instead of the server buffering them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from core.model import RecordType
from ingress import events
from ingress.app import IngressState, accept_and_store, check_origin, client_ip
from ingress.events import IngressError

logger = logging.getLogger("sluice.ingress")

METHODS = frozenset({*(t.value for t in RecordType), "batch"})
#: Largest frame taken; a bigger one closes the connection with 1009 (uvicorn's
#: `ws_max_size`). A `batch` call carries up to a batch request's 500 KB.
MAX_FRAME_BYTES = events.MAX_BATCH_BYTES + 12 * 1024

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: HTTP status of an `IngressError` -> JSON-RPC error code (the server-error range for
#: what JSON-RPC has no code of its own for). `data` carries the HTTP API's `code`.
RPC_CODES = {
    400: INVALID_PARAMS,
    401: -32001,
    403: -32003,
    408: -32008,
    413: -32013,
    429: -32029,
    503: -32053,
}


def _error(call_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "error": error, "id": call_id})


def _from_ingress(call_id: Any, exc: IngressError) -> tuple[bytes, float]:
    """The error response for `exc`, and how long to stop reading (its Retry-After)."""
    data: dict[str, Any] = {"status": exc.status, "code": exc.code}
    pause = 0.0
    if "Retry-After" in exc.headers:
        pause = float(exc.headers["Retry-After"])
        data["retryAfter"] = pause
    return _error(call_id, RPC_CODES.get(exc.status, -32000), exc.message, data), pause


class Connection:
    """One authenticated WebSocket of source `source`."""

    def __init__(self, state: IngressState, socket: WebSocket, source: str) -> None:
        self.state = state
        self.socket = socket
        self.source = source
        self.ip = client_ip(socket)
        self.slots = asyncio.Semaphore(state.config.ws_max_in_flight)
        self.resume_at = 0.0  # monotonic time before which no frame is read
        self.tasks: set[asyncio.Task[None]] = set()
        self.open = True

    async def serve(self) -> None:
        try:
            while True:
                await self.slots.acquire()
                message = await self.socket.receive()
                if message["type"] == "websocket.disconnect":
                    self.slots.release()
                    break
                wait_s = self.resume_at - time.monotonic()
                if wait_s > 0:  # a log is full: hold this frame, read no more
                    await asyncio.sleep(wait_s)
                frame = message.get("bytes") or (message.get("text") or "").encode()
                task = asyncio.create_task(self._frame(frame))
                self.tasks.add(task)
                task.add_done_callback(self._done)
        except WebSocketDisconnect:
            pass
        finally:
            self.open = False
            # Calls already taken are stored even though nobody will read their answer.
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("websocket frame failed", exc_info=task.exception())

    async def _frame(self, frame: bytes) -> None:
        try:
            calls = events.parse_json_value(frame)
        except IngressError as exc:
            await self._send(_error(None, PARSE_ERROR, exc.message))
            return
        if isinstance(calls, list):
            if not calls:
                await self._send(_error(None, INVALID_REQUEST, "an empty batch of calls"))
                return
            answers = await asyncio.gather(*(self._call(c) for c in calls))
            sent = [a for a in answers if a is not None]
            if sent:
                await self._send(b"[" + b",".join(sent) + b"]")
        else:
            answer = await self._call(calls)
            if answer is not None:
                await self._send(answer)

    async def _call(self, call: Any) -> bytes | None:
        """Handle one JSON-RPC request: its response, or None for a notification."""
        if not isinstance(call, dict) or call.get("jsonrpc") != "2.0":
            call_id = call.get("id") if isinstance(call, dict) else None
            return _error(call_id, INVALID_REQUEST, 'a call is an object with "jsonrpc": "2.0"')
        notification = "id" not in call
        call_id = call.get("id")
        method = call.get("method")
        self.state.counters.add("sluice_websocket_calls", str(method)[:20])
        if method not in METHODS:
            answer = _error(
                call_id,
                METHOD_NOT_FOUND,
                f"no method {str(method)[:60]!r}; use one of {', '.join(sorted(METHODS))}",
            )
        elif not isinstance(call.get("params"), dict):
            answer = _error(call_id, INVALID_PARAMS, "params must be the Segment payload object")
        else:
            answer = await self._store(call_id, method, call["params"])
        return None if notification else answer

    async def _store(self, call_id: Any, method: str, params: dict[str, Any]) -> bytes:
        try:
            status, body = await accept_and_store(self.state, params, method, self.source, self.ip)
        except IngressError as exc:
            answer, pause = _from_ingress(call_id, exc)
            if pause:
                self.resume_at = max(self.resume_at, time.monotonic() + pause)
            return answer
        except Exception:  # a fault of Sluice's own: answered, as HTTP answers 500
            logger.exception("websocket call %s failed", method)
            data = {"status": 500, "code": "internal_error", "retryAfter": 1.0}
            return _error(call_id, INTERNAL_ERROR, "internal error; retry", data)
        if status != 200:
            data = {"status": status, **{k: v for k, v in body.items() if k != "success"}}
            return _error(call_id, INVALID_PARAMS, str(body.get("message", "invalid")), data)
        return orjson.dumps({"jsonrpc": "2.0", "result": body, "id": call_id})

    async def _send(self, data: bytes) -> None:
        if self.open:
            # Gone mid-answer: the calls were stored; the client resends what it saw no
            # answer to, and de-duplication or messageIds take care of the rest.
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.socket.send_text(data.decode())


async def endpoint(socket: WebSocket) -> None:
    """GET /v1/ws: authenticate the upgrade, then serve JSON-RPC calls until it closes."""
    state: IngressState = socket.app.state.ingress
    key = socket.query_params.get("writeKey")
    try:
        source = state.keys.source_of(
            socket.headers.get("authorization"), {"writeKey": key} if key else None
        )
        check_origin(state, socket.headers.get("origin"), source)
    except IngressError as exc:
        state.counters.add("sluice_websocket_connections", "refused")
        await socket.accept()
        await socket.close(1008, f"{exc.code}: {exc.message}"[:120])
        return
    state.counters.add("sluice_websocket_connections", "accepted")
    await socket.accept()
    await Connection(state, socket, source).serve()
