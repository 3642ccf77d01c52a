"""The load generator: Locust headless in a subprocess, watched while it runs.

`run_locust` starts `locust -f bench/locustfile.py` on one scenario, prints a live
progress line, samples Locust's CPU use, and returns what the run measured: totals and
percentiles from Locust's final stats (`--json-file`), throughput and latency over time
(per-second counts and the stats-history CSV), and how many events were acknowledged.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs installed

from bench.sampler import ProcessTreeSampler

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
#: A generator process above this share of one core is the limit, not the target.
GENERATOR_LIMIT_CORES = 0.9


@dataclass(frozen=True)
class Scenario:
    """A Locust user class and how many events each of its requests carries."""

    name: str
    user_class: str
    events_per_request: int


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("single", "SingleTrack", 1),
        Scenario("batch", "Batch", 100),
        Scenario("gzip-batch", "GzipBatch", 100),
        Scenario("websocket", "WebSocketTrack", 1),
    )
}


class BenchError(RuntimeError):
    """The benchmark could not run; the message says why and what to look at."""


@dataclass
class Timeline:
    """Per-second throughput and latency; `t_s` counts from the start of the load."""

    t_s: list[float] = field(default_factory=list)
    requests_per_s: list[float] = field(default_factory=list)
    failures_per_s: list[float] = field(default_factory=list)
    latency_t_s: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p95_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)


@dataclass
class LoadResult:
    """What one Locust run measured."""

    scenario: Scenario
    requests: int
    failures: int
    #: Epoch seconds of the start of the load, and how long requests kept coming.
    started_at: float
    measured_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    acked: int
    acked_dir: Path
    timeline: Timeline
    cpu_per_process: list[float]
    #: Cores the whole machine kept busy meanwhile: generator, target and anything else.
    machine_cpu_cores: float | None
    exit_code: int
    log_path: Path

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.measured_s if self.measured_s > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.acked / self.measured_s if self.measured_s > 0 else 0.0

    @property
    def generator_cpu_cores(self) -> float:
        return sum(self.cpu_per_process)

    @property
    def generator_limited(self) -> bool:
        busiest = max(self.cpu_per_process, default=0.0)
        machine = os.cpu_count() or 1
        return (
            busiest >= GENERATOR_LIMIT_CORES
            or self.generator_cpu_cores >= GENERATOR_LIMIT_CORES * machine
        )


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that imports `bench` (also from a checkout that
    is not installed) with `extra` variables."""
    paths = (str(LOCUSTFILE.parent.parent), os.environ.get("PYTHONPATH"))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def percentile(histogram: dict[int, int], fraction: float) -> float | None:
    """The response time (ms) below which `fraction` of the requests of a Locust
    histogram (rounded ms -> count) fall."""
    total = sum(histogram.values())
    if total == 0:
        return None
    wanted = math.ceil(total * fraction)
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= wanted:
            return float(ms)
    return float(max(histogram))


def locust_command(
    scenario: Scenario, host: str, users: int, duration_s: int, workers: int, prefix: Path
) -> list[str]:
    """The headless Locust command line of one run; results go to `prefix`*."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), scenario.user_class]
    command += ["--headless", "-u", str(users), "-r", str(users), "-t", f"{duration_s}s"]
    command += ["--host", host, "--csv", str(prefix), "--csv-full-history"]
    command += ["--json-file", str(prefix), "--loglevel", "WARNING"]
    if workers > 1:
        command += ["--processes", str(workers)]
    return command


def run_locust(
    scenario: Scenario,
    host: str,
    *,
    users: int,
    duration_s: int,
    workers: int,
    write_key: str,
    run_dir: Path,
    label: str,
    progress: TextIO | None = sys.stderr,
) -> LoadResult:
    """Run one scenario against `host` for `duration_s`; results are kept in `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    prefix = run_dir / "locust"
    acked_dir = run_dir / "acked"
    log_path = run_dir / "locust.log"
    # A kept --work-dir may hold an earlier run's results: never count them twice.
    shutil.rmtree(acked_dir, ignore_errors=True)
    for stale in run_dir.glob(f"{prefix.name}*"):
        stale.unlink()
    env = child_env(
        SLUICE_BENCH_WRITE_KEY=write_key,
        SLUICE_BENCH_ACKED_DIR=str(acked_dir),
        SLUICE_BENCH_RUNNER="1",
    )
    command = locust_command(scenario, host, users, duration_s, workers, prefix)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        sampler = ProcessTreeSampler(process.pid, interval_s=0.5).start()
        watcher = _Progress(label, scenario, duration_s, prefix, sampler, progress)
        watcher.start()
        try:
            exit_code = process.wait(duration_s + 120)
        except subprocess.TimeoutExpired:
            _kill_tree(process)
            raise BenchError(f"locust did not finish in time; see {log_path}") from None
        except BaseException:
            _kill_tree(process)
            raise
        finally:
            watcher.stop()
            sampler.stop()
    return _result(scenario, prefix, acked_dir, sampler, exit_code, log_path)


def _kill_tree(process: subprocess.Popen[Any]) -> None:
    try:
        victims = [psutil.Process(process.pid)]
        victims += victims[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=10)


def _result(
    scenario: Scenario,
    prefix: Path,
    acked_dir: Path,
    sampler: ProcessTreeSampler,
    exit_code: int,
    log_path: Path,
) -> LoadResult:
    final = prefix.with_name(prefix.name + ".json")
    if not final.exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise BenchError(f"locust exited with {exit_code} and wrote no results:\n{tail}")
    entries: list[dict[str, Any]] = json.loads(final.read_text())
    histogram: dict[int, int] = {}
    per_second: dict[int, int] = {}
    failures_per_second: dict[int, int] = {}
    for entry in entries:
        for key, count in entry["response_times"].items():
            histogram[int(float(key))] = histogram.get(int(float(key)), 0) + count
        for key, count in entry["num_reqs_per_sec"].items():
            per_second[int(key)] = per_second.get(int(key), 0) + count
        for key, count in entry["num_fail_per_sec"].items():
            failures_per_second[int(key)] = failures_per_second.get(int(key), 0) + count
    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    start = min((e["start_time"] for e in entries), default=0.0)
    last = max((e["last_request_timestamp"] or start for e in entries), default=start)
    acked = sum(_count_lines(path) for path in acked_dir.glob("acked-*.txt"))
    if not acked_dir.exists():  # the locustfile recorded nothing: count from the totals
        acked = (requests - failures) * scenario.events_per_request
    timeline = Timeline()
    for second in sorted(per_second):
        # The first and last seconds are partly outside the run: rate over the covered part.
        covered = min(second + 1, last) - max(second, start)
        if covered < 0.5:
            continue
        timeline.t_s.append((max(second, start) + min(second + 1, last)) / 2 - start)
        timeline.requests_per_s.append(per_second[second] / covered)
        timeline.failures_per_s.append(failures_per_second.get(second, 0) / covered)
    for row in _history_rows(prefix):
        timeline.latency_t_s.append(float(row["Timestamp"]) - start)
        timeline.p50_ms.append(_number(row["50%"]))
        timeline.p95_ms.append(_number(row["95%"]))
        timeline.p99_ms.append(_number(row["99%"]))
    cpu = sampler.cpu_cores(start, last) if last > start else {}
    machine = sampler.machine_cores(start, last) if last > start else None
    return LoadResult(
        scenario=scenario,
        requests=requests,
        failures=failures,
        started_at=start,
        measured_s=max(last - start, 0.0),
        p50_ms=percentile(histogram, 0.50),
        p95_ms=percentile(histogram, 0.95),
        p99_ms=percentile(histogram, 0.99),
        acked=acked,
        acked_dir=acked_dir,
        timeline=timeline,
        cpu_per_process=sorted(cpu.values(), reverse=True),
        machine_cpu_cores=machine,
        exit_code=exit_code,
        log_path=log_path,
    )


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "N/A" before the first response
        return math.nan


def _history_rows(prefix: Path) -> list[dict[str, str]]:
    """The Aggregated rows of the stats-history CSV with at least one request behind them."""
    path = prefix.with_name(prefix.name + "_stats_history.csv")
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    # Skip rows before the first request, and a last line Locust is still writing.
    return [
        r
        for r in rows
        if None not in r.values()
        and r["Total Average Content Size"]
        and r["Total Request Count"] != "0"
    ]


_RATE_WINDOW_S = 5.0


class _Progress:
    """Prints `elapsed/total, req/s, events/s, p99, failures, generator CPU` every second."""

    def __init__(
        self,
        label: str,
        scenario: Scenario,
        duration_s: int,
        prefix: Path,
        sampler: ProcessTreeSampler,
        out: TextIO | None,
    ) -> None:
        self.label = label
        self.scenario = scenario
        self.duration_s = duration_s
        self.prefix = prefix
        self.sampler = sampler
        self.out = out
        self.live = bool(out is not None and out.isatty())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-progress")
        self._printed = False

    def start(self) -> None:
        if self.out is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.out is None:
            return
        rows = _history_rows(self.prefix)
        if rows:  # the last word, whatever the cadence was
            self._print(self.line(rows, float(rows[0]["Timestamp"])))
        if self.live and self._printed:
            self.out.write("\n")
            self.out.flush()

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(1.0):
            rows = _history_rows(self.prefix)
            if len(rows) < 2:  # a rate needs two rows
                continue
            ticks += 1
            # Not a terminal (CI, a log file): a line every 5 s instead of a live one.
            if self.live or ticks % 5 == 1:
                self._print(self.line(rows, float(rows[0]["Timestamp"])))

    def line(self, rows: list[dict[str, str]], began: float) -> str:
        last = rows[-1]
        rate = 0.0
        # Over 5 s at least: with several Locust processes the master's counts move only
        # when a worker reports (every few seconds), so neighbouring rows often match.
        window = float(last["Timestamp"]) - _RATE_WINDOW_S
        earlier = [r for r in rows if float(r["Timestamp"]) <= window] or rows[:1]
        if earlier and float(earlier[-1]["Timestamp"]) < float(last["Timestamp"]):
            prev = earlier[-1]
            dt = float(last["Timestamp"]) - float(prev["Timestamp"])
            rate = (int(last["Total Request Count"]) - int(prev["Total Request Count"])) / dt
        elapsed = min(float(last["Timestamp"]) - began + 1, self.duration_s)
        cpu = ""
        if len(self.sampler.samples) >= 3:
            a, b = self.sampler.samples[-3], self.sampler.samples[-1]
            used = sum(b.cpu_s.values()) - sum(a.cpu_s.get(p, 0.0) for p in b.cpu_s)
            cpu = f"  locust CPU {used / (b.at - a.at):.2f} cores"
        events = rate * self.scenario.events_per_request
        return (
            f"{self.label} {self.scenario.name}: {elapsed:3.0f}/{self.duration_s} s"
            f"  {rate:9,.0f} req/s  {events:10,.0f} events/s  p99 {last['99%']} ms"
            f"  failures {int(last['Total Failure Count']):,}{cpu}"
        )

    def _print(self, text: str) -> None:
        assert self.out is not None
        if self.live:
            self.out.write("\r\x1b[2K" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()
        self._printed = True
