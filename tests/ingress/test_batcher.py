"""`MicroBatcher`: many concurrent requests, one store call per record type and window."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from ingress.batcher import MicroBatcher


def test_concurrent_requests_share_one_call_per_type() -> None:
    calls: list[tuple[str, list[bytes]]] = []

    async def store(record_type: str, payloads: list[bytes]) -> None:
        calls.append((record_type, list(payloads)))

    async def main() -> None:
        batcher = MicroBatcher(store, window_s=0.01)
        await asyncio.gather(
            *(batcher.append("track", [f"t{i}".encode()]) for i in range(50)),
            *(batcher.append("page", [f"p{i}".encode()]) for i in range(20)),
        )

    asyncio.run(main())
    assert sorted((t, len(p)) for t, p in calls) == [("page", 20), ("track", 50)]


def test_a_failed_store_fails_every_request_in_it() -> None:
    async def store(record_type: str, payloads: list[bytes]) -> None:
        raise RuntimeError("producer down")

    async def main() -> list[object]:
        batcher = MicroBatcher(store, window_s=0.001)
        return await asyncio.gather(
            *(batcher.append("track", [b"x"]) for _ in range(3)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_events_pile_up_while_a_call_is_in_flight() -> None:
    sizes: list[int] = []
    release = asyncio.Event()

    async def store(record_type: str, payloads: list[bytes]) -> None:
        sizes.append(len(payloads))
        if len(sizes) == 1:
            await release.wait()

    async def main() -> None:
        batcher = MicroBatcher(store, max_in_flight=1)
        first = asyncio.ensure_future(batcher.append("track", [b"x"]))
        await asyncio.sleep(0.01)  # the first call is now in flight
        later = [asyncio.ensure_future(batcher.append("track", [b"y"])) for _ in range(30)]
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(first, *later)

    asyncio.run(main())
    assert sizes == [1, 30]


def test_full_batch_is_sent_before_the_window_ends() -> None:
    sizes: list[int] = []

    async def store(record_type: str, payloads: list[bytes]) -> None:
        sizes.append(len(payloads))

    async def main() -> None:
        batcher = MicroBatcher(store, window_s=10, max_events=5)
        await asyncio.wait_for(batcher.append("track", [b"x"] * 5), 2)

    asyncio.run(main())
    assert sizes == [5]
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(MicroBatcher(store, window_s=10).append("t", [b"x"]), 0.05))


def test_a_call_goes_at_the_earliest_window_of_its_requests() -> None:
    calls: list[tuple[float, int]] = []

    async def store(record_type: str, payloads: list[bytes]) -> None:
        calls.append((asyncio.get_running_loop().time(), len(payloads)))

    async def main() -> float:
        batcher = MicroBatcher(store, window_s=0.005)
        start = asyncio.get_running_loop().time()
        slow = asyncio.ensure_future(batcher.append("track", [b"bulk"] * 3, window_s=30))
        await asyncio.sleep(0.05)
        assert not calls  # a bulk request alone waits for its own, longer window
        await asyncio.wait_for(asyncio.gather(slow, batcher.append("track", [b"single"])), 5)
        return start

    start = asyncio.run(main())
    assert [size for _, size in calls] == [4]  # one call carried both requests
    assert calls[0][0] - start < 5


def test_a_zero_window_works_on_uvloop() -> None:
    # Ray Serve's replicas run on uvloop, where `call_at` for a time already reached
    # returns a `Handle` without `when()`: requests joining a pending call must not need it.
    calls: list[int] = []

    async def store(record_type: str, payloads: list[bytes]) -> None:
        calls.append(len(payloads))

    async def main() -> None:
        batcher = MicroBatcher(store, window_s=0.0)
        await asyncio.gather(*(batcher.append("track", [b"x"]) for _ in range(10)))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert sum(calls) == 10
