"""A real HTTP receiver for webhook tests: a Starlette app on uvicorn in a thread, on
loopback, that can fail its first requests, answer 429, time out once, or refuse."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.service import free_port


class Receiver:
    """POST /hook takes `{"batch": [...]}`; `script` holds the answers to give first
    (an int status, or "timeout" to sit on the request past the sender's timeout);
    `delay_s` is how long each answer takes, as a receiver across a network."""

    def __init__(
        self, script: list[int | str] | None = None, hang_s: float = 3.0, delay_s: float = 0.0
    ) -> None:
        self.script = list(script or [])
        self.hang_s = hang_s
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0  # POSTs being answered at once
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        self.server = uvicorn.Server(
            uvicorn.Config(app, port=self.port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def hook(self, request: Request) -> Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Request) -> Response:
        self.requests += 1
        self.headers.append(dict(request.headers))
        body = await request.body()
        if self.script:
            step = self.script.pop(0)
            if step == "timeout":
                await asyncio.sleep(self.hang_s)
                return Response(status_code=504)
            if step == 429:
                return Response(status_code=429, headers={"Retry-After": "0.2"})
            assert isinstance(step, int)
            return Response(b'{"error":"scripted"}', status_code=step)
        self.events += orjson.loads(body)["batch"]
        return Response(b'{"ok":true}', media_type="application/json")

    def __enter__(self) -> Receiver:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def ids(self) -> list[str]:
        return [str(e["messageId"]) for e in self.events]
