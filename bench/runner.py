"""`sluice bench`: one scenario against Sluice, then against the baseline, one report.

    sluice bench --scenario batch --duration 60 --users 20 --out report.json

Without `--target` it starts `sluice serve` on its defaults in a temporary directory
(file sink, log in shared memory), runs Locust, stops Sluice with SIGTERM (which
flushes every log), and reads the sink back to count lost and duplicated events. Then
it runs the same load against the bare uvicorn + Starlette + orjson baseline. The
report (one JSON object, `--out`) and its plot (`--out` with `.png`) say how fast, how
far from the baseline, and whether the load generator was the limit.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

from bench import audit as audit_mod
from bench.audit import SinkAudit
from bench.generator import SCENARIOS, BenchError, LoadResult, run_locust
from bench.plot import plot_runs
from bench.sampler import ProcessTreeSampler
from bench.servers import BaselineServer, SluiceServer

#: Seconds `sluice serve` may take to flush after SIGTERM before it is killed.
STOP_TIMEOUT_S = 900


@dataclass
class BenchOptions:
    """What `sluice bench` was asked to do."""

    scenario: str
    duration_s: int
    users: int
    out: Path
    target: str | None = None
    write_key: str | None = None
    workers: int = 1
    skip_baseline: bool = False
    sink_dir: Path | None = None
    work_dir: Path | None = None
    config: Path | None = None  # for the Sluice it starts
    sink_query: str = ""  # settings of its audited file sink, e.g. "layout=tables"
    extra_sinks: tuple[str, ...] = ()  # more sinks beside it (a webhook, say)
    progress: TextIO | None = field(default=sys.stderr, repr=False)


@dataclass
class TargetRun:
    """The run against Sluice: the load, and what Sluice and its sink showed."""

    load: LoadResult
    audit: SinkAudit | None = None
    rss_peak_bytes: int | None = None
    pss_peak_bytes: int | None = None
    #: PSS when the load ended (the last sample before it): after the run's minutes of
    #: load, before the flush at the stop.
    pss_end_of_load_bytes: int | None = None
    cpu_cores: float | None = None
    exit_code: int | None = None
    #: What the service counted as repeats (`sluice_duplicates_total`, scraped before it
    #: stopped). The generator sends each messageId once, so these are de-duplication's
    #: false positives: events answered 200 and not stored.
    duplicates_dropped: int | None = None


def run(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark; write the report and its plot; return the report."""
    if options.scenario not in SCENARIOS:
        raise BenchError(f"unknown scenario {options.scenario!r}; use one of {sorted(SCENARIOS)}")
    if options.duration_s < 1 or options.users < 1 or options.workers < 1:
        raise BenchError("--duration, --users and --workers must be at least 1")
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        target = _run_target(options, work) if options.target else _run_own_sluice(options, work)
        baseline = None
        if not options.skip_baseline:
            baseline = _run_baseline(options, work)
        report = build_report(options, target, baseline, started_at)
        _write(options, report, target, baseline)
        return report
    finally:
        if options.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _say(options: BenchOptions, text: str) -> None:
    if options.progress is not None:
        options.progress.write(f"sluice bench: {text}\n")
        options.progress.flush()


def _load(options: BenchOptions, host: str, key: str, run_dir: Path, label: str) -> LoadResult:
    return run_locust(
        SCENARIOS[options.scenario],
        host,
        users=options.users,
        duration_s=options.duration_s,
        workers=options.workers,
        write_key=key,
        run_dir=run_dir,
        label=label,
        progress=options.progress,
    )


def _run_own_sluice(options: BenchOptions, work: Path) -> TargetRun:
    key = options.write_key or f"bench-{secrets.token_hex(8)}"
    sink_dir = work / "sluice" / "data"
    # The log where Sluice keeps it by default (shared memory, no fsync), but our own.
    shm = Path("/dev/shm")
    log_root = Path(tempfile.mkdtemp(prefix="sluice-bench-", dir=shm if shm.is_dir() else work))
    server = SluiceServer(
        work / "sluice",
        write_key=key,
        sink_dir=sink_dir,
        log_dir=log_root / "log",
        config=options.config,
        sink_query=options.sink_query,
        extra_sinks=options.extra_sinks,
    )
    _say(options, f"starting sluice serve on port {server.port} (Ray takes a while to start)")
    try:
        server.start()
        _say(options, f"sluice ready on {server.url}; output in {server.log_path}")
        sampler = ProcessTreeSampler(server.pid, 1.0, pss=True).start()
        try:
            load = _load(options, server.url, key, work / "sluice" / "locust", "sluice")
            dropped = duplicates_counted(server.url)
            _say(options, "stopping sluice serve (SIGTERM: it flushes every log to the sink)")
            exit_code = server.stop(STOP_TIMEOUT_S)
        finally:
            sampler.stop()
    finally:
        if server.running():
            with contextlib.suppress(BenchError):
                server.stop(STOP_TIMEOUT_S)
        shutil.rmtree(log_root, ignore_errors=True)
    _say(options, f"counting events in {sink_dir}")
    cores = sampler.cpu_cores(load.started_at, load.started_at + load.measured_s)
    return TargetRun(
        load=load,
        audit=audit_mod.audit(sink_dir, load.acked_dir),
        rss_peak_bytes=sampler.peak("rss"),
        pss_peak_bytes=sampler.peak("pss"),
        pss_end_of_load_bytes=sampler.last_before("pss", load.started_at + load.measured_s),
        cpu_cores=sum(cores.values()) if cores else None,
        exit_code=exit_code,
        duplicates_dropped=dropped,
    )


def duplicates_counted(url: str) -> int | None:
    """`sluice_duplicates_total` of the service at `url`, summed over its labels (None:
    `/metrics` did not answer)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "sluice_duplicates_total"
        )
    )


def _run_target(options: BenchOptions, work: Path) -> TargetRun:
    assert options.target is not None
    key = options.write_key or os.environ.get("SLUICE_BENCH_WRITE_KEY", "")
    if not key:
        _say(options, "no --write-key (or SLUICE_BENCH_WRITE_KEY): sending an empty key")
    load = _load(options, options.target.rstrip("/"), key, work / "target", "target")
    result = TargetRun(load=load)
    if options.sink_dir is not None:
        _say(options, f"waiting for {options.sink_dir} to settle, then counting events")
        result.audit = audit_mod.audit_when_settled(options.sink_dir, load.acked_dir)
    return result


def _run_baseline(options: BenchOptions, work: Path) -> LoadResult:
    _say(options, "running the same load against the baseline (uvicorn + Starlette + orjson)")
    with BaselineServer(work / "baseline") as server:
        return _load(options, server.url, "baseline", work / "baseline" / "locust", "baseline")


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def build_report(
    options: BenchOptions,
    target: TargetRun,
    baseline: LoadResult | None,
    started_at: str,
) -> dict[str, Any]:
    """The report object: DESIGN.md's fields first, then what explains them."""
    load = target.load
    scenario = SCENARIOS[options.scenario]
    audit = target.audit
    ratio = None
    if baseline is not None and baseline.requests_per_s > 0:
        ratio = round(load.requests_per_s / baseline.requests_per_s, 3)
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "duration_s": options.duration_s,
        "requests": load.requests,
        "requests_per_s": _round(load.requests_per_s),
        "events": load.acked,
        "events_per_s": _round(load.events_per_s),
        "p50_ms": load.p50_ms,
        "p95_ms": load.p95_ms,
        "p99_ms": load.p99_ms,
        "failures": load.failures,
        "events_in_sink": audit.events_in_sink if audit else None,
        "lost": audit.lost if audit else None,
        "duplicates": audit.duplicates if audit else None,
        "baseline_requests_per_s": _round(baseline.requests_per_s) if baseline else None,
        "ratio_to_baseline": ratio,
        "users": options.users,
        "workers": options.workers,
        "target": options.target or "sluice serve (started by sluice bench, file sink)",
        "events_per_request": scenario.events_per_request,
        "measured_s": _round(load.measured_s, 2),
        "unacked_in_sink": audit.unacked_in_sink if audit else None,
        "events_deadlettered": audit.events_deadlettered if audit else None,
        "lost_ids": list(audit.lost_ids) if audit else None,
        "duplicates_dropped_by_service": target.duplicates_dropped,
        "generator_cpu_cores": _round(load.generator_cpu_cores, 2),
        "generator_cpu_cores_per_process": [round(c, 2) for c in load.cpu_per_process],
        "generator_limited": load.generator_limited,
        "machine_cpu_cores_busy": _round(load.machine_cpu_cores, 2),
        "service_rss_peak_bytes": target.rss_peak_bytes,
        "service_pss_peak_bytes": target.pss_peak_bytes,
        "service_pss_end_of_load_bytes": target.pss_end_of_load_bytes,
        "service_cpu_cores": _round(target.cpu_cores, 2),
        "service_exit_code": target.exit_code,
        "baseline": _baseline_summary(baseline),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "locust_version": importlib.metadata.version("locust"),
        "started_at": started_at,
        "plot": str(options.out.with_suffix(".png")),
        "notes": _notes(target, baseline),
    }
    return report


def _baseline_summary(baseline: LoadResult | None) -> dict[str, Any] | None:
    if baseline is None:
        return None
    return {
        "requests": baseline.requests,
        "requests_per_s": _round(baseline.requests_per_s),
        "events_per_s": _round(baseline.events_per_s),
        "p50_ms": baseline.p50_ms,
        "p95_ms": baseline.p95_ms,
        "p99_ms": baseline.p99_ms,
        "failures": baseline.failures,
        "generator_cpu_cores": _round(baseline.generator_cpu_cores, 2),
        "generator_limited": baseline.generator_limited,
        "machine_cpu_cores_busy": _round(baseline.machine_cpu_cores, 2),
    }


def _notes(target: TargetRun, baseline: LoadResult | None) -> list[str]:
    notes = []
    load = target.load
    if load.generator_limited:
        busiest = max(load.cpu_per_process, default=0.0)
        notes.append(
            f"generator-limited: Locust used {busiest:.2f} cores in its busiest process "
            f"({load.generator_cpu_cores:.2f} in all); the load generator, not the target, "
            "may have set the pace. More --workers help only if cores are free."
        )
    if baseline is not None and baseline.generator_limited:
        notes.append(
            "the baseline run was generator-limited: baseline_requests_per_s understates the "
            "bare server, so ratio_to_baseline overstates the target."
        )
    cores = os.cpu_count() or 1
    if load.machine_cpu_cores is not None and load.machine_cpu_cores >= 0.9 * cores:
        notes.append(
            f"the machine was CPU-saturated ({load.machine_cpu_cores:.2f} of {cores} cores "
            "busy): generator, target and anything else running competed for CPU."
        )
    if load.failures:
        notes.append(f"{load.failures} requests failed; see {load.log_path.parent}.")
    if target.exit_code not in (None, 0):
        notes.append(
            f"sluice serve exited with {target.exit_code} on SIGTERM: it could not flush "
            "everything; lost counts what was not in the sink when it stopped."
        )
    if target.audit and target.audit.lost:
        notes.append(f"{target.audit.lost} events answered 2xx are not in the sink.")
    if target.duplicates_dropped:
        notes.append(
            f"the service took {target.duplicates_dropped} events for repeats and did not "
            "store them; this load sends each messageId once, so those are de-duplication's "
            "false positives (README: Destinations, replay and duplicates)."
        )
    return notes


def _write(
    options: BenchOptions, report: dict[str, Any], target: TargetRun, baseline: LoadResult | None
) -> None:
    out = options.out
    runs = [("sluice" if not options.target else "target", target.load.timeline)]
    if baseline is not None:
        runs.append(("baseline", baseline.timeline))
    subtitle = f"{report['requests_per_s']:,.0f} req/s, {report['events_per_s']:,.0f} events/s"
    subtitle += f", p99 {report['p99_ms']:g} ms" if report["p99_ms"] is not None else ""
    subtitle += f", {report['failures']:,} failures"
    if report["lost"] is not None:
        subtitle += f", lost {report['lost']:,}, duplicates {report['duplicates']:,}"
    if baseline is not None:
        subtitle += f"  |  baseline {report['baseline_requests_per_s']:,.0f} req/s"
        subtitle += f", ratio {report['ratio_to_baseline']}"
    if report["generator_limited"]:
        subtitle += "  |  generator-limited"
    plot_runs(
        Path(report["plot"]),
        runs,
        events_per_request=report["events_per_request"],
        title=f"sluice bench {report['scenario']}: {options.users} users, "
        f"{options.duration_s} s, {options.workers} Locust "
        + ("process" if options.workers == 1 else "processes"),
        subtitle=subtitle,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [
        f"{report['scenario']}: {report['requests_per_s']:,} req/s, "
        f"{report['events_per_s']:,} events/s, p50/p95/p99 {report['p50_ms']}/"
        f"{report['p95_ms']}/{report['p99_ms']} ms, {report['failures']} failures",
        f"sink: {report['events_in_sink']} events, lost {report['lost']}, "
        f"duplicates {report['duplicates']}",
        f"baseline: {report['baseline_requests_per_s']} req/s, ratio {report['ratio_to_baseline']}",
        f"generator: {report['generator_cpu_cores']} cores"
        + (" (generator-limited)" if report["generator_limited"] else ""),
    ]
    at_end, peak = report.get("service_pss_end_of_load_bytes"), report.get("service_pss_peak_bytes")
    if at_end and peak:
        lines.append(
            f"service memory (PSS): {at_end / 2**20:,.0f} MiB when the load ended, "
            f"peak {peak / 2**20:,.0f} MiB (the flush at the stop included)"
        )
    return "\n".join(lines + [f"note: {n}" for n in report["notes"]])


def main(args: argparse.Namespace) -> int:
    """`sluice bench`: 0 when the run completed without losing events, 1 when it lost
    some, 2 when it could not run."""
    options = BenchOptions(
        scenario=args.scenario,
        duration_s=args.duration,
        users=args.users,
        out=Path(args.out),
        target=args.target,
        write_key=args.write_key,
        workers=args.workers,
        skip_baseline=args.skip_baseline,
        sink_dir=Path(args.sink_dir) if args.sink_dir else None,
        work_dir=Path(args.work_dir) if args.work_dir else None,
        config=Path(args.config) if getattr(args, "config", None) else None,
        sink_query=getattr(args, "sink_query", None) or "",
        extra_sinks=tuple(getattr(args, "extra_sink", None) or ()),
    )
    try:
        report = run(options)
    except BenchError as exc:
        print(f"sluice bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sluice bench: interrupted; no report written", file=sys.stderr)
        return 130
    print(summary(report))
    print(f"report: {options.out}  plot: {report['plot']}")
    return 1 if report["lost"] else 0
