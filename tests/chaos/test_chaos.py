"""The chaos suite: no event answered 2xx is ever lost, whatever is killed, cut or filled.

One service (logs in /dev/shm as by default; sinks: S3 behind a proxy that can cut it,
and Kinesis) takes a steady stream of uniquely identified events in each test while one
fault strikes; the test then waits until every acknowledged event is in both sinks.
The whole-service restart and the filling log directory get services of their own.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.aws import create_bucket, create_stream, read_parquet_tree, read_stream
from tests.proxy import OutageProxy
from tests.service import WRITE_KEY, Service
from tests.traffic import Traffic, event

pytestmark = pytest.mark.chaos

CAPACITY = 2 * 1024 * 1024  # per record type: small, so the log-full test fills it in seconds


class Chaos:
    """A service with S3 (behind an outage proxy) and Kinesis sinks, and its ground truth."""

    def __init__(self, workdir: Path, moto_endpoint: str, log_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.proxy = OutageProxy(int(moto_endpoint.rsplit(":", 1)[1]))
        self.bucket, self.stream = create_bucket(), create_stream(2)
        self.log_dir = log_dir or Path(f"/dev/shm/sluice-chaos-{uuid.uuid4().hex[:8]}")
        config = workdir / "sluice.yaml"
        config.write_text(f"log_capacity_bytes: {CAPACITY}\n")
        self.service_args: dict[str, Any] = {
            "sinks": [f"s3://{self.bucket}/events?max_age_s=0.5", f"kinesis://{self.stream}"],
            "env": {"AWS_ENDPOINT_URL_S3": self.proxy.url},
            "log_dir": self.log_dir,
            "extra": ["--config", str(config)],
        }
        self.service = self.start()

    def start(self) -> Service:
        return Service(self.workdir, **self.service_args).start()

    def traffic(self, name: str, **kw: Any) -> Traffic:
        return Traffic(self.service.url, f"{name}-{uuid.uuid4().hex[:6]}", **kw)

    def run(self, name: str, fault: Callable[[Traffic], None]) -> set[str]:
        """Traffic before, during and after `fault`; returns what was acknowledged."""
        with self.traffic(name) as traffic:
            traffic.wait_for(300)
            fault(traffic)
            traffic.wait_for(len(traffic.acked) + 300, timeout_s=180)
        return traffic.acked

    def delivered(self) -> tuple[collections.Counter[str], collections.Counter[str]]:
        in_s3 = collections.Counter(
            r["message_id"] for r in read_parquet_tree(f"s3://{self.bucket}/events")
        )
        in_kinesis = collections.Counter(
            e["messageId"] for events in read_stream(self.stream).values() for e in events
        )
        return in_s3, in_kinesis

    def assert_all_delivered(self, acked: set[str], timeout_s: float = 120) -> None:
        """Wait until every acknowledged event is in both sinks; fail on any missing."""
        assert acked, "no event was acknowledged"
        deadline = time.monotonic() + timeout_s
        while True:
            in_s3, in_kinesis = self.delivered()
            missing = {i for i in acked if not in_s3[i] or not in_kinesis[i]}
            if not missing:
                return
            assert time.monotonic() < deadline, (
                f"{len(missing)} of {len(acked)} acknowledged events lost, "
                f"e.g. {sorted(missing)[:3]}\n{self.service.log_tail()}"
            )
            time.sleep(1.0)

    def close(self) -> None:
        self.service.kill()
        self.proxy.down()
        shutil.rmtree(self.log_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def chaos(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    setup = Chaos(tmp_path_factory.mktemp("chaos"), moto_server)
    yield setup
    setup.close()


def sigkill(service: Service, title: str) -> None:
    victims = service.processes(title)
    assert victims, f"no {title} process to kill"
    for proc in victims:
        proc.kill()
    psutil.wait_procs(victims, timeout=30)


def metric(service: Service, name: str) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_producer_sigkill(chaos: Chaos) -> None:
    acked = chaos.run("producer", lambda _: sigkill(chaos.service, "ray::Producer"))
    chaos.assert_all_delivered(acked)


def test_consumer_sigkill(chaos: Chaos) -> None:
    acked = chaos.run("consumer", lambda _: sigkill(chaos.service, "ray::Consumer"))
    chaos.assert_all_delivered(acked)


def test_supervisor_sigkill(chaos: Chaos) -> None:
    producers = len(chaos.service.processes("ray::Producer"))
    assert producers >= 6  # one per record type (and the dead letters' once there were any)
    acked = chaos.run("supervisor", lambda _: sigkill(chaos.service, "ray::Supervisor"))
    chaos.assert_all_delivered(acked)
    # The restarted supervisor adopted the running producers: no second set was made.
    assert len(chaos.service.processes("ray::Producer")) == producers


def test_replica_sigkill_mid_append_under_load(chaos: Chaos) -> None:
    with chaos.traffic("replica-fast", batch_size=100, pause_s=0) as fast:
        fast.wait_for(2000)
        acked = chaos.run("replica", lambda _: sigkill(chaos.service, "ray::ServeReplica"))
    chaos.assert_all_delivered(acked | fast.acked)


def test_s3_down_for_a_while(chaos: Chaos) -> None:
    def outage(traffic: Traffic) -> None:
        chaos.proxy.down()
        traffic.wait_for(len(traffic.acked) + 600)  # accepted into the log meanwhile
        chaos.proxy.up()

    chaos.assert_all_delivered(chaos.run("s3-down", outage))


def test_dispatch_loop_exception_is_counted_and_the_loop_restarts(chaos: Chaos) -> None:
    # A directory where the producer keeps its record of sent batches: building the next
    # batch raises OSError inside the dispatch loop.
    def break_dispatch(traffic: Traffic) -> None:
        deadline = time.monotonic() + 30
        while not (found := list(chaos.log_dir.glob("track/batches.s3-*"))):
            assert time.monotonic() < deadline, "no batch went to S3"
            time.sleep(0.1)
        batches = found[0]
        restarts = metric(chaos.service, "sluice_producer_loop_restarts")
        batches.unlink()
        batches.mkdir()
        deadline = time.monotonic() + 60
        while metric(chaos.service, "sluice_producer_loop_restarts") <= restarts:
            assert time.monotonic() < deadline, "the failing loop was not counted"
            time.sleep(0.2)
        batches.rmdir()

    chaos.assert_all_delivered(chaos.run("dispatch", break_dispatch))


def test_log_full_answers_503_and_recovers(chaos: Chaos) -> None:
    def fill(traffic: Traffic) -> None:
        chaos.proxy.down()
        with chaos.traffic("full-fast", batch_size=150, pause_s=0, pad=2000) as fast:
            deadline = time.monotonic() + 120
            while fast.statuses["503"] == 0:
                assert time.monotonic() < deadline, f"log never filled: {fast.statuses}"
                time.sleep(0.2)
            health = httpx.get(f"{chaos.service.url}/health", timeout=10)
            probe = [event(traffic.prefix + "-probe", n, pad=3000) for n in range(150)]
            answer = httpx.post(
                f"{chaos.service.url}/v1/batch",
                json={"batch": probe},
                auth=(WRITE_KEY, ""),
                timeout=10,
            )
        traffic.acked |= fast.acked
        assert health.status_code == 503 and "full" in health.json()["reason"], health.text
        assert answer.status_code == 503 and answer.headers["Retry-After"], answer.text
        assert answer.json()["code"] == "log_full"
        chaos.proxy.up()

    chaos.assert_all_delivered(chaos.run("log-full", fill))


def test_whole_service_sigkill_then_restart_on_the_same_log_dir(
    moto_server: str, tmp_path: Path
) -> None:
    setup = Chaos(tmp_path, moto_server)
    try:
        with setup.traffic("whole") as before:
            before.wait_for(600)
            setup.service.kill()
        setup.service = setup.start()  # same log directory: it delivers what it held first
        with setup.traffic("whole-after") as after:
            after.wait_for(300)
        setup.assert_all_delivered(before.acked | after.acked)
    finally:
        setup.close()


def test_a_log_dir_that_fills_answers_503_and_loses_nothing(
    moto_server: str, tmp_path: Path
) -> None:
    mount = tmp_path / "shm"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    setup = Chaos(tmp_path, moto_server, log_dir=mount / "log")
    try:
        with setup.traffic("fills", batch_size=50, pad=500) as traffic:
            traffic.wait_for(300)
            ballast = mount / "ballast"
            # Something else takes the room the logs were sized for (ENOSPC on append).
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={ballast}", "bs=1M", "count=64"],
                check=False,
                capture_output=True,
            )
            deadline = time.monotonic() + 60
            while traffic.statuses["503"] == 0:
                assert time.monotonic() < deadline, f"never refused: {traffic.statuses}"
                time.sleep(0.2)
            ballast.unlink()
            traffic.wait_for(len(traffic.acked) + 300, timeout_s=120)
        assert traffic.statuses["500"] == 0, traffic.statuses
        setup.assert_all_delivered(traffic.acked)
    finally:
        setup.close()
        subprocess.run(["umount", "-l", str(mount)], check=False)
