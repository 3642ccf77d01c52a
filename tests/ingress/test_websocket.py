"""`/v1/ws` over a real uvicorn server (websockets) with a real `SegmentWriter` on disk:
JSON-RPC answers, errors and close codes, and what reached the segment files."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from actors.tail import WriterTail
from core import config, segments
from core.model import DEADLETTER
from ingress import websocket
from ingress.app import build_app
from ingress.writer import SegmentWriter
from tests.ingress.test_writer import publish
from tests.service import free_port

KEY = "ws-key"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}


class Server:
    """The ingress app on uvicorn in a thread, writing segment files under `root`."""

    def __init__(self, root: Path, yaml_text: str = "") -> None:
        (root / "sluice.yaml").write_text(yaml_text)
        cfg = config.load(
            str(root / "sluice.yaml"), write_keys=[f"{KEY}:app"], environ={}, base_dir=root
        )
        self.root = root / "log"
        self.writer = SegmentWriter(self.root, capacity_bytes=1 << 26, segment_bytes=1 << 22)
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/v1/ws"
        self.server = uvicorn.Server(
            uvicorn.Config(
                build_app(cfg, self.writer),
                port=self.port,
                ws="websockets-sansio",
                ws_max_size=websocket.MAX_FRAME_BYTES,
                lifespan="off",
                log_level="warning",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.writer.close()

    def stored(self, log: str = "track") -> list[dict[str, Any]]:
        """Every event in `log`'s segment files, in the order the producer takes them."""
        records, _ = segments.decode(b"".join(WriterTail(self.root / log).take().parts))
        return [orjson.loads(payload) for _, payload in records]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with Server(tmp_path) as running:
        yield running


def call(method: str, params: dict[str, Any], call_id: Any = 1) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": call_id})


def track(user: str, n: int) -> dict[str, Any]:
    return {"userId": user, "event": "Tapped", "properties": {"n": n}, "messageId": f"{user}-{n}"}


def exchange(server: Server, *frames: bytes | str, answers: int | None = None) -> list[Any]:
    """Send `frames` on one connection and read `answers` answers (default: one per frame)."""

    async def run() -> list[Any]:
        async with connect(server.url, additional_headers=AUTH) as ws:
            for frame in frames:
                await ws.send(frame)
            count = len(frames) if answers is None else answers
            return [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(count)]

    return asyncio.run(run())


def test_pipelined_calls_are_answered_after_storage_and_stored_in_order(server: Server) -> None:
    async def run() -> list[Any]:
        async with connect(server.url, additional_headers=AUTH) as ws:
            for n in range(300):
                await ws.send(call("track", track("u1", n), n))
            return [orjson.loads(await ws.recv()) for _ in range(300)]

    answers = asyncio.run(run())
    assert sorted(a["id"] for a in answers) == list(range(300))
    assert all(a["result"] == {"success": True} for a in answers)
    stored = server.stored()
    assert [e["properties"]["n"] for e in stored] == list(range(300))
    assert stored[0]["receivedAt"] and stored[0]["type"] == "track"


def test_batch_method_array_of_calls_and_notifications(server: Server) -> None:
    batch = {"batch": [{"type": "identify", "userId": "u2", "traits": {"a": 1}}, {"type": "bad"}]}
    notification = orjson.dumps(
        {"jsonrpc": "2.0", "method": "page", "params": {"userId": "u2", "name": "Home"}}
    )
    calls = orjson.dumps(
        [orjson.loads(call("track", track("u2", 1), "a")), orjson.loads(notification)]
    )
    answers = exchange(server, notification, call("batch", batch, 7), calls, answers=2)
    # The notification got no answer: the first answer is the batch call's.
    assert answers[0]["id"] == 7
    assert answers[0]["result"]["success"] is True
    assert answers[0]["result"]["rejected"][0]["index"] == 1
    assert [a["id"] for a in answers[1]] == ["a"]
    assert len(server.stored("page")) == 2 and len(server.stored("identify")) == 1
    letters = server.stored(DEADLETTER)
    assert letters[0]["reason"].startswith("invalid_type")


def test_protocol_errors_answer_and_the_connection_stays_open(server: Server) -> None:
    answers = exchange(
        server,
        b"{not json",
        orjson.dumps({"jsonrpc": "2.0", "method": "purchase", "params": {}, "id": 2}),
        orjson.dumps({"jsonrpc": "2.0", "method": "track", "params": [1], "id": 3}),
        call("track", {"event": "No user"}, 4),
        orjson.dumps({"method": "track", "id": 5}),
        call("track", track("u3", 1), 6),
    )
    # Answers leave as calls finish: an error before a call that waited for storage.
    by_id = {a["id"]: a for a in answers}
    codes = {i: a["error"]["code"] for i, a in by_id.items() if "error" in a}
    assert codes == {None: -32700, 2: -32601, 3: -32602, 4: -32602, 5: -32600}
    assert by_id[4]["error"]["data"]["code"] == "missing_field"
    assert by_id[6]["result"] == {"success": True}
    assert len(server.stored()) == 1


def closed_with(server: Server, frame: bytes | None = None, **kw: Any) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        async with connect(server.url, max_size=None, **kw) as ws:
            if frame is not None:
                await ws.send(frame)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

    return asyncio.run(run())


def test_a_bad_key_closes_1008_and_others_are_served(server: Server) -> None:
    code, reason = closed_with(server, additional_headers={"Authorization": "Basic eDo="})
    assert code == 1008 and "invalid_write_key" in reason
    code, reason = closed_with(server)
    assert code == 1008 and "missing_write_key" in reason
    answers = exchange(server, call("track", track("u4", 1)))
    assert answers[0]["result"] == {"success": True}


def test_write_key_in_the_query_string(server: Server) -> None:
    async def run() -> Any:
        async with connect(f"{server.url}?writeKey={KEY}") as ws:
            await ws.send(call("track", track("u5", 1)))
            return orjson.loads(await ws.recv())

    assert asyncio.run(run())["result"] == {"success": True}


def test_an_oversized_frame_closes_1009(server: Server) -> None:
    big = call("track", {**track("u6", 1), "properties": {"x": "a" * websocket.MAX_FRAME_BYTES}})
    code, _ = closed_with(server, big, additional_headers=AUTH)
    assert code == 1009
    assert server.stored() == []
    assert exchange(server, call("track", track("u6", 2)))[0]["result"]["success"]


def test_a_full_log_answers_a_retry_hint_and_pauses_reading(server: Server) -> None:
    publish(server.root, "track", held=100, capacity=100)

    async def run() -> tuple[Any, float]:
        async with connect(server.url, additional_headers=AUTH) as ws:
            await ws.send(call("track", track("u7", 1), 1))
            refused = orjson.loads(await ws.recv())
            publish(server.root, "track", held=0, capacity=100)
            started = time.monotonic()
            await ws.send(call("track", track("u7", 2), 2))
            accepted = orjson.loads(await ws.recv())
            assert accepted.get("result") == {"success": True}, accepted
            return refused, time.monotonic() - started

    refused, waited = asyncio.run(run())
    assert refused["error"]["code"] == -32053
    assert refused["error"]["data"] == {"status": 503, "code": "log_full", "retryAfter": 5.0}
    assert waited > 3  # the server read nothing for the retry hint's seconds
    assert [e["messageId"] for e in server.stored()] == ["u7-2"]
