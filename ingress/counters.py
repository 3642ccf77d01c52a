"""`ReplicaCounters`: what one ingress replica counted, added up over the node's replicas.

A scrape of `/metrics` reaches whichever replica the kernel gave the connection to, so
each replica publishes its counters to `{log_dir}/replicas/{id}.json` (a second after
they change, on a timer of its event loop) and `/metrics` sums the files of the replicas still
running. Counting itself is a dict update: nothing more on the request path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily

from core import segments

#: Metric -> (help, label names). Values are kept per label values joined by `_SEP`.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sluice_http_requests": ("HTTP requests", ("endpoint", "status")),
    "sluice_events_accepted": ("Events answered 200 and stored", ("type",)),
    "sluice_events_rejected": ("Events refused by validation", ("code",)),
    "sluice_duplicates": (
        "Events answered 200 and not stored: their messageId came within dedup_window",
        ("type",),
    ),
    "sluice_events_dropped": ("Events answered 200 and dropped by an enricher (bots)", ()),
    "sluice_enrich_errors": (
        "Events an enricher raised on (they went on without its fields)",
        ("enricher",),
    ),
    "sluice_websocket_connections": ("WebSocket upgrades, by outcome", ("outcome",)),
    "sluice_websocket_calls": ("JSON-RPC calls received over WebSocket", ("method",)),
    "sluice_sdk_metrics_reports": (
        "Delivery-metrics reports analytics.js posted to /v1/m (not stored as events)",
        (),
    ),
}
_SEP = "\x1f"
_PUBLISH_S = 1.0


class ReplicaCounters:
    """Counters of one replica; `directory` (None: not shared) holds every replica's."""

    def __init__(self, directory: Path | None = None, replica_id: str = "") -> None:
        self.directory = directory
        self.replica_id = replica_id or str(os.getpid())
        self.counts: dict[str, collections.Counter[str]] = {
            name: collections.Counter() for name in METRICS
        }
        self._due = False
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def add(self, metric: str, *labels: str, amount: int = 1) -> None:
        self.counts[metric][_SEP.join(labels)] += amount
        if self.directory is not None and not self._due:
            # Published a second after the first count since the last publication.
            self._due = True
            try:
                asyncio.get_running_loop().call_later(_PUBLISH_S, self.publish)
            except RuntimeError:  # no event loop (a script): now
                self.publish()

    def publish(self) -> None:
        """Write this replica's counters for the others to read."""
        assert self.directory is not None
        self._due = False
        body = orjson.dumps({"pid": os.getpid(), "counts": self.counts})
        with contextlib.suppress(OSError):  # a full log dir: the figures wait
            segments.write_atomic(self.directory / f"{self.replica_id}.json", body)

    def node_totals(self) -> dict[str, collections.Counter[str]]:
        """Every running replica's counters on this node, this one's as of now."""
        totals = {name: collections.Counter(values) for name, values in self.counts.items()}
        for path in self.directory.glob("*.json") if self.directory is not None else ():
            if path.stem == self.replica_id:
                continue
            try:
                other: dict[str, Any] = orjson.loads(path.read_bytes())
                os.kill(other["pid"], 0)
            except (OSError, orjson.JSONDecodeError, KeyError):
                continue  # gone (a restarted replica counts from zero, as Prometheus expects)
            for name, values in other["counts"].items():
                if name in totals:
                    totals[name].update(values)
        return totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Prometheus families of the node's totals."""
        for name, values in self.node_totals().items():
            help_text, labels = METRICS[name]
            family = CounterMetricFamily(name, help_text, labels=list(labels))
            for key, value in sorted(values.items()):
                family.add_metric(key.split(_SEP) if labels else [], value)
            if not labels and not values:
                family.add_metric([], 0)
            yield family
