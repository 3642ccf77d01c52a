"""Webhook destination: batches of events POSTed as JSON, in Segment's batch shape.

`webhook+https://host/path` (or `webhook+http://` for internal hosts and tests). Each
batch the producer cuts (by the sink's `max_events`, `max_bytes`, `max_age_s`: 20,000
events, 16 MiB, 1 s by default) goes out as POSTs of `{"batch": [events]}` of at most
`post_events` events and `post_bytes` bytes (500 and 500 KB, as Segment's batch
requests). Large batches and few, large POSTs: the producer's and consumer's work per
batch (an object in Ray's store, an actor call) and the HTTP work per request are
spread over many events (POSTs of 100 cost a third more of the machine than POSTs
of 500 in `sluice bench`; batches of 20,000 events cost a webhook beside the file sink
8 to 18% of its throughput, against 21 to 36% for batches of 2,000). When few events
come, `max_age_s` cuts the batch first.

The events are split into `post_lanes` (4) lanes by partition key (userId, else
anonymousId, else messageId). Lanes POST at the same time, each in log order, so a
receiver sees each user's events in order while several POSTs are in flight. That is
for a sink falling behind, one whose batch had waited in the log more than twice its
`max_age_s` (and a second) when it was sent; a sink keeping up POSTs a batch one POST
after another, in log order, from the consumer's own thread, since lane threads handing
the interpreter lock to each other cost more CPU than the POSTs (twice as much with a
receiver on loopback).

A POST answered 5xx, 408 or 429 (after its `Retry-After`), or lost to a connection error
or timeout, is sent again with exponential backoff and jitter; still failing after
`give_up_after_s`, the write raises and the producer sends the whole batch again later
(at-least-once: the POSTs that had landed are sent twice). Any other 4xx refuses its
events for good: they go to the dead letters with the answer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import SinkSpec
from sinks.base import Batch, Delivered, Rejected, joined, offsets_of

_RETRYABLE = frozenset({408, 429})


class WebhookError(RuntimeError):
    """The receiver kept failing; the batch is retried later."""


#: A stored event's JSON begins with its partition key, its userId or else its
#: anonymousId (`ingress.events.validate` puts them first), so that key is read at a
#: known place. Other records (dead letters, logs an older Sluice wrote) are searched by
#: Arrow's regex kernel: the first match wins.
_LEADS = (b'{"userId":"', b'{"anonymousId":"')
_KEY_PATTERNS = [f'"{name}":"(?P<key>[^"]+)"' for name in ("userId", "anonymousId", "messageId")]
#: A key's first bytes are what its lane is hashed from.
_KEY_BYTES = 32
_WEIGHTS = np.random.default_rng(19).integers(1, 2**63, _KEY_BYTES, dtype=np.uint64) | 1
_QUOTE = ord('"')


def _rows(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """The `width` bytes from each of `starts` (zero past the end of `data`): one gather."""
    if len(starts) and int(starts.max()) + width > len(data):
        data = np.concatenate([data, np.zeros(width, dtype=np.uint8)])
    rows: np.ndarray = np.lib.stride_tricks.sliding_window_view(data, width)[starts]
    return rows


def _key_hashes(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """A hash of the key at each of `starts`: its bytes up to a quote, `_KEY_BYTES` at most."""
    key = _rows(data, starts, _KEY_BYTES)
    key = np.where(np.logical_or.accumulate(key == _QUOTE, axis=1), 0, key)
    return (key.astype(np.uint64) * _WEIGHTS).sum(axis=1)  # type: ignore[no-any-return]


def lanes_of(events: pa.Array, lanes: int) -> np.ndarray:
    """Which lane each event goes in: the same for every event of one partition key
    (userId, else anonymousId, else messageId), with no Python per event. Lanes only
    order the POSTs of one batch (the next batch waits for this one), so a key needs
    the same lane within a batch only."""
    if lanes == 1 or len(events) == 0:
        return np.zeros(len(events), dtype=np.int64)
    starts = offsets_of(events)[:-1]
    data = np.frombuffer(events.buffers()[2], dtype=np.uint8)
    heads = _rows(data, starts, max(map(len, _LEADS)))
    hashes = np.zeros(len(events), dtype=np.uint64)
    found = np.zeros(len(events), dtype=bool)
    for lead in _LEADS:
        leads = ~found & (heads[:, : len(lead)] == np.frombuffer(lead, dtype=np.uint8)).all(1)
        hashes[leads] = _key_hashes(data, starts[leads] + len(lead))
        found |= leads
    if not found.all():
        hashes[~found] = _searched_hashes(events.filter(pa.array(~found)))
    return (hashes >> np.uint64(32)).astype(np.int64) % lanes


def _searched_hashes(events: pa.Array) -> np.ndarray:
    keys = None
    for pattern in _KEY_PATTERNS:
        found = pc.struct_field(pc.extract_regex(events, pattern=pattern), "key")
        keys = found if keys is None else pc.coalesce(keys, found)
    keys = pc.cast(pc.fill_null(keys, ""), pa.large_binary())
    offsets = offsets_of(keys)
    # Each key ends with a quote, as where the others were read.
    data = np.frombuffer(b"".join((joined(keys, b'"'), b'"')), dtype=np.uint8)
    return _key_hashes(data, offsets[:-1] - offsets[0] + np.arange(len(keys)))


def _posts(events: pa.Array, max_events: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """`[start, end)` of each POST of `events`, within the count and size limits."""
    offsets = offsets_of(events)
    ends = offsets[1:] - offsets[0] + np.arange(1, len(events) + 1)  # bytes with commas
    start = 0
    while start < len(events):
        before = ends[start - 1] if start else 0
        end = int(np.searchsorted(ends, before + max_bytes, side="right"))
        end = max(start + 1, min(end, start + max_events))
        yield start, end
        start = end


def body_of(events: pa.Array) -> bytes:
    """`{"batch": [...]}` of `events` (large_binary JSON), joined by Arrow, not per event."""
    return b"".join((b'{"batch":[', joined(events, b","), b"]}"))  # one copy, not two


class WebhookSink:
    """POSTs batches to one URL, reusing its connections."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.url = spec.uri.removeprefix("webhook+")
        headers = {"Content-Type": "application/json", "User-Agent": "sluice-webhook"}
        headers.update(dict(spec.headers))
        # A client (and connection) per lane: lanes sharing one pool wait on its lock.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.clients = [
            httpx.Client(headers=headers, timeout=spec.timeout_s, limits=limits)
            for _ in range(spec.post_lanes)
        ]
        self.lanes = ThreadPoolExecutor(spec.post_lanes, thread_name_prefix="webhook")
        # Then the producer takes over, batch by batch; sooner for a sink that may drop.
        self.give_up_after_s = 10.0 if spec.critical else 2.0
        self.backoff_base_s = 0.2
        self.backoff_cap_s = 10.0
        self.retries = 0
        # A batch that waited longer was sent by a producer whose sink falls behind.
        self.behind_s = 1.0 + 2 * spec.policy.max_age_s

    def write(self, batch: Batch) -> Delivered:
        """POST the batch's events: in log order while the sink keeps up, else lane by
        lane at once (each lane a share of the users, in order)."""
        events = batch.events.column(0)
        if self.spec.post_lanes == 1 or batch.waited_s <= self.behind_s:
            posts = self._bodies(events, np.arange(len(events)))
            results = [self._send_lane(self.clients[0], posts)]
        else:
            lane_ids = lanes_of(events, self.spec.post_lanes)
            indices = [np.flatnonzero(lane_ids == lane) for lane in range(self.spec.post_lanes)]
            # Bodies made here, lanes only POST: Arrow and numpy let go of the interpreter
            # lock in each call, and lanes taking it back from each other cost more than
            # the work.
            lanes = [self._bodies(events, idx) for idx in indices]
            running = [
                self.lanes.submit(self._send_lane, client, posts)
                for client, posts in zip(self.clients, lanes, strict=True)
            ]
            # Every lane ends before the write does, failed or not: a lane still POSTing
            # while the producer sends the batch again could reorder a user's events.
            futures.wait(running)
            results = [lane.result() for lane in running]
        rejected = [r for lane_rejected, _ in results for r in lane_rejected]
        answers = sorted({answer for _, lane_answers in results for answer in lane_answers})
        return Delivered(
            sorted(rejected, key=lambda r: r.index), [f"{self.url}: {', '.join(answers)}"]
        )

    def _bodies(self, events: pa.Array, indices: np.ndarray) -> list[tuple[bytes, np.ndarray]]:
        """The POST bodies of the events at `indices` (in that order), and their indices."""
        if len(indices) < len(events):
            events = events.take(indices)
        return [
            (body_of(events.slice(start, end - start)), indices[start:end])
            for start, end in _posts(events, self.spec.post_events, self.spec.post_bytes)
        ]

    def _send_lane(
        self, client: httpx.Client, posts: list[tuple[bytes, np.ndarray]]
    ) -> tuple[list[Rejected], set[str]]:
        rejected: list[Rejected] = []
        answers: set[str] = set()
        for body, indices in posts:
            status, reason = self._post(client, body)
            answers.add(f"HTTP {status}")
            if reason:
                rejected += [Rejected(int(i), reason) for i in indices]
        return rejected, answers

    def _post(self, client: httpx.Client, body: bytes) -> tuple[int, str]:
        """POST until accepted or refused for good: (status, reason if refused)."""
        started = time.monotonic()
        attempt = 0
        while True:
            wait_s: float | None = None
            try:
                answer = client.post(self.url, content=body)
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
        for client in self.clients:
            client.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds (dates are not worth it here)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
