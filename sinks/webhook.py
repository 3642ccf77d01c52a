"""Webhook destination: batches of events POSTed as JSON, in Segment's batch shape.

`webhook+https://host/path` (or `webhook+http://` for internal hosts and tests). Each
batch the producer cuts (by the sink's `max_events`, `max_bytes`, `max_age_s`: 2,000
events, 4 MiB, 1 s by default) goes out as POSTs of `{"batch": [events]}` of at most
`post_events` events and `post_bytes` bytes (500 and 500 KB, as Segment's batch
requests). Large batches and few, large POSTs: the producer's and consumer's work per
batch (an object in Ray's store, an actor call) and the HTTP work per request are
spread over many events (POSTs of 100 cost a third more of the machine than POSTs
of 500 in `sluice bench`).

The events are split into `post_lanes` (4) lanes by partition key (userId, else
anonymousId, else messageId). Lanes POST at the same time, each in log order, so a
receiver sees each user's events in order while several POSTs are in flight.

A POST answered 5xx, 408 or 429 (after its `Retry-After`), or lost to a connection error
or timeout, is sent again with exponential backoff and jitter; still failing after
`give_up_after_s`, the write raises and the producer sends the whole batch again later
(at-least-once: the POSTs that had landed are sent twice). Any other 4xx refuses its
events for good: they go to the dead letters with the answer.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from core.config import SinkSpec
from sinks.base import Batch, Delivered, Rejected

_RETRYABLE = frozenset({408, 429})


class WebhookError(RuntimeError):
    """The receiver kept failing; the batch is retried later."""


def _posts(
    items: list[tuple[int, bytes]], max_events: int, max_bytes: int
) -> Iterator[list[tuple[int, bytes]]]:
    """The (batch index, payload) pairs of each POST, within the count and size limits."""
    start = 0
    while start < len(items):
        end, size = start, 0
        while end < len(items) and end - start < max_events:
            size += len(items[end][1]) + 1
            if size > max_bytes and end > start:
                break
            end += 1
        yield items[start:end]
        start = end


_KEYS = (b'"userId":"', b'"anonymousId":"', b'"messageId":"')


def lane_of(payload: bytes, lanes: int) -> int:
    """Which lane an event goes in: by its partition key (userId, else anonymousId, else
    messageId), read from the JSON text Sluice wrote without parsing it."""
    for marker in _KEYS:
        at = payload.find(marker)
        if at >= 0:
            begin = at + len(marker)
            end = payload.find(b'"', begin)
            if end > begin:
                return zlib.crc32(payload[begin:end]) % lanes
    return 0


class WebhookSink:
    """POSTs batches to one URL, reusing its connections."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.url = spec.uri.removeprefix("webhook+")
        headers = {"Content-Type": "application/json", "User-Agent": "sluice-webhook"}
        headers.update(dict(spec.headers))
        limits = httpx.Limits(
            max_connections=spec.post_lanes, max_keepalive_connections=spec.post_lanes
        )
        self.client = httpx.Client(headers=headers, timeout=spec.timeout_s, limits=limits)
        self.lanes = ThreadPoolExecutor(spec.post_lanes, thread_name_prefix="webhook")
        # Then the producer takes over, batch by batch; sooner for a sink that may drop.
        self.give_up_after_s = 10.0 if spec.critical else 2.0
        self.backoff_base_s = 0.2
        self.backoff_cap_s = 10.0
        self.retries = 0

    def write(self, batch: Batch) -> Delivered:
        """POST the batch's events, lane by lane at once; each lane (a share of the users)
        in order."""
        lanes: list[list[tuple[int, bytes]]] = [[] for _ in range(self.spec.post_lanes)]
        for index, payload in enumerate(batch.payloads()):
            lanes[lane_of(payload, len(lanes))].append((index, payload))
        results = list(self.lanes.map(self._send_lane, [lane for lane in lanes if lane]))
        rejected = [r for lane_rejected, _ in results for r in lane_rejected]
        answers = sorted({answer for _, lane_answers in results for answer in lane_answers})
        return Delivered(
            sorted(rejected, key=lambda r: r.index), [f"{self.url}: {', '.join(answers)}"]
        )

    def _send_lane(self, items: list[tuple[int, bytes]]) -> tuple[list[Rejected], set[str]]:
        rejected: list[Rejected] = []
        answers: set[str] = set()
        for chunk in _posts(items, self.spec.post_events, self.spec.post_bytes):
            status, reason = self._post(b'{"batch":[' + b",".join(p for _, p in chunk) + b"]}")
            answers.add(f"HTTP {status}")
            if reason:
                rejected += [Rejected(index, reason) for index, _ in chunk]
        return rejected, answers

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
        self.lanes.shutdown()
        self.client.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds (dates are not worth it here)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
