"""WebSocket ingestion end to end: the real `sluice serve`, many connections with pipelined
JSON-RPC calls, and the Parquet tree read back."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from websockets.asyncio.client import connect

from tests.service import WRITE_KEY, Service

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("ws")
    svc = Service(workdir, sinks=["file://./data?max_age_s=0.5"]).start()
    yield svc
    svc.kill()


def ws_url(service: Service) -> str:
    return service.url.replace("http://", "ws://") + "/v1/ws"


def call(prefix: str, n: int, users: int) -> bytes:
    params = {
        "userId": f"{prefix}-u{n % users}",
        "event": "Tick",
        "messageId": f"{prefix}-{n}",
        "properties": {"seq": n},
    }
    return orjson.dumps({"jsonrpc": "2.0", "method": "track", "params": params, "id": n})


async def pipelined(url: str, prefix: str, count: int, users: int = 5) -> set[str]:
    """Send `count` calls on one connection without waiting; the messageIds acked."""
    acked: set[str] = set()
    async with connect(url, additional_headers=AUTH) as ws:

        async def send() -> None:
            for n in range(count):
                await ws.send(call(prefix, n, users))

        sender = asyncio.create_task(send())
        for _ in range(count):
            answer = orjson.loads(await ws.recv())
            assert answer.get("result") == {"success": True}, answer
            acked.add(f"{prefix}-{answer['id']}")
        await sender
    return acked


def rows_in_log_order(data: Path) -> list[dict[str, Any]]:
    """Every stored track row, files in batch-id (log) order."""
    files = sorted((p for p in data.glob("source=*/type=track/**/*.parquet")), key=lambda p: p.name)
    return [row for f in files for row in pq.read_table(f).to_pylist()]


async def wait_landed(data: Path, ids: set[str], timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        rows = rows_in_log_order(data)
        if ids <= {r["message_id"] for r in rows}:
            return rows
        if asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.5)


def test_ten_connections_of_pipelined_calls_land_whole_and_in_order(service: Service) -> None:
    async def run() -> tuple[set[str], list[dict[str, Any]]]:
        url = ws_url(service)
        results = await asyncio.gather(*(pipelined(url, f"c{i}", 1000) for i in range(10)))
        acked = set().union(*results)
        return acked, await wait_landed(service.workdir / "data", acked)

    acked, rows = asyncio.run(run())
    assert len(acked) == 10_000
    landed = [r for r in rows if r["message_id"] in acked]
    assert {r["message_id"] for r in landed} == acked
    per_user: dict[str, list[int]] = {}
    for row in landed:
        per_user.setdefault(row["user_id"], []).append(orjson.loads(row["properties"])["seq"])
    assert len(per_user) == 50
    assert all(seqs == sorted(seqs) for seqs in per_user.values())


def test_a_connection_dropped_mid_stream_loses_only_unacked_calls(service: Service) -> None:
    async def run() -> tuple[set[str], list[dict[str, Any]]]:
        acked: set[str] = set()
        ws = await connect(ws_url(service), additional_headers=AUTH)
        for n in range(3000):
            await ws.send(call("drop", n, 3))
        for _ in range(200):
            acked.add(f"drop-{orjson.loads(await ws.recv())['id']}")
        ws.transport.abort()  # gone without a close frame, calls still in flight
        # The others are served, and this one's acked calls are all stored.
        acked |= await pipelined(ws_url(service), "after", 50)
        return acked, await wait_landed(service.workdir / "data", acked)

    acked, rows = asyncio.run(run())
    assert acked <= {r["message_id"] for r in rows}
    with service.client() as client:
        assert client.get("/health").status_code == 200
