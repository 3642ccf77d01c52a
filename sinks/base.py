"""The one interface every sink implements, and the batch it receives."""

from __future__ import annotations

import array
import itertools
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.config import SinkSpec


def arrow_allocates_with_malloc() -> None:
    """Arrow's buffers from the C library's `malloc` instead of mimalloc, Arrow's default:
    with `core.memory.return_large_frees`, a batch's columns go back to the system when
    freed, where mimalloc kept some (45 MiB less service PSS over a 40-s `batch` bench,
    mostly in the Parquet consumer, at the same throughput)."""
    pa.set_memory_pool(pa.system_memory_pool())


@dataclass(frozen=True)
class Batch:
    """A contiguous range `[start, end)` of one producer's log, on its way to one sink.

    `events` has one binary column, `event`: the enriched event as JSON, in log order.
    It travels through Ray's object store; the producer's log keeps the real copy.
    `waited_s`: how long its first event had waited in the log when it was sent, which
    grows when the sink falls behind.
    """

    log_id: str
    record_type: str
    start: int
    end: int
    events: pa.RecordBatch
    waited_s: float = 0.0

    @property
    def batch_id(self) -> str:
        """Derived from the log range, so a retried write replaces itself."""
        return f"{self.log_id}-{self.start:012d}-{self.end - 1:012d}"

    def payloads(self) -> list[bytes]:
        return self.events.column(0).to_pylist()  # type: ignore[no-any-return]

    @classmethod
    def of(
        cls,
        log_id: str,
        record_type: str,
        start: int,
        payloads: list[bytes],
        waited_s: float = 0.0,
    ) -> Batch:
        # One joined buffer and its offsets: no Arrow conversion per payload.
        offsets = array.array("q", itertools.accumulate(map(len, payloads), initial=0))
        return cls.of_buffer(log_id, record_type, start, b"".join(payloads), offsets, waited_s)

    @classmethod
    def of_buffer(
        cls,
        log_id: str,
        record_type: str,
        start: int,
        data: bytes | np.ndarray,
        offsets: np.ndarray | array.array[int],
        waited_s: float = 0.0,
    ) -> Batch:
        """The batch of payloads lying side by side in `data`, payload `i` at
        `data[offsets[i]:offsets[i + 1]]` (`offsets`: int64, one more than payloads)."""
        count = len(offsets) - 1
        column = pa.Array.from_buffers(
            pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        events = pa.record_batch([column], names=["event"])
        return cls(log_id, record_type, start, start + count, events, waited_s)


def offsets_of(events: pa.Array) -> np.ndarray:
    """Where each payload of a `large_binary` column starts in its data buffer, and where
    the last ends (a view, no copy)."""
    offsets = np.frombuffer(events.buffers()[1], dtype=np.int64)
    return offsets[events.offset : events.offset + len(events) + 1]


def joined(events: pa.Array, separator: bytes) -> memoryview:
    """The payloads of a `large_binary` column with `separator` between them, joined by
    Arrow in one pass (no Python object per event; faster than numpy's insert too)."""
    lists = pa.LargeListArray.from_arrays(pa.array([0, len(events)], pa.int64()), events)
    one = pc.binary_join(lists, pa.scalar(separator, pa.large_binary()))
    # Straight off the result's data buffer: `one[0]` would copy the whole text into a
    # scalar (fresh pages, faulted in, for every batch).
    start, end = offsets_of(one).tolist()
    data = one.buffers()[2]
    return memoryview(data)[start:end] if data is not None else memoryview(b"")


@dataclass(frozen=True)
class Rejected:
    """An event of a batch that this sink can never accept (it goes to the dead letters)."""

    index: int  # position in the batch
    reason: str


@dataclass(frozen=True)
class Delivered:
    """What a sink did with a batch: the events it can never accept, and where the rest
    went (for traces): the keys it wrote (file, S3), or per event index its
    `shard/sequence number` (Kinesis), or the receiver's answer (webhook)."""

    rejected: list[Rejected] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    by_index: bool = False  # `locations` has one entry per event of the batch
    values_rejected: int = 0  # typed tables: values kept in `_rejected` (sinks/tables.py)


class Sink(Protocol):
    """A destination. `write` is idempotent per `batch.batch_id`.

    `write` raises on a failure worth retrying (the whole batch is sent again later) and
    returns the events it can never accept, which are dead-lettered with the reason.
    """

    def __init__(self, spec: SinkSpec) -> None: ...

    def write(self, batch: Batch) -> Delivered: ...

    def close(self) -> None: ...


def write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write `table` at `path` so that readers never see it half-written: on S3 an object
    appears whole when its upload completes; on a local disk it is written aside, then
    renamed."""
    if not isinstance(fs, pafs.LocalFileSystem):
        pq.write_table(table, path, filesystem=fs, compression="zstd")
        return
    directory, name = path.rsplit("/", 1)
    fs.create_dir(directory, recursive=True)
    tmp = f"{directory}/.{name}.tmp"
    pq.write_table(table, tmp, filesystem=fs, compression="zstd")
    fs.move(tmp, path)
