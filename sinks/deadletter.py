"""Dead letters: events that validation or a sink refused, kept with the reason.

They go under `{prefix}/_deadletter/` of the first file or S3 sink as JSON lines, one
object per event: `{"reason", "source", "receivedAt", "payload"}`. The leading `_`
keeps them out of readers of the main tree.
"""

from __future__ import annotations

from collections import defaultdict

import orjson

from core import model
from core.config import SinkSpec
from sinks.base import Batch, Delivered
from sinks.s3 import open_filesystem

SCHEME = "deadletter"


def deadletter_spec(target: SinkSpec) -> SinkSpec:
    """The dead-letter sink that writes under `target`'s `_deadletter/`."""
    return SinkSpec(uri=f"{SCHEME}:{target.uri}", policy=target.policy.updated({"max_age_s": 1.0}))


class DeadLetterSink:
    """Writes dead-letter batches as JSON lines, one file per batch and hour."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.fs, root = open_filesystem(spec.uri.removeprefix(f"{SCHEME}:"))
        self.root = f"{root}/{model.DEADLETTER}"

    def write(self, batch: Batch) -> Delivered:
        lines: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        for payload in batch.payloads():
            letter = orjson.loads(payload)
            day, hour = model.hour_partition(letter["receivedAt"])
            lines[(day, hour)].append(payload)
        paths = []
        for (day, hour), chunk in sorted(lines.items()):
            directory = f"{self.root}/dt={day}/hr={hour}"
            self.fs.create_dir(directory, recursive=True)
            path = f"{directory}/{batch.batch_id}.jsonl"
            with self.fs.open_output_stream(path) as out:
                out.write(b"\n".join(chunk) + b"\n")
            paths.append(path)
        return Delivered(locations=paths)

    def close(self) -> None:
        pass
