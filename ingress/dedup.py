"""`SeenIds`: which `(source, messageId)` were stored within the last `dedup_window`.

A Bloom filter per time slice, in files of the node's log directory that every replica
maps into memory (`mmap`): replicas share what they saw without a message, and a
restarted service finds it again. Slice `n` covers `[n * window, (n + 1) * window)`;
an id is looked up in the current and the previous slice and added to the current one,
so a repeat within `window` seconds is always caught (and one up to twice that, maybe).

The filter is blocked: an id's `K` bits all lie in one 64-byte block (a cache line), so
a lookup costs one memory miss instead of `K` (the slices are tens of MiB; with bits
spread over them, de-duplication cost a sixth of the batch throughput). Blocks fill
unevenly, so a blocked filter needs more bits per id than a plain one for the same
rate: `BITS_PER_ID` and `K` give `FP_RATE` at capacity. A false positive is an event
answered 200 and not stored, so it is kept tiny. Past its capacity a slice takes no
more ids (new ids then pass undetected: delivery stays at-least-once, and the rate
never grows past `FP_RATE`). Two replicas setting bits of one block at once may lose
some of them: a duplicate may then pass, never an event be dropped.
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

#: At capacity, a blocked filter of 64 bits per id and 20 bits per id in 512-bit blocks
#: answers "seen" for a new id with probability 8.2e-9 (the Poisson spread of ids over
#: blocks, summed; 40 bits and 17 gave 7.1e-7, which a 5-minute bench past capacity
#: showed as 3 events lost of 17 million).
BITS_PER_ID = 64
K = 20
FP_RATE = 1e-8
_BLOCK_BITS = 512
_WORDS = _BLOCK_BITS // 64
_HEADER = struct.Struct("<QQ")  # ids added, blocks
_HEADER_BYTES = 64
#: Below this many ids a request is checked in Python; above it, with numpy.
_VECTOR_FROM = 8
_U64 = (1 << 64) - 1


def _splitmix64(n: int) -> list[int]:
    """`n` fixed pseudo-random odd 64-bit constants (SplitMix64 from seed 0)."""
    out, state = [], 0
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & _U64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
        out.append((z ^ (z >> 31)) | 1)
    return out


#: An id's bit `i` in its block is the top 9 bits of `h2 * _MULTIPLIERS[i]` (mod 2**64):
#: multiply-shift hashing, one random odd constant per bit.
_MULTIPLIERS = _splitmix64(K)
_SHIFT = 64 - 9
_NP_MULTIPLIERS = np.array(_MULTIPLIERS, dtype=np.uint64)[None, :]


def _hashes(source: str, message_ids: list[str]) -> list[tuple[int, int]]:
    """Each id's two 64-bit hashes: the first picks its block, the second its bits."""
    # xxh3-128, seeded by the source: a third of blake2b's time per id, and as stable
    # across processes and restarts.
    digest, seed = xxhash.xxh3_128_intdigest, xxhash.xxh3_64_intdigest(source.encode())
    return [((h := digest(m.encode(), seed)) & _U64, h >> 64) for m in message_ids]


def _mask(h2: int) -> int:
    """An id's bits in its block, as a 512-bit int (bit `p` = byte `p // 8`, little end)."""
    mask = 0
    for m in _MULTIPLIERS:
        mask |= 1 << (((h2 * m) & _U64) >> _SHIFT)
    return mask


class Lookup:
    """Where the ids of one request sit in the filter, and which of them it has seen.

    Made once per request by `SeenIds.lookup`: `seen` for the answer, then
    `SeenIds.add` for the ids that were stored. A few ids are worked out in Python,
    many with numpy (block numbers, and masks as `_WORDS` uint64 words per id).
    """

    def __init__(self, blocks: list[int] | np.ndarray, masks: list[int] | np.ndarray) -> None:
        self.blocks = blocks
        self.masks = masks
        self.seen: list[bool] = []


def _blocks_needed(capacity: int) -> int:
    return max(1, -(-capacity * BITS_PER_ID // _BLOCK_BITS))


class _Slice:
    """One Bloom filter file, mapped into memory."""

    def __init__(self, path: Path, blocks: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = _HEADER_BYTES + blocks * _BLOCK_BITS // 8
            # Every page taken now (a no-op once done): a mapped page that a full tmpfs
            # cannot give later would kill the replica (SIGBUS) instead of failing here.
            os.posix_fallocate(fd, 0, size)
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.blocks = blocks
        words = np.frombuffer(self.map, dtype="<u8", offset=_HEADER_BYTES)
        self.words = words.reshape(blocks, _WORDS)
        self.view = memoryview(self.map)[_HEADER_BYTES:]  # plain ints, for a few ids

    @property
    def added(self) -> int:
        return int(_HEADER.unpack_from(self.map, 0)[0])

    def count(self, amount: int) -> None:
        _HEADER.pack_into(self.map, 0, self.added + amount, self.blocks)

    def block(self, number: int) -> int:
        start = number * (_BLOCK_BITS // 8)
        return int.from_bytes(self.view[start : start + _BLOCK_BITS // 8], "little")

    def set_block(self, number: int, value: int) -> None:
        start = number * (_BLOCK_BITS // 8)
        self.view[start : start + _BLOCK_BITS // 8] = value.to_bytes(_BLOCK_BITS // 8, "little")

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
        self.blocks = _blocks_needed(capacity)
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
        return 2 * (_HEADER_BYTES + _blocks_needed(capacity) * _BLOCK_BITS // 8)

    def _slice(self, number: int) -> _Slice | None:
        """Slice `number`, or None when it cannot be made (no room): ids pass unchecked."""
        found = self.slices.get(number)
        if found is None:
            try:
                found = _Slice(self.directory / self._name(number), self.blocks)
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
        # another dedup_capacity) are never read as this one's, which would find ids in
        # bits they do not own.
        return f"{number}.{self.blocks}x{_BLOCK_BITS}.bloom"

    def _forget_before(self, number: int) -> None:
        for old in [n for n in self.slices if n < number]:
            self.slices.pop(old).close()
        for path in self.directory.glob("*.bloom"):
            slice_number = path.name.split(".", 1)[0]
            current = slice_number.isdigit() and path.name == self._name(int(slice_number))
            if not current or int(slice_number) < number:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def lookup(self, source: str, message_ids: list[str]) -> Lookup:
        """Where `(source, id)` pairs sit, and whether each was added within the window."""
        hashes = _hashes(source, message_ids)
        if len(hashes) < _VECTOR_FROM:
            found = Lookup([h1 % self.blocks for h1, _ in hashes], [_mask(h2) for _, h2 in hashes])
        else:
            h = np.array(hashes, dtype=np.uint64)
            with np.errstate(over="ignore"):
                positions = (h[:, 1:2] * _NP_MULTIPLIERS) >> np.uint64(_SHIFT)
            # Each id's bits as one row of 512 booleans, packed into 8 words: a few numpy
            # calls per request whatever its size.
            marked = np.zeros(len(hashes) * _BLOCK_BITS, dtype=bool)
            rows = np.arange(0, len(hashes) * _BLOCK_BITS, _BLOCK_BITS, dtype=np.uint64)
            marked[(positions + rows[:, None]).ravel()] = True
            found = Lookup(
                h[:, 0] % np.uint64(self.blocks),
                np.packbits(marked.reshape(-1, _BLOCK_BITS), axis=1, bitorder="little").view("<u8"),
            )
        found.seen = self._seen(found) if hashes else []
        return found

    def _seen(self, found: Lookup) -> list[bool]:
        now = int(time.time() // self.window_s)
        slices = [s for s in (self._slice(now), self._slice(now - 1)) if s is not None]
        if isinstance(found.masks, list):
            return [
                any(s.block(block) & mask == mask for s in slices)
                for block, mask in zip(found.blocks, found.masks, strict=True)
            ]
        hit = np.zeros(len(found.masks), dtype=bool)
        for s in slices:
            hit |= ((s.words[found.blocks] & found.masks) == found.masks).all(axis=1)
        return list(hit.tolist())

    def add(self, found: Lookup, stored: list[bool] | None = None) -> None:
        """Remember the ids of `found` that were stored just now (all, or where `stored`),
        in the current slice."""
        current = self._slice(int(time.time() // self.window_s))
        if current is None or current.added >= self.capacity:
            return  # full: see the module's docstring
        if isinstance(found.masks, list):
            pairs = list(zip(found.blocks, found.masks, strict=True))
            if stored is not None:
                pairs = [p for p, keep in zip(pairs, stored, strict=True) if keep]
            for block, mask in pairs:
                current.set_block(block, current.block(block) | mask)
            current.count(len(pairs))
            return
        blocks, masks = found.blocks, found.masks
        if stored is not None:
            keep = np.array(stored, dtype=bool)
            blocks, masks = np.asarray(blocks)[keep], masks[keep]
        np.bitwise_or.at(current.words, blocks, masks)
        current.count(len(blocks))

    def close(self) -> None:
        for s in self.slices.values():
            s.close()
        self.slices.clear()
