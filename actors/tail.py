"""`WriterTail`: a producer takes what the ingress replicas wrote to their segment files.

Each `take` reads every writer's new whole frames (group commits), merged in stamp order,
up to a horizon taken before reading: a frame stamped before the horizon was written
before it, so it is seen in this take. Hence two events a client sent one after the other
(the second after the first's 200) come out in that order even when two replicas took
them: the second's stamp is later than the first's write.

`commit` saves how far each writer was taken (after the producer stored the records in
its own log: a crash in between re-takes them, at least once) and deletes segments
taken whole. A writer whose process is gone has its torn tail, if any, dropped: those
bytes were never acknowledged.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from core import segments

logger = logging.getLogger("sluice.producer")


@dataclass(frozen=True)
class Position:
    """Where the next record of a writer starts: segment number and byte offset."""

    segment: int
    offset: int


@dataclass
class Taken:
    """The frames of one `take`, and where each writer's next frame starts."""

    lengths: list[int]  # the sizes of the events, merged in stamp order
    #: The frames, whole as written (see `core.segments`): views of the bytes read, in
    #: order, for one `writev` (no copy in between).
    parts: list[memoryview]
    counts: list[int]  # per frame: its events
    overheads: list[int]  # per frame: its bytes that are not payload
    positions: dict[str, Position]
    pending_bytes: int  # written by replicas, not taken yet (past the horizon or partial)


@dataclass
class _Run:
    """What one take found in one writer's files: its whole frames up to the horizon."""

    stamps: list[int] = field(default_factory=list)  # per frame
    counts: list[int] = field(default_factory=list)  # per frame: its events
    overheads: list[int] = field(default_factory=list)  # per frame: bytes not payload
    lengths: list[int] = field(default_factory=list)  # per event
    #: Each file read: its bytes, its frames' ends there, and the run's index of its
    #: first frame.
    chunks: list[tuple[bytes, list[int], int]] = field(default_factory=list)


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False  # no pid yet: the writer is being created, or was never complete
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _frame_bytes(run: _Run, first: int, end: int) -> list[memoryview]:
    """The bytes of frames `[first, end)` of a run, as they lie in its files (views)."""
    starts = [c[2] for c in run.chunks]
    at = bisect.bisect_right(starts, first) - 1
    parts = []
    while first < end:
        data, ends, base = run.chunks[at]
        stop = min(end, base + len(ends))
        begin = ends[first - base - 1] if first > base else 0
        parts.append(memoryview(data)[begin : ends[stop - base - 1]])
        first, at = stop, at + 1
    return parts


def _merged(runs: list[_Run]) -> tuple[list[int], list[memoryview], list[int], list[int]]:
    """The runs' frames merged in stamp order (ties: writer order, then each writer's
    own): events' sizes, the frames' bytes (views, in order), and each frame's events
    and overhead."""
    groups: list[tuple[int, int, int, int]] = []  # stamp, run, first frame, end
    for order, run in enumerate(runs):
        stamps, first = run.stamps, 0
        while first < len(stamps):
            # An older Sluice's records of one group commit share their stamp: kept together.
            end = bisect.bisect_right(stamps, stamps[first], first)
            groups.append((stamps[first], order, first, end))
            first = end
    groups.sort()
    records = [list(itertools.accumulate(r.counts, initial=0)) for r in runs]
    lengths: list[int] = []
    parts: list[memoryview] = []
    counts: list[int] = []
    overheads: list[int] = []
    for _stamp, order, first, end in groups:
        run = runs[order]
        lengths += run.lengths[records[order][first] : records[order][end]]
        counts += run.counts[first:end]
        overheads += run.overheads[first:end]
        parts += _frame_bytes(run, first, end)
    return lengths, parts, counts, overheads


class WriterTail:
    """Tails `{log}/writers/*/NNN.seg`; positions persist in `{log}/tails.json`."""

    def __init__(self, log_dir: Path) -> None:
        self.writers_dir = log_dir / segments.WRITERS
        self.positions_file = log_dir / segments.TAILS
        self.positions: dict[str, Position] = {}
        if self.positions_file.exists():
            saved = orjson.loads(self.positions_file.read_bytes())
            self.positions = {w: Position(*p) for w, p in saved.items()}

    def take(self, horizon_ns: int | None = None) -> Taken:
        """New whole records of every writer stamped before `horizon_ns` (default: now)."""
        horizon = time.monotonic_ns() if horizon_ns is None else horizon_ns
        runs: list[_Run] = []
        positions: dict[str, Position] = {}
        pending = 0
        try:
            writers = sorted(w for w in os.listdir(self.writers_dir) if not w.startswith("."))
        except FileNotFoundError:
            writers = []
        for writer in writers:
            run, position, left = self._take_writer(writer, horizon)
            positions[writer] = position
            pending += left
            if run.stamps:
                runs.append(run)
        if len(runs) == 1:
            one = runs[0]
            parts = [memoryview(chunk)[: ends[-1]] for chunk, ends, _ in one.chunks]
            return Taken(one.lengths, parts, one.counts, one.overheads, positions, pending)
        return Taken(*_merged(runs), positions, pending)

    def _take_writer(self, writer: str, horizon: int) -> tuple[_Run, Position, int]:
        directory = self.writers_dir / writer
        numbers = segments.segment_numbers(directory)
        position = self.positions.get(writer) or Position(numbers[0] if numbers else 0, 0)
        run = _Run()
        pending = 0
        for index, number in enumerate(numbers):
            if number < position.segment:
                continue
            path = directory / segments.segment_name(number)
            try:
                with open(path, "rb") as f:
                    f.seek(position.offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            found = segments.scan(data)
            stamps, ends = found.stamps, found.ends
            whole = cut = len(stamps)
            while cut and stamps[cut - 1] >= horizon:
                cut -= 1  # stamps only grow within a writer: the tail past the horizon waits
            if cut:
                records = sum(found.counts[:cut]) if cut < whole else len(found.lengths)
                run.chunks.append((data, ends[:cut], len(run.stamps)))
                run.stamps += stamps[:cut]
                run.counts += found.counts[:cut]
                run.overheads += found.overheads[:cut]
                run.lengths += found.lengths[:records]
            used = ends[cut - 1] if cut else 0
            last = index == len(numbers) - 1
            if cut < whole or (last and used < len(data)):
                pending += len(data) - used
                return run, Position(number, position.offset + used), pending
            if not last:
                if used < len(data):  # a segment the writer left for a newer one ends whole
                    logger.error(
                        "%s: %d bytes past the last record dropped", path, len(data) - used
                    )
                position = Position(numbers[index + 1], 0)
                continue
            position = Position(number, position.offset + used)
        return run, position, pending

    def commit(self, positions: dict[str, Position], tidy: bool = True) -> None:
        """Save `positions` (after their records are stored) and delete what was taken;
        with `tidy`, also remove writers that died and have nothing left."""
        before, self.positions = self.positions, dict(positions)
        segments.write_atomic(
            self.positions_file,
            orjson.dumps({w: [p.segment, p.offset] for w, p in positions.items()}),
        )
        for writer, position in positions.items():
            directory = self.writers_dir / writer
            old = before.get(writer)
            if not tidy and old is not None and old.segment == position.segment:
                continue  # no segment was left behind since the last commit
            for number in segments.segment_numbers(directory):
                if number < position.segment:
                    (directory / segments.segment_name(number)).unlink(missing_ok=True)
            if tidy and not _alive(directory / "pid") and self._drained(directory, position):
                shutil.rmtree(directory, ignore_errors=True)
                self.positions.pop(writer, None)

    def _drained(self, directory: Path, position: Position) -> bool:
        """Whether a dead writer has nothing left but (maybe) a torn, unacknowledged tail."""
        numbers = segments.segment_numbers(directory)
        if not numbers:
            return True
        if numbers[-1] != position.segment:
            return False
        path = directory / segments.segment_name(position.segment)
        size = path.stat().st_size if path.exists() else 0
        with path.open("rb") as f:
            f.seek(position.offset)
            records, _ = segments.decode(f.read())
        if records:
            return False  # whole records still to take
        if size > position.offset:
            logger.warning(
                "%s: writer died mid-write; %d torn bytes dropped (never acknowledged)",
                path,
                size - position.offset,
            )
        return True
