"""`ingress/transport.py`: an answer leaves in one write, over a real uvicorn server."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from ingress.transport import HttpProtocol, TurnWriter
from tests.service import free_port


class Recording(asyncio.Transport):
    """A transport that keeps what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def test_a_turns_writes_leave_as_one_in_order_and_close_sends_what_is_held() -> None:
    async def run() -> Recording:
        real = Recording()
        writer = TurnWriter(real, asyncio.get_running_loop())
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        writer.writelines([b"{", b"}"])
        assert real.writes == []  # held until the turn ends
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        writer.write(b"last")
        writer.close()  # the answer before the close, not lost with it
        assert real.writes[-1] == b"last" and real.closed
        await asyncio.sleep(0)
        assert len(real.writes) == 2  # sent once, not again by the turn's end
        return real

    asyncio.run(run())


def test_an_abort_drops_what_is_held() -> None:
    async def run() -> None:
        real = Recording()
        writer = TurnWriter(real, asyncio.get_running_loop())
        writer.write(b"half an answer")
        writer.abort()
        await asyncio.sleep(0)
        assert real.writes == [] and real.aborted

    asyncio.run(run())


async def _answer(scope: dict[str, object], receive: object, send: object) -> None:
    assert scope["type"] == "http"
    body = b'{"success":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"16")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    config = uvicorn.Config(
        _answer, port=chosen, http=HttpProtocol, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield chosen
    server.should_exit = True
    thread.join(timeout=10)


def _data_segments_in(client: socket.socket) -> int:
    """Segments with data this socket received (Linux `tcp_info.tcpi_data_segs_in`)."""
    info = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("<I", info, _DATA_SEGS_IN)[0])


#: Where `tcpi_data_segs_in` sits in `struct tcp_info` (Linux 4.6 and later).
_DATA_SEGS_IN = 152


def test_uvicorns_head_and_body_reach_the_client_in_one_segment(port: int) -> None:
    # uvicorn writes head and body apart; each answer reaches the client as one TCP
    # segment (two without `HttpProtocol`), on a keep-alive connection and on the last
    # request, which closes it.
    with socket.create_connection(("127.0.0.1", port)) as client:
        for close in (False, False, True):
            before = _data_segments_in(client)
            connection = b"close" if close else b"keep-alive"
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: " + connection + b"\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += client.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer.endswith(b'\r\n\r\n{"success":true}')
            time.sleep(0.05)  # a second segment, if any, has arrived
            assert _data_segments_in(client) - before == 1
        assert client.recv(10) == b""  # closed after the answer
