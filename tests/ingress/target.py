"""`IngressTarget`: what tests/test_hostile.py sends requests to (through its
`ingress_target` fixture), and how it sees what was stored. In process for now (the app
over a `MemoryEventStore`); a variant against a running `sluice serve` is another
context manager yielding the same shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from ingress.app import build_app
from sluice import config
from tests.ingress.harness import TestClient
from tests.ingress.memory_store import MemoryEventStore

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


@contextlib.contextmanager
def in_process_target() -> Iterator[IngressTarget]:
    """The ingress app in process, storing into memory."""
    store = MemoryEventStore()
    cfg = config.load(write_keys=[f"{TARGET_WRITE_KEY}:hostile"], environ={})
    with TestClient(build_app(cfg, store)) as client:

        def landed(ids: set[str]) -> set[str]:
            return {str(e["messageId"]) for e in store.events()} & ids

        yield IngressTarget(client=client, write_key=TARGET_WRITE_KEY, landed=landed)
