"""A steady stream of uniquely identified events over real HTTP, remembering what was
answered 2xx: the ground truth every no-loss test compares the sinks with.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import httpx

from tests.service import WRITE_KEY

TYPES = ("track", "identify", "page", "screen", "group", "alias")


def event(prefix: str, n: int, users: int = 40, pad: int = 0) -> dict[str, Any]:
    """Event `n` of a stream: every type in turn, a per-user sequence number in properties."""
    kind = TYPES[n % len(TYPES)]
    body: dict[str, Any] = {
        "type": kind,
        "messageId": f"{prefix}-{n}",
        "userId": f"{prefix}-user-{n % users}",
        "properties": {"seq": n, **({"pad": "x" * pad} if pad else {})},
    }
    body.update(
        {
            "track": {"event": "Tick"},
            "group": {"groupId": "g1"},
            "alias": {"previousId": f"{prefix}-anon-{n % users}"},
        }.get(kind, {})
    )
    return body


class Traffic:
    """Sends `/v1/batch` requests of `batch_size` events from a thread until stopped."""

    def __init__(
        self, url: str, prefix: str, *, batch_size: int = 20, pause_s: float = 0.02, pad: int = 0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.batch_size = batch_size
        self.pause_s = pause_s
        self.pad = pad
        self.sent = 0
        self.acked: set[str] = set()
        self.statuses: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        n = 0
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=10) as client:
            while not self._stop.is_set():
                batch = [event(self.prefix, n + i, pad=self.pad) for i in range(self.batch_size)]
                n += self.batch_size
                self.sent += len(batch)
                try:
                    answer = client.post(f"{self.url}/v1/batch", json={"batch": batch})
                    self.statuses[str(answer.status_code)] += 1
                    if 200 <= answer.status_code < 300:
                        self.acked.update(e["messageId"] for e in batch)
                except httpx.HTTPError as exc:
                    self.statuses[type(exc).__name__] += 1
                time.sleep(self.pause_s)

    def wait_for(self, acked: int, timeout_s: float = 60) -> None:
        """Block until at least `acked` events were answered 2xx."""
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < acked:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.acked)} of {acked} acked; statuses {self.statuses}"
                )
            time.sleep(0.1)
