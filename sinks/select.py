"""A sink's `filters` and `transform`: which events of a batch it gets, and how changed.

Applied by the consumer before the sink writes, so every kind of sink has them. The
batch keeps its log range (and so its id); events filtered out or dropped by the
transform count as delivered, and one the transform raises on is dead-lettered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from core.config import SinkSpec
from core.plugins import load_callable
from sinks.base import Batch, Delivered, Rejected


class Selector:
    """Filters and transform of one sink."""

    def __init__(self, spec: SinkSpec) -> None:
        self.filters = spec.filters
        self.transform: Callable[[dict[str, Any]], dict[str, Any] | None] | None = (
            load_callable(spec.transform, "transform") if spec.transform else None
        )

    @classmethod
    def for_spec(cls, spec: SinkSpec) -> Selector | None:
        return cls(spec) if spec.filters or spec.transform else None

    def select(self, batch: Batch) -> tuple[Batch, list[int], list[Rejected]]:
        """The batch of the events this sink takes, their indices in `batch`, and the
        events the transform failed on."""
        kept: list[int] = []
        payloads: list[bytes] = []
        failed: list[Rejected] = []
        for index, payload in enumerate(batch.payloads()):
            event = orjson.loads(payload)
            if self.filters is not None and not self.filters.keeps(event):
                continue
            if self.transform is not None:
                try:
                    event = self.transform(event)
                except Exception as exc:
                    failed.append(Rejected(index, f"transform raised {type(exc).__name__}: {exc}"))
                    continue
                if event is None:
                    continue
                payload = orjson.dumps(event)
            kept.append(index)
            payloads.append(payload)
        events = Batch.of(batch.log_id, batch.record_type, batch.start, payloads).events
        return dataclasses.replace(batch, events=events), kept, failed


def mapped_back(
    delivered: Delivered, kept: list[int], failed: list[Rejected], size: int
) -> Delivered:
    """`delivered` of a selected batch, in the indices of the whole batch (`size` events)."""
    rejected = [Rejected(kept[r.index], r.reason) for r in delivered.rejected] + failed
    if not delivered.by_index:
        return Delivered(rejected, delivered.locations, values_rejected=delivered.values_rejected)
    locations = ["filtered out"] * size
    for i, location in zip(kept, delivered.locations, strict=True):
        locations[i] = location
    return Delivered(rejected, locations, True, delivered.values_rejected)
