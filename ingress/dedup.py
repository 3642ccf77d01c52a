"""`SeenIds`: which `(source, messageId)` were stored within the last `dedup_window`.

A table of id fingerprints per time slice, in files of the node's log directory that
every replica maps into memory (`mmap`): replicas share what they saw without a message,
and a restarted service finds it again. Slice `n` covers `[n * window, (n + 1) * window)`;
an id is looked up in the current and the previous slice and added to the current one,
so a repeat within `window` seconds is always caught (and one up to twice that, maybe).

Each id has a 64-bit fingerprint (odd, so never the empty slot's 0) and two buckets of
`SLOTS` fingerprints, 64 bytes each (a cache line): a lookup reads two lines, and an
id goes into the emptier of its buckets. A new id is taken for a repeat only when an
id stored in one of the buckets it reads has the same 63 bits: `FP_RATE`, about 3e-18
a lookup, so no event answered 200 is dropped in practice. (A Bloom filter, which
Sluice used before, had to be sized against its false positives: 8e-9 at capacity,
which a five-minute bench of 18 million events met once.) Past its capacity, or with
both buckets full, a slice takes no more ids: new ids then pass unremembered, and a
repeat of one is stored again (at-least-once, never a drop). Two replicas writing one
empty slot at once may lose one of the two ids the same way.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import time
from pathlib import Path

import numpy as np
import xxhash

logger = logging.getLogger("sluice.ingress")

#: Fingerprints per bucket: 8 x 8 bytes, one cache line.
SLOTS = 8
#: At capacity this share (percent) of the slots is taken. Two choices an id fill the
#: buckets evenly: at capacity about 2 ids in 10,000 find both of theirs full (90% left
#: 14 in 1,000 out, 75% 1 in 100,000).
LOAD_PERCENT = 80
#: A new id looked up in two slices, two buckets each: `SLOTS` fingerprints of 63 bits
#: per bucket that could equal its own.
FP_RATE = 2 * 2 * SLOTS * 2.0**-63
_HEADER = struct.Struct("<QQ")  # ids added, buckets
_HEADER_BYTES = 64
_BUCKET_BYTES = SLOTS * 8
_BUCKET = struct.Struct(f"<{SLOTS}Q")
_SLOT = struct.Struct("<Q")
#: Below this many ids a request is checked in Python; above it, with numpy.
_VECTOR_FROM = 8
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
#: A bucket's `SLOTS` flags (bytes) read as one word, times this: their sum in the top byte.
_BYTE_SUM = np.uint64(0x0101010101010101)
assert SLOTS == 8, "a bucket's flags are read as one 8-byte word"
#: Rounds of placing a request's ids: ids that chose one bucket take turns, one a round.
_ROUNDS = 4


def _hashes(source: str, message_ids: list[str]) -> list[tuple[int, int]]:
    """Each id's two 64-bit hashes: the first picks its buckets, the second is its
    fingerprint."""
    # xxh3-128, seeded by the source: a third of blake2b's time per id, and as stable
    # across processes and restarts.
    digest, seed = xxhash.xxh3_128_intdigest, xxhash.xxh3_64_intdigest(source.encode())
    return [((h := digest(m.encode(), seed)) & _U64, (h >> 64) | 1) for m in message_ids]


def _pairs_and_fingerprints(
    source: str, message_ids: list[str], buckets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each id's two buckets (an `(n, 2)` array) and fingerprint, as `_hashes` makes them,
    in a few numpy calls: the buckets come from the low hash's two 32-bit halves, read
    straight off the digests' bytes (big-endian: high word, then low; each high half
    first)."""
    digest, seed = xxhash.xxh3_128_digest, xxhash.xxh3_64_intdigest(source.encode())
    joined = b"".join([digest(m.encode(), seed) for m in message_ids])
    halves = np.frombuffer(joined, dtype=">u4").reshape(-1, 4)
    pairs = (halves[:, [3, 2]] % np.uint64(buckets)).astype(np.intp)
    fingerprints = np.frombuffer(joined, dtype=">u8")[0::2] | np.uint64(1)
    return pairs, fingerprints


def _buckets_needed(capacity: int) -> int:
    return max(16, -(-capacity * 100 // (SLOTS * LOAD_PERCENT)))


class Lookup:
    """Where the ids of one request sit in the table, and which of them it has seen.

    Made once per request by `SeenIds.lookup`: `seen` for the answer, then
    `SeenIds.add` for the ids that were stored. A few ids are worked out in Python,
    many with numpy; for many, the lookup's gather also places them, and `add` writes
    them where placed (83 -> 66 µs for 100 new ids against a full-size table).
    """

    def __init__(
        self,
        first: list[int],
        second: list[int],
        fingerprints: list[int] | np.ndarray,
        pairs: np.ndarray | None = None,
    ) -> None:
        self.first = first  # a few ids: each id's buckets as lists
        self.second = second
        self.pairs = pairs  # many ids: both buckets of each, one row an id
        self.fingerprints = fingerprints
        self.seen: list[bool] = []
        # Many ids: where each goes in slice `number` (the emptier of its buckets, that
        # bucket's first empty slot, -1 when both are full), read in the lookup's gather.
        self.number: int | None = None
        self.slots: np.ndarray | None = None


class _Slice:
    """One fingerprint table file, mapped into memory."""

    def __init__(self, path: Path, buckets: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = _HEADER_BYTES + buckets * _BUCKET_BYTES
            # Every page taken now (a no-op once done): a mapped page that a full tmpfs
            # cannot give later would kill the replica (SIGBUS) instead of failing here.
            os.posix_fallocate(fd, 0, size)
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.buckets = buckets
        words = np.frombuffer(self.map, dtype="<u8", offset=_HEADER_BYTES)
        self.words = words.reshape(buckets, SLOTS)
        self.view = memoryview(self.map)[_HEADER_BYTES:]  # plain ints, for a few ids

    @property
    def added(self) -> int:
        return int(_HEADER.unpack_from(self.map, 0)[0])

    def count(self, amount: int) -> None:
        _HEADER.pack_into(self.map, 0, self.added + amount, self.buckets)

    def bucket(self, number: int) -> tuple[int, ...]:
        return _BUCKET.unpack_from(self.view, number * _BUCKET_BYTES)

    def put(self, number: int, slot: int, fingerprint: int) -> None:
        _SLOT.pack_into(self.view, number * _BUCKET_BYTES + slot * 8, fingerprint)

    def holds(self, first: int, second: int, fingerprint: int) -> bool:
        return fingerprint in self.bucket(first) or fingerprint in self.bucket(second)

    def add(self, first: int, second: int, fingerprint: int) -> bool:
        """Put one fingerprint in the emptier of its buckets; False when both are full."""
        one, other = self.bucket(first), self.bucket(second)
        if fingerprint in one or fingerprint in other:
            return True
        if other.count(0) > one.count(0):
            first, one = second, other
        if 0 not in one:
            return False
        self.put(first, one.index(0), fingerprint)
        return True

    def add_many(self, pairs: np.ndarray, fingerprints: np.ndarray) -> int:
        """Put fingerprints in the emptier of their buckets (`pairs`, a row an id), a few
        numpy calls a round; ids that chose the same bucket in one round take turns.
        Returns how many went in."""
        placed = 0
        pending = np.arange(len(fingerprints))
        for _ in range(_ROUNDS):
            if not len(pending):
                break
            choices = pairs[pending]
            empty = self.words[choices] == 0  # (ids, 2 buckets, SLOTS)
            free = empty.sum(axis=2)
            other = (free[:, 1] > free[:, 0]).astype(np.intp)  # ties: the first bucket
            ids = np.arange(len(pending))
            bucket, space = choices[ids, other], empty[ids, other]
            room = space.any(axis=1)
            if not room.all():  # both buckets full: the id passes unremembered
                pending, bucket, space = pending[room], bucket[room], space[room]
            _, firsts = np.unique(bucket, return_index=True)
            slots = np.argmax(space[firsts], axis=1)
            self.words[bucket[firsts], slots] = fingerprints[pending[firsts]]
            placed += len(firsts)
            pending = np.delete(pending, firsts)
        return placed

    def put_placed(self, slots: np.ndarray, pairs: np.ndarray, fingerprints: np.ndarray) -> int:
        """Write fingerprints where their lookup placed them (`slots`: word numbers; -1,
        both buckets full: passes unremembered). A slot taken since (another request or
        replica), or chosen by two ids of this request, leaves its id to `add_many`.
        Returns how many went in."""
        words = self.words.reshape(-1)
        placed = slots >= 0
        free = placed.copy()
        free[placed] = words[slots[placed]] == 0
        targets, fps = slots[free], fingerprints[free]
        words[targets] = fps
        won = words[targets] == fps  # of two ids on one slot, the last write stays
        count = int(won.sum())
        if count == int(placed.sum()):
            return count
        free[np.flatnonzero(free)[~won]] = False
        again = placed & ~free
        return count + self.add_many(pairs[again], fingerprints[again])

    def close(self) -> None:
        del self.words
        self.view.release()
        with contextlib.suppress(BufferError):
            self.map.close()


class SeenIds:
    """The node's seen-set; one per replica, over files shared by all."""

    def __init__(self, directory: Path, window_s: float, capacity: int) -> None:
        self.directory = directory
        self.window_s = window_s
        self.capacity = capacity
        self.buckets = _buckets_needed(capacity)
        self.slices: dict[int, _Slice] = {}
        self.failed = False
        directory.mkdir(parents=True, exist_ok=True)
        # Made (allocated, mapped) now, at the replica's start, not on its first request.
        now = int(time.time() // window_s)
        self._slice(now)
        self._slice(now - 1)

    @staticmethod
    def space_needed(capacity: int) -> int:
        """Bytes of the log directory two slices of `capacity` ids take."""
        return 2 * (_HEADER_BYTES + _buckets_needed(capacity) * _BUCKET_BYTES)

    def _slice(self, number: int) -> _Slice | None:
        """Slice `number`, or None when it cannot be made (no room): ids pass unchecked."""
        found = self.slices.get(number)
        if found is None:
            try:
                found = _Slice(self.directory / self._name(number), self.buckets)
            except OSError as exc:
                if not self.failed:
                    logger.error("de-duplication off for now: cannot make a slice: %s", exc)
                self.failed = True
                return None
            self.slices[number] = found
            self._forget_before(number - 1)
        return found

    def _name(self, number: int) -> str:
        # The layout is in the name: files of another layout or size (an older Sluice,
        # another dedup_capacity) are never read as this one's.
        return f"{number}.{self.buckets}x{SLOTS}.seen"

    def _forget_before(self, number: int) -> None:
        for old in [n for n in self.slices if n < number]:
            self.slices.pop(old).close()
        for path in self.directory.iterdir():
            if path.suffix == ".bloom":  # an older Sluice's Bloom filters
                path.unlink(missing_ok=True)
                continue
            if path.suffix != ".seen":
                continue
            slice_number = path.name.split(".", 1)[0]
            current = slice_number.isdigit() and path.name == self._name(int(slice_number))
            if not current or int(slice_number) < number:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def lookup(self, source: str, message_ids: list[str]) -> Lookup:
        """Where `(source, id)` pairs sit, and whether each was added within the window."""
        buckets = self.buckets
        if len(message_ids) < _VECTOR_FROM:
            hashes = _hashes(source, message_ids)
            found = Lookup(
                [(h1 & _U32) % buckets for h1, _ in hashes],
                [(h1 >> 32) % buckets for h1, _ in hashes],
                [fp for _, fp in hashes],
            )
        else:
            pairs, fingerprints = _pairs_and_fingerprints(source, message_ids, buckets)
            found = Lookup([], [], fingerprints, pairs)
        found.seen = self._seen(found) if message_ids else []
        return found

    def _seen(self, found: Lookup) -> list[bool]:
        now = int(time.time() // self.window_s)
        slices = [s for s in (self._slice(now), self._slice(now - 1)) if s is not None]
        if found.pairs is None:
            return [
                any(s.holds(a, b, fp) for s in slices)
                for a, b, fp in zip(found.first, found.second, found.fingerprints, strict=True)
            ]
        # Both buckets of every id in one gather a slice.
        fps = np.asarray(found.fingerprints)[:, None, None]
        gathered = [s.words[found.pairs] for s in slices]
        if not gathered:
            return [False] * len(fps)
        if slices[0] is self.slices.get(now):
            self._place(found, gathered[0], now)
        # An id's 16 comparisons, as bytes, read as two words: any set is a hit.
        hits = [(g == fps).view(np.uint64)[:, :, 0] for g in gathered]
        words = hits[0] | hits[1] if len(hits) == 2 else hits[0]
        return list(((words[:, 0] | words[:, 1]) != 0).tolist())

    @staticmethod
    def _place(found: Lookup, buckets: np.ndarray, number: int) -> None:
        """Where each id of `found` goes in slice `number`, from its `buckets` as the
        lookup gathered them: `add` writes there without reading the table again.

        A bucket fills from its first slot on (nothing is taken out), so its first empty
        slot is its count of fingerprints: the 8 bytes of its slots' `!= 0` read as one
        word, times 0x0101..., leave that sum in the top byte.
        """
        assert found.pairs is not None
        taken = (buckets != 0).view(np.uint64)[:, :, 0]  # (ids, 2 buckets)
        fill = (taken * _BYTE_SUM) >> np.uint64(56)
        pairs = found.pairs
        bucket = np.where(fill[:, 1] < fill[:, 0], pairs[:, 1], pairs[:, 0])  # ties: the first
        least = np.minimum(fill[:, 0], fill[:, 1]).astype(np.intp)
        found.slots = np.where(least < SLOTS, bucket * SLOTS + least, -1)
        found.number = number

    def add(self, found: Lookup, stored: list[bool] | None = None) -> None:
        """Remember the ids of `found` that were stored just now (all, or where `stored`),
        in the current slice."""
        current = self._slice(int(time.time() // self.window_s))
        if current is None or current.added >= self.capacity:
            return  # full: see the module's docstring
        if found.pairs is None:
            ids = list(zip(found.first, found.second, found.fingerprints, strict=True))
            if stored is not None:
                ids = [i for i, keep in zip(ids, stored, strict=True) if keep]
            current.count(sum(current.add(*i) for i in ids))
            return
        pairs, fps, slots = found.pairs, np.asarray(found.fingerprints), found.slots
        if stored is not None:
            keep = np.array(stored, dtype=bool)
            pairs, fps = pairs[keep], fps[keep]
            slots = None if slots is None else slots[keep]
        if slots is None or found.number != int(time.time() // self.window_s):
            current.count(current.add_many(pairs, fps))  # a new slice since the lookup
            return
        current.count(current.put_placed(slots, pairs, fps))

    def close(self) -> None:
        for s in self.slices.values():
            s.close()
        self.slices.clear()
