"""Send events to Sluice over one WebSocket, pipelined, and wait for every answer.

    python examples/ws_client.py --url ws://127.0.0.1:8000/v1/ws --write-key KEY --count 1000

Each call's answer arrives once its event is stored; calls are sent without waiting and
answers matched by id. A call whose answer never came (the connection dropped) is safe to
send again: its messageId lets Sluice and readers drop the duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid

from websockets.asyncio.client import connect


async def send_events(url: str, write_key: str, count: int) -> None:
    token = base64.b64encode(f"{write_key}:".encode()).decode()
    async with connect(url, additional_headers={"Authorization": f"Basic {token}"}) as ws:
        pending: dict[int, str] = {}
        started = time.perf_counter()

        async def send() -> None:
            for n in range(count):
                params = {
                    "userId": f"user-{n % 10}",
                    "event": "Level Completed",
                    "properties": {"level": n},
                    "messageId": str(uuid.uuid4()),
                }
                pending[n] = params["messageId"]
                call = {"jsonrpc": "2.0", "method": "track", "params": params, "id": n}
                await ws.send(json.dumps(call))

        sender = asyncio.create_task(send())
        errors = 0
        for _ in range(count):
            answer = json.loads(await ws.recv())
            pending.pop(answer["id"], None)
            if "error" in answer:
                errors += 1
                print("refused:", answer["error"])
        await sender
        elapsed = time.perf_counter() - started
        print(f"{count - errors} events stored, {errors} refused, {count / elapsed:,.0f} calls/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/ws")
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(send_events(args.url, args.write_key, args.count))


if __name__ == "__main__":
    main()
