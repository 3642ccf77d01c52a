"""The process-tree sampler behind `service_rss_peak_bytes` and `generator_cpu_cores`."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.sampler import ProcessTreeSampler

# A parent that starts a child which holds 64 MB and spins for three seconds.
_CHILD = (
    "import time\n"
    "x = bytearray(64 << 20)\n"
    "for i in range(0, len(x), 4096): x[i] = 1\n"
    "t = time.time()\n"
    "while time.time() - t < 3: pass\n"
)
_PARENT = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_CHILD!r}])"


def test_sampler_sees_memory_and_cpu_of_descendants() -> None:
    process = subprocess.Popen([sys.executable, "-c", _PARENT])
    sampler = ProcessTreeSampler(process.pid, 0.25, pss=True).start()
    process.wait(30)
    sampler.stop()
    assert (sampler.peak("rss") or 0) > 64 << 20, sampler.samples
    assert (sampler.peak("pss") or 0) > 32 << 20, sampler.samples
    assert sampler.last_before("pss", sampler.samples[0].at - 1) is None
    assert (sampler.last_before("pss", sampler.samples[-1].at) or 0) <= (sampler.peak("pss") or 0)
    first, last = sampler.samples[0].at, sampler.samples[-1].at
    cores = sampler.cpu_cores(first, last)
    # The spinning child, in cores (less on a busy machine).
    assert 0.1 < max(cores.values()) <= 1.1, cores
    assert 0.1 < (sampler.machine_cores(first, last) or 0) <= (os.cpu_count() or 1) + 0.5
