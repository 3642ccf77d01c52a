"""`IngressTarget`: what tests/test_hostile.py sends requests to (through its
`ingress_target` fixture), and how it sees what was stored. In process for now (the app
over a `MemoryEventStore`) for speed, and a running `sluice serve` for the real path.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from core import config
from ingress.app import build_app
from tests.aws import read_parquet_tree
from tests.ingress.harness import TestClient
from tests.ingress.memory_store import MemoryEventStore
from tests.service import Service

TARGET_WRITE_KEY = "hostile-key"


@dataclass
class IngressTarget:
    """A Sluice ingress to throw requests at."""

    #: Sends requests to it (base URL set). Starlette's TestClient is an `httpx.Client`.
    client: httpx.Client
    #: A write key of a source that takes every record type, with no plan and no rate limit.
    write_key: str
    #: Of these messageIds, the ones stored (a variant over a real service may wait for them).
    landed: Callable[[set[str]], set[str]]
    #: Over real HTTP (the real service) rather than in process.
    over_http: bool = False


@contextlib.contextmanager
def in_process_target() -> Iterator[IngressTarget]:
    """The ingress app in process, storing into memory."""
    store = MemoryEventStore()
    cfg = config.load(write_keys=[f"{TARGET_WRITE_KEY}:hostile"], environ={})
    with TestClient(build_app(cfg, store)) as client:

        def landed(ids: set[str]) -> set[str]:
            return {str(e["messageId"]) for e in store.events()} & ids

        yield IngressTarget(client=client, write_key=TARGET_WRITE_KEY, landed=landed)


@contextlib.contextmanager
def service_target(workdir: Path) -> Iterator[IngressTarget]:
    """A real `sluice serve` (Ray, Serve, producers, Parquet sink) over HTTP."""
    service = Service(
        workdir, sinks=["file://./data?max_age_s=0.5"], write_keys=[f"{TARGET_WRITE_KEY}:hostile"]
    ).start()
    try:
        with httpx.Client(base_url=service.url, timeout=30) as client:

            def landed(ids: set[str]) -> set[str]:
                deadline = time.monotonic() + 90
                while True:  # events reach the Parquet tree within the sink's batch age
                    found = {r["message_id"] for r in read_parquet_tree(f"file://{workdir}/data")}
                    if ids <= found or time.monotonic() > deadline:
                        return found & ids
                    time.sleep(0.5)

            yield IngressTarget(
                client=client, write_key=TARGET_WRITE_KEY, landed=landed, over_http=True
            )
        with httpx.Client(base_url=service.url, timeout=30) as client:
            assert client.get("/health").status_code == 200, "the service stopped serving"
        assert service.stop() == 0, service.log_tail()
    finally:
        service.kill()
