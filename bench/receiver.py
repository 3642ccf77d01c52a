"""A bare webhook receiver for benchmarks: answers 200 to every POST, stores nothing.

    python -m bench.receiver --port 8200     # then --extra-sink webhook+http://127.0.0.1:8200/hook

It stands in for a destination on another machine, so it should take as little of this
one as it can: an asyncio protocol on uvloop with httptools' parser, counting bodies as
they stream in. (uvicorn's HTTP layer builds each body by concatenation: 1.1 ms of CPU
for a 450 KB POST, against 0.1 ms here.) It prints how many POSTs and bytes it took when
stopped, so a run can be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import httptools
import uvloop

_OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


class Counts:
    def __init__(self) -> None:
        self.posts = 0
        self.bytes = 0
        self.in_flight = 0  # requests begun, not answered yet
        self.most_in_flight = 0  # more than one: the sink POSTs lanes at once


class _Connection(asyncio.Protocol):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None  # uvloop's, not a subclass of asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.counts.in_flight += 1
        self.counts.most_in_flight = max(self.counts.most_in_flight, self.counts.in_flight)

    def on_body(self, body: bytes) -> None:
        self.counts.bytes += len(body)

    def on_message_complete(self) -> None:
        self.counts.posts += 1
        self.counts.in_flight -= 1
        self.transport.write(_OK)


async def _serve(port: int, counts: Counts) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(counts), "127.0.0.1", port)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    counts = Counts()
    uvloop.run(_serve(args.port, counts))
    print(
        f"receiver: {counts.posts} POSTs, {counts.bytes} bytes, "
        f"at most {counts.most_in_flight} at once"
    )


if __name__ == "__main__":
    main()
