"""A producer's trace of an event stored but not yet in a batch: read from its log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from actors.producer import Producer
from core.config import SinkSpec
from tests.ingress.test_writer import publish, writer


def test_an_event_stored_and_not_yet_batched_is_found_in_the_log(tmp_path: Path) -> None:
    async def run() -> dict[str, Any] | None:
        publish(tmp_path, "track", held=0, capacity=1 << 20)
        replica = writer(tmp_path)
        events = [orjson.dumps({"messageId": f"m-{i}", "n": i}) for i in range(50)]
        await replica.append("track", events)
        replica.close()
        # A file sink cuts a batch after 10 s: these events stay in the log meanwhile.
        spec = SinkSpec.parse(f"file://{tmp_path / 'data'}", tmp_path)
        producer = Producer(
            "track",
            str(tmp_path / "track"),
            [(spec, ["consumer:none"])],
            namespace="test",
            capacity_bytes=1 << 20,
            segment_bytes=1 << 16,
            fsync=False,
        )
        try:
            assert await producer.trace("m-999") is None
            return await producer.trace("m-37")
        finally:
            for loop_task in producer._loops:
                loop_task.cancel()

    found = asyncio.run(run())
    assert found is not None
    assert found["event"] == {"messageId": "m-37", "n": 37}
    assert found["offset"] == 37 and found["sinks"] == []
