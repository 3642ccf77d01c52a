"""Sampling a process tree every so often: CPU seconds and resident memory per process."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs installed


@dataclass
class Sample:
    """One look at a process tree: wall time (epoch seconds) and per-pid figures."""

    at: float
    #: CPU seconds the whole machine spent busy (not idle or waiting for I/O) since boot.
    machine_busy_s: float = 0.0
    cpu_s: dict[int, float] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)
    pss: dict[int, int] = field(default_factory=dict)


class ProcessTreeSampler:
    """Samples a process and all its descendants in a thread until `stop()`.

    `pss=True` also reads each process's proportional set size, which counts shared
    pages (Ray's object store, shared libraries) once instead of once per process; it
    costs more (the kernel walks every mapping), so only every fifth sample.
    """

    def __init__(self, pid: int, interval_s: float = 1.0, *, pss: bool = False) -> None:
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.pss = pss
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-sampler")

    def start(self) -> ProcessTreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append(self.take())
            if self._stop.wait(self.interval_s):
                return

    def take(self) -> Sample:
        """Figures of every process of the tree now (processes that vanish are skipped)."""
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        sample = Sample(at=time.time(), machine_busy_s=busy)
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return sample
        for proc in procs:
            with contextlib.suppress(
                psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess
            ):
                with proc.oneshot():
                    times = proc.cpu_times()
                    sample.cpu_s[proc.pid] = times.user + times.system
                    sample.rss[proc.pid] = proc.memory_info().rss
                if self.pss and len(self.samples) % 5 == 0:
                    sample.pss[proc.pid] = proc.memory_full_info().pss
        return sample

    def peak(self, figure: str) -> int | None:
        """Largest sum over the tree of `rss` or `pss` in any sample."""
        sums = [sum(getattr(s, figure).values()) for s in self.samples if getattr(s, figure)]
        return max(sums) if sums else None

    def last_before(self, figure: str, moment: float) -> int | None:
        """Sum over the tree of `rss` or `pss` in the last sample that has it taken at or
        before `moment` (epoch seconds)."""
        sums = [sum(getattr(s, figure).values()) for s in self.samples if s.at <= moment]
        sums = [total for total in sums if total]
        return sums[-1] if sums else None

    def _window(self, start: float, end: float) -> tuple[Sample, Sample] | None:
        inside = [s for s in self.samples if start - self.interval_s / 2 <= s.at <= end]
        if len(inside) < 2 or inside[-1].at - inside[0].at <= 0:
            return None
        return inside[0], inside[-1]

    def machine_cores(self, start: float, end: float) -> float | None:
        """Cores the whole machine kept busy between `start` and `end` (epoch seconds)."""
        window = self._window(start, end)
        if window is None:
            return None
        first, last = window
        return (last.machine_busy_s - first.machine_busy_s) / (last.at - first.at)

    def cpu_cores(self, start: float, end: float) -> dict[int, float]:
        """Average CPU use (cores) of each process between the samples nearest `start` and
        `end` (epoch seconds); empty when fewer than two samples fall in between."""
        window = self._window(start, end)
        if window is None:
            return {}
        first, last = window
        wall = last.at - first.at
        # A process born inside the window has used its CPU time within it.
        return {pid: (cpu - first.cpu_s.get(pid, 0.0)) / wall for pid, cpu in last.cpu_s.items()}
