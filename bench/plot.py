"""The report's PNG: throughput and latency over time, the target and the baseline overlaid."""

from __future__ import annotations

import math
from pathlib import Path

from bench.generator import Timeline

_COLORS = {"p50": "#1f77b4", "p95": "#ff7f0e", "p99": "#d62728"}


def plot_runs(
    path: Path,
    runs: list[tuple[str, Timeline]],
    *,
    events_per_request: int,
    title: str,
    subtitle: str = "",
) -> Path:
    """Write a PNG of `runs` (label, timeline): req/s and events/s above, p50/p95/p99 below."""
    import matplotlib

    matplotlib.use("Agg")  # no display; set before pyplot is imported
    import matplotlib.pyplot as plt

    fig, (rate_ax, latency_ax) = plt.subplots(
        2, 1, figsize=(11, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 1]}
    )
    styles = ["-", "--", ":"]
    for index, (label, timeline) in enumerate(runs):
        style = styles[index % len(styles)]
        first = index == 0
        rate_ax.plot(
            timeline.t_s,
            timeline.requests_per_s,
            style,
            color="#2a6f97" if first else "#7f7f7f",
            linewidth=2 if first else 1.5,
            label=f"{label} req/s",
        )
        failed = [(t, f) for t, f in zip(timeline.t_s, timeline.failures_per_s, strict=True) if f]
        if failed:
            rate_ax.plot(
                [t for t, _ in failed],
                [f for _, f in failed],
                "x",
                color="#d62728",
                label=f"{label} failures/s",
            )
        for name, values in (
            ("p50", timeline.p50_ms),
            ("p95", timeline.p95_ms),
            ("p99", timeline.p99_ms),
        ):
            latency_ax.plot(
                timeline.latency_t_s,
                [v if v > 0 else math.nan for v in values],  # log scale: no zeros
                style,
                color=_COLORS[name],
                alpha=1.0 if first else 0.6,
                linewidth=1.8 if first else 1.2,
                label=f"{label} {name}",
            )
    rate_ax.set_ylabel("requests/s")
    peak = max((max(t.requests_per_s, default=0.0) for _, t in runs), default=0.0)
    rate_ax.set_ylim(0, peak * 1.15 or 1.0)  # headroom above the highest line
    rate_ax.grid(True, alpha=0.3)
    rate_ax.legend(loc="best", fontsize="small", ncol=4)
    if events_per_request != 1:
        events_ax = rate_ax.secondary_yaxis(
            "right",
            functions=(lambda r: r * events_per_request, lambda e: e / events_per_request),
        )
        events_ax.set_ylabel("events/s")
        events_ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    rate_ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    values = [
        v for _, t in runs for v in (*t.p50_ms, *t.p95_ms, *t.p99_ms) if v > 0 and not math.isnan(v)
    ]
    scale = "linear"
    if values and max(values) / min(values) > 20:  # a fast baseline beside a slow target
        scale = "log"
        latency_ax.set_yscale("log")
        plain = matplotlib.ticker.StrMethodFormatter("{x:g}")
        latency_ax.yaxis.set_major_formatter(plain)
        # Labelled ticks at 1, 2, 5, 10, 20, 50...: every decade readable, none crowded.
        latency_ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(10, subs=(2.0, 5.0)))
        latency_ax.yaxis.set_minor_formatter(plain)
    else:
        latency_ax.set_ylim(0, max(values, default=1.0) * 1.15)
    latency_ax.set_ylabel(f"latency, ms ({scale}; ~2 s window)")
    latency_ax.set_xlabel("seconds since the load started")
    latency_ax.grid(True, which="both", alpha=0.3)
    latency_ax.legend(loc="best", fontsize="small", ncol=len(runs))
    fig.suptitle(title, fontsize=13)
    if subtitle:
        rate_ax.set_title(subtitle, fontsize=9.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
