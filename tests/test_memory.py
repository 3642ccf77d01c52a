"""`core.memory`: large freed blocks go back to the system at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_RSS = """
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
"""


def measured(script: str, *args: str) -> list[int]:
    """The numbers `script` prints, run in a fresh interpreter with `rss()` defined."""
    code = _RSS + textwrap.dedent(script)
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return [int(n) for n in out.stdout.split()]


def test_a_freed_large_buffer_leaves_the_process() -> None:
    # In a fresh interpreter: 16 MiB blocks made and freed in a thread (as a Ray actor's
    # event loop runs), after a 32 MiB one that raised glibc's threshold, leave RSS where
    # it was, instead of in the thread's heap arena.
    script = """
        import sys
        import threading

        import numpy as np

        from core import memory

        if sys.argv[1] == "on":
            assert memory.return_large_frees()
        big = np.ones(32 << 20, np.uint8)
        del big  # glibc now maps only blocks of 32 MiB and more
        before = rss()

        def batches():
            for _ in range(3):
                held = [np.ones(16 << 20, np.uint8) for _ in range(2)]
                del held

        thread = threading.Thread(target=batches)
        thread.start()
        thread.join()
        print(rss() - before)
        """
    grown = {mode: measured(script, mode)[0] for mode in ("off", "on")}
    assert grown["off"] >= 16 << 20, grown  # glibc kept freed blocks in the thread's arena
    assert grown["on"] < 2 << 20, grown


def test_arrow_buffers_freed_leave_the_process() -> None:
    # The producers' setting: Arrow allocates with malloc, whose large blocks are mapped
    # and unmapped; 16 MiB buffers made and freed in a thread (a producer's event loop)
    # leave nothing behind.
    script = """
        import threading

        import pyarrow as pa

        from core import memory
        from sinks.base import arrow_allocates_with_malloc

        assert memory.return_large_frees()
        arrow_allocates_with_malloc()
        assert pa.default_memory_pool().backend_name == "system"
        before = rss()

        def batches():
            for _ in range(3):
                held = [pa.allocate_buffer(16 << 20) for _ in range(2)]
                for buffer in held:
                    memoryview(buffer).cast("B")[::4096] = b"x" * ((16 << 20) // 4096)  # touch
                del held

        done = []
        thread = threading.Thread(target=lambda: done.append(batches()))
        thread.start()
        thread.join()
        assert done, "the thread failed"  # its exception would only be printed
        print(rss() - before)
        """
    (grown,) = measured(script)
    assert grown < 2 << 20, grown


def test_a_consumer_reuses_one_batchs_freed_buffers_for_the_next() -> None:
    # The consumers' setting: Arrow allocates with malloc, and the heap keeps what a batch
    # freed for the next one. Given back after each batch (`release_unused`, as consumers
    # did before), a batch's buffers were faulted in anew every batch, a page fault per
    # 4 KiB. What the heap keeps stays bounded: a block of `BATCH_HEAP_BYTES` or more
    # leaves the process when freed.
    script = """
        import resource
        import sys

        import pyarrow as pa

        from core import memory
        from sinks.base import arrow_allocates_with_malloc

        assert memory.keep_batch_heap()
        arrow_allocates_with_malloc()

        def batch(sizes):
            held = [pa.allocate_buffer(size) for size in sizes]
            for buffer in held:
                memoryview(buffer).cast("B")[::4096] = b"x" * -(-buffer.size // 4096)  # touch
            del held, buffer
            if sys.argv[1] == "trim":
                pa.default_memory_pool().release_unused()

        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        before = rss()
        sizes = [8 << 20, 6 << 20, 4 << 20, 2 << 20] + [1 << 20] * 4
        batch(sizes)  # 24 MiB, faulted in once
        first = faults()
        for turn in range(8):
            batch(sizes[turn % 4 :])
        refaulted = faults() - first
        kept = rss() - before
        big = pa.allocate_buffer(memory.BATCH_HEAP_BYTES)
        memoryview(big).cast("B")[::4096] = b"x" * (memory.BATCH_HEAP_BYTES // 4096)
        del big
        print(refaulted, kept, rss() - before)
        """
    refaulted, kept, after_big = measured(script, "keep")
    trimmed, _, _ = measured(script, "trim")
    # Faulted in anew, 24 MiB is 6,144 faults: the eight batches took less than one
    # batch's worth (fragmentation costs a few MiB, run to run); trimmed after each,
    # they fault most of every batch in again.
    assert refaulted < 6144, refaulted
    assert trimmed >= 4 * 6144, trimmed
    assert 16 << 20 <= kept <= 40 << 20, kept  # a batch's worth, kept for the next
    assert after_big - kept < 2 << 20, (kept, after_big)  # the 32 MiB block went back


def test_a_heap_keeps_a_few_mib_free_at_its_top_for_the_next_takes() -> None:
    # Blocks under 1 MiB come from the heap; freed, up to 8 MiB stays there for the next
    # ones (a producer's take reads and lists, twenty times a second), not given back and
    # faulted in again each time.
    script = """
        import numpy as np

        from core import memory

        assert memory.return_large_frees()
        before = rss()
        blocks = [np.ones(256 << 10, np.uint8) for _ in range(24)]  # 6 MiB, touched
        grown = rss() - before
        del blocks
        kept = rss() - before
        blocks = [np.ones(256 << 10, np.uint8) for _ in range(24)]
        print(grown, kept, rss() - before)
        """
    grown, kept, again = measured(script)
    assert grown >= 5 << 20, grown
    assert kept >= 5 << 20, kept  # freed, still there (128 KiB would stay by default)
    assert again - grown < 1 << 20, (grown, again)  # taken again, not mapped anew
