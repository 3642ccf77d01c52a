"""A bare webhook receiver for benchmarks: answers 200 to every POST, stores nothing.

    python -m bench.receiver --port 8200     # then --extra-sink webhook+http://127.0.0.1:8200/hook

It prints how many POSTs and bytes it took when stopped, so a run can be checked.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

_OK = b'{"ok":true}'


class Receiver:
    def __init__(self) -> None:
        self.posts = 0
        self.bytes = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            self.bytes += len(message.get("body", b""))
            more = message.get("more_body", False)
        self.posts += 1
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _OK})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Receiver()
    uvicorn.run(app, port=args.port, loop="uvloop", http="httptools", log_level="warning")
    print(f"receiver: {app.posts} POSTs, {app.bytes} bytes")


if __name__ == "__main__":
    main()
