"""`SegmentLog`: a producer's append-only log of events, with one committed cursor per sink.

On disk (in `/dev/shm` by default) a log directory holds:

- `log.id`: a random id made when the log is first created; batch ids start with it, so
  two logs never name a batch alike.
- `NNNNNNNNNNNNNNNNNNNN.seg`: segment files named by the offset of their first record,
  in the record format of `core.segments`.
- `cursor.SINK`: the first offset that sink has not committed yet.
- `batches.SINK`: the ranges sent to that sink as batches, so a reopened log re-sends
  the same ranges: same batch ids, and a re-sent S3 file replaces itself.

The producer appends what it took from the replicas' segment files, in one `write` per
call, with `fsync` when asked; a write that fails is rolled back whole. A segment is
deleted once every sink has committed past it. Memory holds only where each uncommitted
record ends (among the payloads, and in its file) and when it came (24 bytes a record); a
batch's events are read back from the segment files (in `/dev/shm`, a copy in memory),
so the events are not held twice. The records of a frame lie side by side in its file:
a batch is copied out a frame (or a run of them) at a time.
"""

from __future__ import annotations

import bisect
import itertools
import os
import secrets
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import segments

#: Buffers one `writev` takes (the kernel's IOV_MAX).
_IOV_MAX = os.sysconf("SC_IOV_MAX")

_SEGMENT_SUFFIX = segments.SUFFIX
#: Batches are read back from the segment files this much at a time, into a buffer each
#: log keeps: small enough to stay in cache for the copy off the frames (4 MiB took twice
#: as long), and no fresh memory to fault in per read. Mapping the files instead cost
#: page-table work and TLB flushes across the producer's threads per batch.
_READ_BYTES = 1024 * 1024


class LogFull(Exception):
    """The log holds its capacity of uncommitted events; a sink is behind or down."""


@dataclass
class Cursor:
    """How far one sink has committed, persisted in the log directory."""

    sink_id: str
    offset: int


@dataclass
class _Segment:
    base: int  # offset of its first record
    path: Path
    end: int  # one past its last record
    size: int
    pos: int  # payload-byte position just before its first record (see `SegmentLog._pos`)


class SegmentLog:
    """Append-only, crash-recoverable log of one producer. Not thread-safe: one owner."""

    def __init__(
        self,
        directory: Path,
        sink_ids: Iterable[str],
        *,
        capacity_bytes: int = 512 * 1024 * 1024,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: bool = False,
    ) -> None:
        self.directory = directory
        self.capacity_bytes = capacity_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        id_file = directory / "log.id"
        if not id_file.exists():
            _write_atomic(id_file, secrets.token_hex(4))
        self.log_id = id_file.read_text().strip()

        self._segments: list[_Segment] = []
        self._base = 0  # the oldest record held
        # Running payload-byte position after each held record (and before the first), so
        # sizes of ranges are a subtraction, cuts a bisection, and a record's place in its
        # segment file a sum, never a walk.
        self._ends = array("q")
        self._base_pos = 0
        self._times = array("d")  # when each held record was appended (monotonic)
        self._file_ends = array("q")  # where each held record's payload ends in its file
        self._scratch = bytearray()  # where batches are read back (see `read_joined`)
        self._fd: int | None = None
        self.cursors: dict[str, Cursor] = {}
        self._batch_lines: dict[str, int] = {}
        self._recover(list(sink_ids))

    # -- reading state -------------------------------------------------------------

    @property
    def end(self) -> int:
        """One past the newest offset."""
        return self._base + len(self._ends)

    @property
    def start(self) -> int:
        """The oldest offset still held (not yet committed by every sink)."""
        return self._base

    @property
    def held_bytes(self) -> int:
        return self._pos(self.end) - self._base_pos

    def read_joined(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Payloads of `[start, end)` side by side, and where each starts (and the last
        ends): their frames are read a few MiB at a time into a buffer kept for it, and
        each payload copied off its frame."""
        if start < self._base or end > self.end:
            raise IndexError(
                f"range [{start}, {end}) not held; log holds [{self._base}, {self.end})"
            )
        positions = array("q", [self._pos(start)])
        positions += self._ends[start - self._base : end - self._base]
        pos = np.frombuffer(positions, dtype=np.int64)
        offsets = pos - pos[0]
        file_ends = np.frombuffer(self._file_ends, dtype=np.int64)[
            start - self._base : end - self._base
        ]
        out = np.empty(int(offsets[-1]), dtype=np.uint8)
        target = out.data
        at = start
        for segment in self._segments:
            if at >= end or segment.base > at:
                break
            if segment.end <= at:
                continue
            stop = min(end, segment.end)
            i, j = at - start, stop - start
            fd = os.open(segment.path, os.O_RDONLY)
            try:
                self._copy_payloads(fd, file_ends[i:j], offsets[i : j + 1], target)
            finally:
                os.close(fd)
            at = stop
        if at < end:
            raise IndexError(f"records [{at}, {end}) are in no segment of {self.directory}")
        return out, offsets

    def _copy_payloads(
        self, fd: int, file_ends: np.ndarray, bounds: np.ndarray, target: memoryview
    ) -> None:
        """Copy consecutive records' payloads (ending at `file_ends` in `fd`) to
        `target[bounds[k]:bounds[k + 1]]`: a run of payloads side by side in the file (a
        frame's) in one piece, reading at most `_READ_BYTES` at a time; a larger run is
        read straight into place."""
        sizes = np.diff(bounds)
        file_starts = file_ends - sizes
        # Runs: records whose payload starts where the one before it ends.
        breaks = np.flatnonzero(file_starts[1:] != file_ends[:-1]) + 1
        firsts = np.concatenate(([0], breaks))
        lasts = np.concatenate((breaks, [len(file_ends)]))
        run_starts, run_ends = file_starts[firsts], file_ends[lasts - 1]
        run_bounds = bounds[np.concatenate((firsts, [len(file_ends)]))]
        first = 0
        while first < len(run_starts):
            read_from = int(run_starts[first])
            last = int(np.searchsorted(run_ends, read_from + _READ_BYTES, side="right"))
            if last <= first:  # one run larger than the buffer: read straight into place
                a, b = int(run_bounds[first]), int(run_bounds[first + 1])
                if os.preadv(fd, [target[a:b]], read_from) != b - a:
                    raise OSError(f"short read in the log {self.directory}")
                first += 1
                continue
            size = int(run_ends[last - 1]) - read_from
            if len(self._scratch) < size:
                self._scratch = bytearray(_READ_BYTES)
            view = memoryview(self._scratch)[:size]
            if os.preadv(fd, [view], read_from) != size:
                raise OSError(f"short read in the log {self.directory}")
            froms = (run_starts[first:last] - read_from).tolist()
            marks = run_bounds[first : last + 1].tolist()
            for begin, a, b in zip(froms, marks, marks[1:], strict=False):
                target[a:b] = view[begin : begin + b - a]
            view.release()
            first = last

    def appended_at(self, offset: int) -> float:
        """Monotonic time the record at `offset` was appended (or reopened)."""
        return self._times[offset - self._base]

    def cut(self, start: int, max_events: int, max_bytes: int) -> int:
        """End of the largest range from `start` within both limits (at least one record)."""
        end = min(self.end, start + max_events)
        limit = self._pos(start) + max_bytes
        within = bisect.bisect_right(self._ends, limit, start - self._base, end - self._base)
        return max(self._base + within, start + 1)

    def bytes_between(self, start: int, end: int) -> int:
        return self._pos(end) - self._pos(start)

    def _pos(self, offset: int) -> int:
        """Payload-byte position just before `offset` (a held offset, or `end`)."""
        return self._ends[offset - self._base - 1] if offset > self._base else self._base_pos

    # -- writing -------------------------------------------------------------------

    def append_records(
        self,
        lengths: Sequence[int],
        parts: Sequence[bytes | memoryview],
        counts: Sequence[int],
        overheads: Sequence[int],
    ) -> int:
        """Store frames taken whole from replicas' files (`parts`, their bytes in order;
        `lengths`: their events' sizes; `counts`, `overheads`: each frame's events and
        bytes that are not payload), whatever the fill: they were acknowledged. Returns
        the first offset."""
        return self._write(lengths, parts, counts, overheads)

    def append(self, payloads: list[bytes], *, force: bool = False) -> int:
        """Store `payloads` durably (as durable as the directory); returns the first offset.

        Raises `LogFull` and stores nothing when the log is at capacity, unless `force`
        (events already acknowledged elsewhere). A failed write (`OSError`, e.g. a full
        disk) is rolled back: the log holds all of `payloads` or none.
        """
        lengths = [len(p) for p in payloads]
        if not force and self.held_bytes + sum(lengths) > self.capacity_bytes and self._ends:
            raise LogFull(
                f"log {self.directory} holds {self.held_bytes} bytes of uncommitted events "
                f"(capacity {self.capacity_bytes})"
            )
        data = segments.encode(payloads, time.monotonic_ns())  # one frame
        return self._write(lengths, [data], [len(payloads)], [segments.overhead(len(payloads))])

    def _write(
        self,
        lengths: Sequence[int],
        parts: Sequence[bytes | memoryview],
        counts: Sequence[int],
        overheads: Sequence[int],
    ) -> int:
        first = self.end
        segment = self._segments[-1] if self._segments else None
        if segment is None or segment.size >= self.segment_bytes:
            segment = self._open_segment(first, self._pos(first))
        assert self._fd is not None
        size = 0
        try:
            for at in range(0, len(parts), _IOV_MAX):  # `writev` takes this many at most
                chunk = parts[at : at + _IOV_MAX]
                want = sum(map(len, chunk))
                written = os.writev(self._fd, chunk)
                if written != want:
                    raise OSError(f"short write: {written} of {want} bytes")
                size += written
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, segment.size)  # back to the last whole record
            raise
        payload_ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
        self._file_ends.frombytes(
            _file_ends(segment.size, payload_ends, counts, overheads).tobytes()
        )
        self._ends.frombytes((payload_ends + self._pos(first)).tobytes())
        segment.size += size
        segment.end += len(lengths)
        self._times.extend(itertools.repeat(time.monotonic(), len(lengths)))
        return first

    def commit(self, sink_id: str, offset: int) -> None:
        """Record that `sink_id` has everything before `offset`; frees what all sinks have."""
        cursor = self.cursors[sink_id]
        if offset <= cursor.offset:
            return
        cursor.offset = offset
        _write_atomic(self.directory / f"cursor.{sink_id}", str(offset))
        self._trim()

    def record_batch(self, sink_id: str, start: int, end: int) -> None:
        """Remember that `[start, end)` went to `sink_id` as one batch."""
        path = self.directory / f"batches.{sink_id}"
        lines = self._batch_lines.get(sink_id, 0)
        if lines >= 256:  # keep the file short: rewrite it with the uncommitted ranges
            cursor = self.cursors[sink_id].offset
            kept = [r for r in self._read_batches(sink_id) if r[1] > cursor]
            _write_atomic(path, "".join(f"{a} {b}\n" for a, b in kept))
            lines = len(kept)
        with path.open("a") as f:
            f.write(f"{start} {end}\n")
        self._batch_lines[sink_id] = lines + 1

    def unfinished_batches(self, sink_id: str) -> list[tuple[int, int]]:
        """Ranges sent to `sink_id` before a reopen, not committed, contiguous from its cursor."""
        ranges: list[tuple[int, int]] = []
        expected = self.cursors[sink_id].offset
        for start, end in self._read_batches(sink_id):
            if start == expected and end <= self.end:
                ranges.append((start, end))
                expected = end
        return ranges

    def _read_batches(self, sink_id: str) -> list[tuple[int, int]]:
        path = self.directory / f"batches.{sink_id}"
        if not path.exists():
            return []
        ranges = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                ranges.append((int(parts[0]), int(parts[1])))
        return ranges

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- internals -----------------------------------------------------------------

    def _open_segment(self, base: int, position: int) -> _Segment:
        if self._fd is not None:
            os.close(self._fd)
        path = self.directory / f"{base:020d}{_SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        segment = _Segment(base=base, path=path, end=base, size=0, pos=position)
        self._segments.append(segment)
        return segment

    def _trim(self) -> None:
        committed = min(c.offset for c in self.cursors.values())
        while self._segments and self._segments[0].end <= committed:
            segment = self._segments.pop(0)
            if not self._segments and self._fd is not None:
                os.close(self._fd)  # the newest: the next append opens a new one
                self._fd = None
            segment.path.unlink(missing_ok=True)
        drop = committed - self._base
        if drop > 0 and (drop >= 4096 or drop == len(self._ends)):
            self._base_pos = self._ends[drop - 1]
            del self._ends[:drop]
            del self._times[:drop]
            del self._file_ends[:drop]
            self._base = committed

    def _recover(self, sink_ids: list[str]) -> None:
        stored = {}
        for path in self.directory.glob("cursor.*"):
            stored[path.name.removeprefix("cursor.")] = int(path.read_text().strip() or 0)
        files = sorted(self.directory.glob(f"*{_SEGMENT_SUFFIX}"))
        lengths: list[int] = []
        base = (files and int(files[0].name.removesuffix(_SEGMENT_SUFFIX))) or 0
        expected = base
        position = 0
        for path in files:
            seg_base = int(path.name.removesuffix(_SEGMENT_SUFFIX))
            if seg_base != expected:
                raise RuntimeError(f"log {self.directory}: segment {path.name} leaves a gap")
            frames = segments.scan(path.read_bytes())
            sizes = frames.lengths
            valid_size = frames.ends[-1] if frames.ends else 0
            if valid_size < path.stat().st_size:
                # A torn tail from a crash mid-write: it was never acknowledged.
                os.truncate(path, valid_size)
            lengths += sizes
            payload_ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
            file_ends = _file_ends(0, payload_ends, frames.counts, frames.overheads)
            self._file_ends.frombytes(file_ends.tobytes())
            self._segments.append(
                _Segment(seg_base, path, seg_base + len(sizes), valid_size, position)
            )
            position += sum(sizes)
            expected = seg_base + len(sizes)
        end = base + len(lengths)
        # Offsets never go back, even when every segment was committed and deleted.
        end_floor = max([end, *stored.values()])
        for sink_id in sink_ids:
            # A sink new to this log starts at the oldest record still held.
            self.cursors[sink_id] = Cursor(sink_id, stored.get(sink_id, base))
        if not lengths:
            base = end_floor
        self._base = base
        self._times = array("d", itertools.repeat(time.monotonic(), len(lengths)))
        self._ends = array("q", itertools.accumulate(lengths))
        if self._segments:
            last = self._segments[-1]
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        for cursor in self.cursors.values():
            cursor.offset = min(max(cursor.offset, self._base), self.end)
        self._trim()


def _file_ends(
    at: int, payload_ends: np.ndarray, counts: Sequence[int], overheads: Sequence[int]
) -> np.ndarray:
    """Where each record's payload ends in a file whose frames (`counts` records each,
    `overheads` bytes that are not payload) start at `at`; `payload_ends`: the running
    sum of the records' sizes."""
    framing = np.repeat(np.cumsum(np.asarray(overheads, dtype=np.int64)), counts)
    return payload_ends + framing + at


def _write_atomic(path: Path, text: str) -> None:
    segments.write_atomic(path, text.encode())
