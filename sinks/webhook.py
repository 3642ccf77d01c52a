"""Webhook destination: batches of events POSTed as JSON, in Segment's batch shape.

`webhook+https://host/path` (or `webhook+http://` for internal hosts and tests). Each
batch the producer cuts (by the sink's `max_events`, `max_bytes`, `max_age_s`: 2,000
events, 4 MiB, 1 s by default) goes out as POSTs of `{"batch": [events]}` of at most
`post_events` events and `post_bytes` bytes (100 and 500 KB, Segment's own limits), one
after the other in log order, so a receiver sees each user's events in order. Large
batches and small POSTs: the per-batch work of the producer and the consumer (an object
in Ray's store, an actor call) is spread over many POSTs. A POST answered 5xx, 408 or 429 (after its
`Retry-After`), or lost to a connection error or timeout, is sent again with exponential
backoff and jitter; still failing after `give_up_after_s`, the write raises and the
producer sends the whole batch again later (at-least-once: the POSTs that had landed
are sent twice). Any other 4xx refuses its events for good: they go to the dead letters
with the answer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import httpx

from core.config import SinkSpec
from sinks.base import Batch, Delivered, Rejected

_RETRYABLE = frozenset({408, 429})


class WebhookError(RuntimeError):
    """The receiver kept failing; the batch is retried later."""


def _posts(
    payloads: list[bytes], max_events: int, max_bytes: int
) -> Iterator[tuple[int, list[bytes]]]:
    """(first index, payloads) of each POST, within the count and size limits."""
    start = 0
    while start < len(payloads):
        end, size = start, 0
        while end < len(payloads) and end - start < max_events:
            size += len(payloads[end]) + 1
            if size > max_bytes and end > start:
                break
            end += 1
        yield start, payloads[start:end]
        start = end


class WebhookSink:
    """POSTs batches to one URL, reusing its connections."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.url = spec.uri.removeprefix("webhook+")
        headers = {"Content-Type": "application/json", "User-Agent": "sluice-webhook"}
        headers.update(dict(spec.headers))
        self.client = httpx.Client(headers=headers, timeout=spec.timeout_s)
        self.give_up_after_s = 10.0  # then the producer takes over, batch by batch
        self.backoff_base_s = 0.2
        self.backoff_cap_s = 10.0
        self.retries = 0

    def write(self, batch: Batch) -> Delivered:
        rejected: list[Rejected] = []
        answers: list[str] = []
        spec = self.spec
        for first, chunk in _posts(batch.payloads(), spec.post_events, spec.post_bytes):
            status, reason = self._post(b'{"batch":[' + b",".join(chunk) + b"]}")
            answers.append(f"HTTP {status}")
            if reason:
                rejected += [Rejected(first + i, reason) for i in range(len(chunk))]
        locations = [f"{self.url}: {', '.join(sorted(set(answers)))}"]
        return Delivered(rejected, locations)

    def _post(self, body: bytes) -> tuple[int, str]:
        """POST until accepted or refused for good: (status, reason if refused)."""
        started = time.monotonic()
        attempt = 0
        while True:
            wait_s: float | None = None
            try:
                answer = self.client.post(self.url, content=body)
                if answer.status_code < 300:
                    return answer.status_code, ""
                if answer.status_code < 500 and answer.status_code not in _RETRYABLE:
                    text = answer.text[:300]
                    return answer.status_code, f"webhook answered {answer.status_code}: {text}"
                problem = f"HTTP {answer.status_code}"
                wait_s = _retry_after(answer.headers.get("retry-after"))
            except httpx.TransportError as exc:  # connection refused or reset, timeout
                problem = f"{type(exc).__name__}: {exc}"
            attempt += 1
            self.retries += 1
            if time.monotonic() - started > self.give_up_after_s:
                raise WebhookError(
                    f"{self.url} still failing after {self.give_up_after_s:.0f} s ({problem})"
                )
            if wait_s is None:
                wait_s = random.uniform(
                    0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt)
                )
            time.sleep(min(wait_s, self.backoff_cap_s * 6))

    def close(self) -> None:
        self.client.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds (dates are not worth it here)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
