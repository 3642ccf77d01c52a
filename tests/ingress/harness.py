"""The ingress app in process, for tests with no Ray: Starlette's TestClient over the app
built on a `MemoryEventStore`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.exceptions import StarletteDeprecationWarning

from core import config
from ingress.app import build_app
from tests.ingress.memory_store import MemoryEventStore

with warnings.catch_warnings():
    # Starlette 1.x would rather run its TestClient on httpx2; httpx, which we use, works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["Ingress", "TestClient", "error"]


class Ingress:
    """The app over a `MemoryEventStore`, built from a `Config` as `sluice serve` would."""

    def __init__(self, cfg: config.Config, log_root: Path | None = None) -> None:
        self.config = cfg
        self.store = MemoryEventStore()
        self.app = build_app(cfg, self.store, log_root=log_root)  # with one: de-duplication
        self.client = TestClient(self.app)

    def post(
        self, path: str, body: Any, key: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """POST `body` (bytes as they are, anything else as JSON) with `key` as Basic user."""
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.client.post(
            path,
            content=content,
            headers={"Content-Type": "application/json", **(headers or {})},
            auth=(key, "") if key else None,
        )


def error(answer: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON error of `answer`, after checking its status and shape."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    assert body["success"] is False and body["code"] and body["message"]
    return body
