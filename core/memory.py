"""How Sluice's processes give memory back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger("sluice")

#: glibc's `mallopt` parameter for the size from which `malloc` maps memory of its own.
_M_MMAP_THRESHOLD = -3
#: Blocks from 1 MiB up (a batch's buffers, a request body) are mapped, and unmapped
#: when freed.
MMAP_FROM_BYTES = 1024 * 1024


def return_large_frees() -> bool:
    """Make this process give large freed blocks straight back to the system.

    glibc raises its threshold for mapping a block to the size of the largest one freed
    (up to 32 MiB), so after the first batch a producer's 16 MiB buffers came from its
    heap arenas, which keep freed memory: 30 to 60 MiB a busy producer or consumer.
    Setting the threshold fixes it at `MMAP_FROM_BYTES`. False where the C library has
    no `mallopt` (not glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_FROM_BYTES))
    if not ok:
        logger.warning("mallopt(M_MMAP_THRESHOLD) failed; freed batches stay in the heap")
    return ok
