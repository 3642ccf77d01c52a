"""`sluice bench` end to end against the baseline server: Locust runs, report, plot.

No Ray: the target is the bare baseline (`--target`, `--skip-baseline`), so these runs
check the tooling, not Sluice. Each run is a few seconds of 2 users.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.generator import SCENARIOS
from bench.runner import BenchOptions, run
from bench.servers import BaselineServer
from sluice import cli

REQUIRED = (
    "scenario", "duration_s", "requests", "requests_per_s", "events", "events_per_s",
    "p50_ms", "p95_ms", "p99_ms", "failures", "events_in_sink", "lost", "duplicates",
    "baseline_requests_per_s", "ratio_to_baseline", "users", "workers",
    "generator_cpu_cores", "generator_limited", "service_rss_peak_bytes", "target", "plot",
)  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with BaselineServer(tmp_path_factory.mktemp("baseline")) as server:
        yield server.url


def _acked_ids(work: Path) -> list[str]:
    ids: list[str] = []
    for path in (work / "target" / "acked").glob("acked-*.txt"):
        ids += path.read_text().split()
    return ids


def _check(report: dict[str, Any], out: Path, scenario: str, work: Path) -> None:
    assert set(REQUIRED) <= set(report)
    assert json.loads(out.read_text()) == report
    assert report["scenario"] == scenario
    assert report["failures"] == 0
    assert report["requests"] > 10
    assert report["requests_per_s"] > 5
    per_request = SCENARIOS[scenario].events_per_request
    assert report["events"] == report["requests"] * per_request
    assert report["events_per_s"] == pytest.approx(report["requests_per_s"] * per_request, 0.01)
    assert 0 <= report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"] < 5000
    assert 0 < report["generator_cpu_cores"] < 4
    assert isinstance(report["generator_limited"], bool)
    # Without Sluice's sink there is nothing to count.
    assert report["events_in_sink"] is None and report["lost"] is None
    assert report["service_rss_peak_bytes"] is None
    ids = _acked_ids(work)
    assert len(ids) == report["events"] == len(set(ids))
    plot = Path(report["plot"])
    assert plot == out.with_suffix(".png")
    assert plot.read_bytes()[:8] == PNG_MAGIC and plot.stat().st_size > 20_000


@pytest.mark.parametrize(
    ("scenario", "workers"), [("batch", 1), ("gzip-batch", 2), ("websocket", 1)]
)
def test_bench_against_the_baseline(
    baseline: str, tmp_path: Path, scenario: str, workers: int
) -> None:
    out = tmp_path / "report.json"
    progress = io.StringIO()
    options = BenchOptions(
        scenario=scenario,
        duration_s=3,
        users=2,
        out=out,
        target=baseline,
        write_key="k",
        workers=workers,
        skip_baseline=True,
        work_dir=tmp_path / "work",
        progress=progress,
    )
    report = run(options)
    _check(report, out, scenario, tmp_path / "work")
    assert report["workers"] == workers
    assert report["baseline_requests_per_s"] is None and report["ratio_to_baseline"] is None
    if workers > 1:  # each Locust worker wrote its own ids, none repeated across them
        assert len(list((tmp_path / "work/target/acked").glob("acked-*.txt"))) == workers
    assert f"target {scenario}:" in progress.getvalue()


def test_sluice_bench_command_with_the_baseline_run(
    baseline: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "single.json"
    argv = ["bench", "--scenario", "single", "--duration", "3", "--users", "2"]
    argv += ["--target", baseline, "--write-key", "k", "--out", str(out)]
    argv += ["--work-dir", str(tmp_path / "work")]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    _check(report, out, "single", tmp_path / "work")
    # The same server twice: the ratio is about 1 (wide bounds: a shared, noisy machine).
    assert report["baseline_requests_per_s"] > 5
    assert 0.2 < report["ratio_to_baseline"] < 5
    assert report["baseline"]["failures"] == 0
    assert "single:" in capsys.readouterr().out
