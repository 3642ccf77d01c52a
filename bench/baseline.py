"""The baseline of every benchmark: a bare uvicorn + Starlette + orjson collector.

It accepts Sluice's endpoints, reads and parses the same bodies (gunzipping them when
`Content-Encoding: gzip`) and answers `200 {"success": true}`, storing nothing: the
ceiling every stage Sluice adds on top spends from. It runs one worker process per core,
as Sluice runs one ingress replica per core.

    python -m bench.baseline --port 8100 [--workers N]
"""

from __future__ import annotations

import argparse
import os
import zlib

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

ENDPOINTS = ("track", "identify", "page", "screen", "group", "alias", "batch", "import")
_SUCCESS = orjson.dumps({"success": True})
_BAD_REQUEST = orjson.dumps({"success": False, "code": "invalid_json", "message": "bad body"})


async def ingest(request: Request) -> Response:
    body = await request.body()
    try:
        if request.headers.get("content-encoding", "").lower() in ("gzip", "x-gzip"):
            body = zlib.decompress(body, 47)  # 47: gzip or zlib header, auto-detected
        data = orjson.loads(body)
    except (zlib.error, orjson.JSONDecodeError):
        return Response(_BAD_REQUEST, 400, media_type="application/json")
    batch = request.url.path.endswith(("/batch", "/import"))
    if not isinstance(data, dict) or (batch and not isinstance(data.get("batch"), list)):
        return Response(_BAD_REQUEST, 400, media_type="application/json")
    return Response(_SUCCESS, media_type="application/json")


async def rpc(socket: WebSocket) -> None:
    """/v1/ws: parse each JSON-RPC call and answer its id, as Sluice answers once stored."""
    await socket.accept()
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
        call = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
        answer = {"jsonrpc": "2.0", "result": {"success": True}, "id": call.get("id")}
        await socket.send_text(orjson.dumps(answer).decode())


async def health(request: Request) -> Response:
    return Response(_SUCCESS, media_type="application/json")


def build_app() -> Starlette:
    """The baseline ASGI app."""
    routes = [Route(f"/v1/{name}", ingest, methods=["POST"]) for name in ENDPOINTS]
    return Starlette(routes=[*routes, Route("/health", health), WebSocketRoute("/v1/ws", rpc)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.baseline", description="Bare uvicorn + Starlette + orjson collector."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: cores)"
    )
    args = parser.parse_args(argv)
    # The fastest event loop and HTTP parser, no per-request logging.
    uvicorn.run(
        "bench.baseline:build_app",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
