"""`sluice replay`: archived events delivered again, to any sink.

Reads the Parquet tree a file or S3 sink wrote (`source=/type=/dt=/hr=` partitions),
opening only the files of the hours in `[start, end)`, keeps the rows received in that
window (and of the chosen type, event and source), turns each back into the event JSON
Sluice stored, and writes them with the sink's own code in batches of its policy's size:
the same retries and dead letters as the live path. Batches are numbered from the start
of the selection (`replay-<digest>-<first>-<last>`), so a batch written twice to a file
or S3 sink replaces itself.

`--resume` continues after the last batch a crashed or stopped run delivered: the count
of delivered events is saved after each batch in `.sluice-replay/<digest>.json`, and the
selection is read in the same order every time (files by path, rows as stored).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from core import segments
from core.config import ConfigError, SinkSpec
from sinks import open_sink
from sinks.base import Batch, Rejected
from sinks.deadletter import SCHEME as DEADLETTER_SCHEME
from sinks.s3 import open_filesystem

_PARTITIONS = ds.partitioning(
    pa.schema(
        [("source", pa.string()), ("type", pa.string()), ("dt", pa.string()), ("hr", pa.string())]
    ),
    flavor="hive",
)
_JSON = ("properties", "traits", "context", "integrations")
#: Column -> event field, for the fields that are not JSON text.
_FIELDS = {
    "message_id": "messageId",
    "type": "type",
    "event": "event",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "name": "name",
    "category": "category",
    "group_id": "groupId",
    "previous_id": "previousId",
    "source": "source",
}
_TIMES = {
    "timestamp": "timestamp",
    "original_timestamp": "originalTimestamp",
    "sent_at": "sentAt",
    "received_at": "receivedAt",
}


@dataclass(frozen=True)
class ReplayOptions:
    source_uri: str
    sink_uri: str
    start: datetime
    end: datetime
    record_type: str | None = None
    event: str | None = None
    source: str | None = None
    rate: float | None = None  # events per second
    resume: bool = False
    state_dir: Path = Path(".sluice-replay")

    @property
    def digest(self) -> str:
        key = [self.source_uri, self.sink_uri, self.start.isoformat(), self.end.isoformat()]
        key += [self.record_type or "", self.event or "", self.source or ""]
        return hashlib.sha1("\0".join(key).encode()).hexdigest()[:12]


def parse_time(text: str) -> datetime:
    """An ISO-8601 time, UTC unless it says otherwise."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"not an ISO-8601 time: {text!r} (e.g. 2026-11-20T00:00)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _hour_filter(start: datetime, end: datetime) -> ds.Expression:
    """Partitions (dt, hr) whose hour overlaps [start, end): the files to open."""
    first = start.astimezone(UTC)
    last = (end - timedelta(microseconds=1)).astimezone(UTC)
    dt, hr = ds.field("dt"), ds.field("hr")
    after = (dt > first.strftime("%Y-%m-%d")) | (
        (dt == first.strftime("%Y-%m-%d")) & (hr >= first.strftime("%H"))
    )
    before = (dt < last.strftime("%Y-%m-%d")) | (
        (dt == last.strftime("%Y-%m-%d")) & (hr <= last.strftime("%H"))
    )
    return after & before


def _row_filter(options: ReplayOptions) -> ds.Expression:
    received = ds.field("received_at")
    expression = (received >= pa.scalar(options.start, pa.timestamp("us", tz="UTC"))) & (
        received < pa.scalar(options.end, pa.timestamp("us", tz="UTC"))
    )
    if options.record_type:
        expression &= ds.field("type") == options.record_type
    if options.source:
        expression &= ds.field("source") == options.source
    if options.event:
        expression &= ds.field("event") == options.event
    return expression


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_of(row: dict[str, Any]) -> dict[str, Any]:
    """The event as Sluice stored it, from its Parquet row."""
    event: dict[str, Any] = {}
    for column, name in _FIELDS.items():
        if row.get(column) is not None:
            event[name] = row[column]
    for column, name in _TIMES.items():
        if row.get(column) is not None:
            event[name] = _iso(row[column])
    for name in _JSON:
        if row.get(name) is not None:
            event[name] = orjson.loads(row[name])
    return event


class Archive:
    """The selected rows of a Parquet tree, in a fixed order."""

    def __init__(self, options: ReplayOptions) -> None:
        spec = SinkSpec.parse(options.source_uri, Path.cwd())
        if spec.scheme not in ("file", "s3"):
            raise ConfigError(f"--from {options.source_uri}: replay reads file:// or s3:// trees")
        fs, root = open_filesystem(spec.uri)
        if fs.get_file_info(root).type.name == "NotFound":
            raise ConfigError(f"--from {options.source_uri}: no archive at {root}")
        self.dataset = ds.dataset(
            root,
            filesystem=fs,
            format="parquet",
            partitioning=_PARTITIONS,
            ignore_prefixes=["_", "."],
        )
        self.hours = _hour_filter(options.start, options.end)
        self.rows = _row_filter(options)
        self.fragments = sorted(
            self.dataset.get_fragments(filter=self.hours), key=lambda f: str(f.path)
        )

    def count(self) -> int:
        return sum(f.count_rows(filter=self.rows) for f in self.fragments)

    def events(self, skip: int = 0) -> Iterator[bytes]:
        """The selected events as JSON, after the first `skip`."""
        for fragment in self.fragments:
            rows = fragment.count_rows(filter=self.rows)
            if skip >= rows:
                skip -= rows
                continue
            table = fragment.to_table(filter=self.rows)
            for row in table.slice(skip).to_pylist():
                yield orjson.dumps(event_of(row))
            skip = 0


def _chunks(events: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Replay:
    """One replay run: the archive, the sink, where it got to."""

    def __init__(self, options: ReplayOptions) -> None:
        self.options = options
        self.archive = Archive(options)
        self.spec = SinkSpec.parse(options.sink_uri, Path.cwd())
        self.sink = open_sink(self.spec)
        archive = SinkSpec.parse(options.source_uri, Path.cwd())
        # Refused events go beside the archive's own dead letters.
        self.deadletters = open_sink(SinkSpec(f"{DEADLETTER_SCHEME}:{archive.uri}", archive.policy))
        self.state_file = options.state_dir / f"{options.digest}.json"
        self.log_id = f"replay-{options.digest}"
        self.delivered = 0
        self.refused = 0

    def _saved(self) -> int:
        try:
            return int(orjson.loads(self.state_file.read_bytes())["delivered"])
        except (OSError, orjson.JSONDecodeError, KeyError, ValueError):
            return 0

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        segments.write_atomic(self.state_file, orjson.dumps({"delivered": self.delivered}))

    def run(self, progress: Progress | None = None) -> int:
        """Deliver the selection; returns how many events were sent to the sink."""
        self.delivered = self._saved() if self.options.resume else 0
        total = self.archive.count()
        task = (
            progress.add_task("replay", total=total, completed=self.delivered) if progress else None
        )
        size = self.spec.policy.max_events
        if self.options.rate:
            size = max(1, min(size, int(self.options.rate)))
        started, sent = time.monotonic(), 0
        for chunk in _chunks(self.archive.events(self.delivered), size):
            # An archive is all backlog: sinks send it as fast as they can.
            batch = Batch.of(self.log_id, "replay", self.delivered, chunk, waited_s=math.inf)
            self._write(batch)
            self.delivered += len(chunk)
            sent += len(chunk)
            self._save()
            if progress is not None and task is not None:
                progress.update(task, completed=self.delivered)
            if self.options.rate:
                ahead = sent / self.options.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        return sent

    def _write(self, batch: Batch) -> None:
        """As a producer delivers: retried with backoff until written; refused events go
        to the dead letters of the archive."""
        attempt = 0
        while True:
            try:
                delivered = self.sink.write(batch)
                break
            except Exception as exc:
                attempt += 1
                delay = random.uniform(0, min(10.0, 0.2 * 2**attempt))
                print(f"sluice replay: {batch.batch_id} failed ({exc}); retry in {delay:.1f}s")
                time.sleep(delay)
        if delivered.rejected:
            self.refused += len(delivered.rejected)
            self._deadletter(batch, delivered.rejected)

    def _deadletter(self, batch: Batch, rejected: list[Rejected]) -> None:
        payloads = batch.payloads()
        letters = []
        for item in rejected:
            event = orjson.loads(payloads[item.index])
            letter = {
                "reason": f"replay to {self.spec.uri}: {item.reason}",
                "source": event.get("source"),
                "receivedAt": event.get("receivedAt"),
                "payload": event,
            }
            letters.append(orjson.dumps(letter))
        self.deadletters.write(Batch.of(f"{self.log_id}-dl", "deadletter", batch.start, letters))


class _Rate(ProgressColumn):
    """Events per second, as Rich measures the task's speed."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


def main(options: ReplayOptions) -> int:
    started = time.monotonic()
    replay = Replay(options)
    columns = (TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(), _Rate())
    with Progress(*columns, TimeRemainingColumn()) as progress:
        sent = replay.run(progress)
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        f"sluice replay: {sent} events to {replay.spec.uri} in {elapsed:.1f}s "
        f"({sent / elapsed:,.0f} events/s); {replay.refused} refused (dead-lettered); "
        f"{replay.delivered} of the selection delivered in all"
    )
    return 0
