"""`SeenIds`: which `(source, messageId)` were stored within the last `dedup_window`.

A Bloom filter per time slice, in files of the node's log directory that every replica
maps into memory (`mmap`): replicas share what they saw without a message, and a
restarted service finds it again. Slice `n` covers `[n * window, (n + 1) * window)`;
an id is looked up in the current and the previous slice and added to the current one,
so a repeat within `window` seconds is always caught (and one up to twice that, maybe).

Each slice is sized for `dedup_capacity` ids at a false-positive rate of `FP_RATE`: a
false positive is an event answered 200 and not stored, so it is kept tiny. Past its
capacity a slice takes no more ids (new ids then pass undetected: delivery stays
at-least-once, and the rate never grows past `FP_RATE`). Two replicas setting bits of
one byte at once may lose one of the bits: a duplicate may then pass, never an event
be dropped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import struct
import time
from pathlib import Path

import numpy as np
import xxhash

logger = logging.getLogger("sluice.ingress")

FP_RATE = 1e-6
_HEADER = struct.Struct("<QQ")  # ids added, bits
_HEADER_BYTES = 64
#: Below this many ids a request is checked in Python; above it, with numpy.
_VECTOR_FROM = 8
_U64 = (1 << 64) - 1  # numpy's uint64 arithmetic wraps; the Python path does the same


#: An id's two 64-bit hashes; its bit positions are `h1 + i * h2` (double hashing).
Key = tuple[int, int]


def _hashes(source: str, message_ids: list[str]) -> list[Key]:
    # xxh3-128: a third of blake2b's time per id (26 against 88 µs per 100 ids), and
    # as stable across processes and restarts.
    digest = xxhash.xxh3_128_intdigest
    return [
        ((h := digest(f"{source}\0{message_id}".encode())) & _U64, (h >> 64) | 1)
        for message_id in message_ids
    ]


class _Slice:
    """One Bloom filter file, mapped into memory."""

    def __init__(self, path: Path, bits: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = _HEADER_BYTES + bits // 8
            # Every page taken now (a no-op once done): a mapped page that a full tmpfs
            # cannot give later would kill the replica (SIGBUS) instead of failing here.
            os.posix_fallocate(fd, 0, size)
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.bits = bits
        self.bytes = np.frombuffer(self.map, dtype=np.uint8, offset=_HEADER_BYTES)
        self.view = memoryview(self.map)[_HEADER_BYTES:]  # plain ints, for a few ids

    @property
    def added(self) -> int:
        return int(_HEADER.unpack_from(self.map, 0)[0])

    def count(self, amount: int) -> None:
        _HEADER.pack_into(self.map, 0, self.added + amount, self.bits)

    def close(self) -> None:
        del self.bytes
        self.view.release()
        with contextlib.suppress(BufferError):
            self.map.close()


class SeenIds:
    """The node's seen-set; one per replica, over files shared by all."""

    def __init__(self, directory: Path, window_s: float, capacity: int) -> None:
        self.directory = directory
        self.window_s = window_s
        self.capacity = capacity
        self.k = max(1, round(-math.log2(FP_RATE)))
        bits = math.ceil(-capacity * math.log(FP_RATE) / math.log(2) ** 2)
        self.bits = (bits + 63) // 64 * 64
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
        bits = math.ceil(-capacity * math.log(FP_RATE) / math.log(2) ** 2)
        return 2 * (_HEADER_BYTES + (bits + 63) // 64 * 8)

    def _slice(self, number: int) -> _Slice | None:
        """Slice `number`, or None when it cannot be made (no room): ids pass unchecked."""
        found = self.slices.get(number)
        if found is None:
            try:
                found = _Slice(self.directory / f"{number}.bloom", self.bits)
            except OSError as exc:
                if not self.failed:
                    logger.error("de-duplication off for now: cannot make a slice: %s", exc)
                self.failed = True
                return None
            self.slices[number] = found
            self._forget_before(number - 1)
        return found

    def _forget_before(self, number: int) -> None:
        for old in [n for n in self.slices if n < number]:
            self.slices.pop(old).close()
        for path in self.directory.glob("*.bloom"):
            if path.stem.isdigit() and int(path.stem) < number:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _positions(self, hashes: list[Key]) -> np.ndarray:
        h1 = np.array([h for h, _ in hashes], dtype=np.uint64)[:, None]
        h2 = np.array([h for _, h in hashes], dtype=np.uint64)[:, None]
        steps = np.arange(self.k, dtype=np.uint64)[None, :]
        with np.errstate(over="ignore"):
            return (h1 + steps * h2) % np.uint64(self.bits)

    @staticmethod
    def keys(source: str, message_ids: list[str]) -> list[Key]:
        """The keys of `(source, id)` pairs: made once, for `seen` and then `add`."""
        return _hashes(source, message_ids)

    def seen(self, hashes: list[Key]) -> list[bool]:
        """For each key, whether it was added within the window."""
        if not hashes:
            return []
        now = int(time.time() // self.window_s)
        slices = [s for s in (self._slice(now), self._slice(now - 1)) if s is not None]
        if len(hashes) < _VECTOR_FROM:
            return [any(self._has(s, h) for s in slices) for h in hashes]
        positions = self._positions(hashes)
        byte, mask = (
            positions >> np.uint64(3),
            np.left_shift(np.uint64(1), positions & np.uint64(7)).astype(np.uint8),
        )
        found = np.zeros(len(hashes), dtype=bool)
        for s in slices:
            found |= ((s.bytes[byte] & mask) != 0).all(axis=1)
        return found.tolist()

    def _has(self, s: _Slice, h: Key) -> bool:
        h1, h2 = h
        data, bits = s.view, self.bits
        for i in range(self.k):
            bit = ((h1 + i * h2) & _U64) % bits
            if not data[bit >> 3] & (1 << (bit & 7)):
                return False
        return True

    def add(self, hashes: list[Key]) -> None:
        """Remember the keys of events stored just now, in the current slice."""
        if not hashes:
            return
        current = self._slice(int(time.time() // self.window_s))
        if current is None or current.added >= self.capacity:
            return  # full: see the module's docstring
        if len(hashes) < _VECTOR_FROM:
            data, bits = current.view, self.bits
            for h1, h2 in hashes:
                for i in range(self.k):
                    bit = ((h1 + i * h2) & _U64) % bits
                    data[bit >> 3] |= 1 << (bit & 7)
        else:
            positions = self._positions(hashes).ravel()
            masks = np.left_shift(np.uint64(1), positions & np.uint64(7)).astype(np.uint8)
            np.bitwise_or.at(current.bytes, positions >> np.uint64(3), masks)
        current.count(len(hashes))

    def close(self) -> None:
        for s in self.slices.values():
            s.close()
        self.slices.clear()
