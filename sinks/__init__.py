"""Sinks: where batches of events go. One module per sink, registered here by URI scheme."""

from __future__ import annotations

from core.config import SinkSpec
from sinks.base import Batch, Rejected, Sink


def open_sink(spec: SinkSpec) -> Sink:
    """The sink for `spec`'s URI scheme (imported lazily: boto3 is slow to import)."""
    if spec.scheme in ("file", "s3"):
        from sinks.s3 import ParquetSink

        return ParquetSink(spec)
    if spec.scheme == "kinesis":
        from sinks.kinesis import KinesisSink

        return KinesisSink(spec)
    if spec.scheme.startswith("webhook"):
        from sinks.webhook import WebhookSink

        return WebhookSink(spec)
    if spec.scheme == "deadletter":
        from sinks.deadletter import DeadLetterSink

        return DeadLetterSink(spec)
    raise ValueError(f"no sink for scheme {spec.scheme!r}")


__all__ = ["Batch", "Rejected", "Sink", "open_sink"]
