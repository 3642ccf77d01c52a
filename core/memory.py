"""How Sluice's processes give memory back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger("sluice")

#: glibc's `mallopt` parameters: the size from which `malloc` maps memory of its own, and
#: how much free memory at the top of a heap it keeps rather than give back.
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
#: Blocks from 1 MiB up (a batch's buffers, a request body) are mapped, and unmapped
#: when freed.
MMAP_FROM_BYTES = 1024 * 1024
#: Up to 8 MiB free at a heap's top stays for the next allocations. Setting the mapping
#: threshold fixes glibc's trim threshold at 128 KiB, so a producer's heap gave back and
#: faulted in again, every take, the pages of its reads and lists: 0.03 cores of the
#: six producers under batch load, for no PSS that the bench could tell.
TRIM_FROM_BYTES = 8 * 1024 * 1024


def return_large_frees() -> bool:
    """Make this process give large freed blocks straight back to the system.

    glibc raises its threshold for mapping a block to the size of the largest one freed
    (up to 32 MiB), so after the first batch a producer's 16 MiB buffers came from its
    heap arenas, which keep freed memory: 30 to 60 MiB a busy producer or consumer.
    Setting the threshold fixes it at `MMAP_FROM_BYTES`; a heap keeps up to
    `TRIM_FROM_BYTES` free at its top for the next allocations. False where the C library
    has no `mallopt` (not glibc).
    """
    return _set_thresholds(MMAP_FROM_BYTES, TRIM_FROM_BYTES)


#: A consumer's heap keeps up to this much freed memory for its next batch (a file
#: batch of ~8,800 events takes about 20 MiB of buffers); blocks from this size up are
#: mapped, and unmapped when freed.
BATCH_HEAP_BYTES = 32 * 1024 * 1024


def keep_batch_heap() -> bool:
    """Make this process reuse, batch after batch, the heap memory a batch freed.

    Given back after each batch (`malloc_trim`), a Parquet batch's 20 MiB of buffers were
    faulted in anew every batch, a page fault per 4 KiB: a quarter of the consumer's CPU.
    With both thresholds at `BATCH_HEAP_BYTES` the heap keeps them (a few tens of MiB
    held between batches, which a batch needs anyway); a larger block still leaves the
    process when freed. False where the C library has no `mallopt` (not glibc).
    """
    return _set_thresholds(BATCH_HEAP_BYTES, BATCH_HEAP_BYTES)


def _set_thresholds(mmap_from: int, trim_from: int) -> bool:
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_from))
    ok = ok and bool(mallopt(_M_TRIM_THRESHOLD, trim_from))
    if not ok:
        logger.warning("mallopt failed; the C library manages freed memory its own way")
    return ok
