"""The chaos suite: no event answered 2xx is ever lost, whatever is killed or cut.

One service (logs in /dev/shm, as by default; sinks: S3 behind a proxy that can cut
it, and Kinesis) takes a steady stream of uniquely identified events while, in turn:

1. every producer process is SIGKILLed,
2. every consumer process is SIGKILLed,
3. the ingress replica is SIGKILLed,
4. S3 is unreachable for 30 s,
5. the logs fill to capacity (503 + Retry-After, /health says why),
6. every process of the service is SIGKILLed and the service started again on the
   same log directory.

Then the service is stopped (flushing) and each scenario's acknowledged ids are looked
for in both sinks. A table of sent / acknowledged / lost / duplicates is printed.
"""

from __future__ import annotations

import collections
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.aws import create_bucket, create_stream, read_parquet_tree, read_stream
from tests.proxy import OutageProxy
from tests.service import WRITE_KEY, Service
from tests.traffic import Traffic, event

pytestmark = pytest.mark.chaos

CAPACITY = 2 * 1024 * 1024  # per record type: small, so scenario 5 fills it in seconds


class Chaos:
    def __init__(self, workdir: Path, moto_endpoint: str) -> None:
        self.workdir = workdir
        self.proxy = OutageProxy(int(moto_endpoint.rsplit(":", 1)[1]))
        self.bucket, self.stream = create_bucket(), create_stream(2)
        self.log_dir = Path(f"/dev/shm/sluice-chaos-{uuid.uuid4().hex[:8]}")
        config = workdir / "sluice.yaml"
        config.write_text(f"log_capacity_bytes: {CAPACITY}\n")
        self.service_args = {
            "sinks": [f"s3://{self.bucket}/events?max_age_s=1", f"kinesis://{self.stream}"],
            "env": {"AWS_ENDPOINT_URL_S3": self.proxy.url},
            "log_dir": self.log_dir,
            "extra": ["--config", str(config)],
        }
        self.service = self.start()
        self.runs: dict[str, list[Traffic]] = collections.defaultdict(list)

    def start(self) -> Service:
        return Service(self.workdir, **self.service_args).start()  # type: ignore[arg-type]

    def run(self, name: str, fault: Callable[[Traffic], None], warmup: int = 300) -> None:
        """Traffic before, during and after `fault`, until events are acknowledged again."""
        with Traffic(self.service.url, name) as traffic:
            self.runs[name].append(traffic)
            traffic.wait_for(warmup)
            fault(traffic)
            traffic.wait_for(len(traffic.acked) + 300, timeout_s=180)

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


def test_chaos_loses_nothing_acknowledged(chaos: Chaos, capsys: pytest.CaptureFixture[str]) -> None:
    chaos.run("1 producer SIGKILL", lambda _: sigkill(chaos.service, "ray::Producer"))
    chaos.run("2 consumer SIGKILL", lambda _: sigkill(chaos.service, "ray::Consumer"))
    chaos.run("3 ingress SIGKILL", lambda _: sigkill(chaos.service, "ray::ServeReplica"))

    def outage(_: Traffic) -> None:
        chaos.proxy.down()
        time.sleep(30)
        chaos.proxy.up()

    chaos.run("4 S3 down 30 s", outage)

    def fill(traffic: Traffic) -> None:
        chaos.proxy.down()
        with Traffic(
            chaos.service.url, traffic.prefix + "-fast", batch_size=150, pause_s=0, pad=2000
        ) as fast:
            chaos.runs[traffic.prefix].append(fast)
            deadline = time.monotonic() + 120
            while fast.statuses["503"] == 0:
                assert time.monotonic() < deadline, f"log never filled: {fast.statuses}"
                time.sleep(0.2)
            health = httpx.get(f"{chaos.service.url}/health", timeout=10)
            # Logs only fill while S3 is cut, so a batch of the same shape with larger
            # events cannot fit where the fast one just did not (a small one still might).
            probe = [event(traffic.prefix + "-probe", n, pad=3000) for n in range(150)]
            answer = httpx.post(
                f"{chaos.service.url}/v1/batch",
                json={"batch": probe},
                auth=(WRITE_KEY, ""),
                timeout=10,
            )
        assert health.status_code == 503 and "full" in health.json()["reason"], health.text
        assert answer.status_code == 503 and answer.headers["Retry-After"], answer.text
        assert answer.json()["code"] == "log_full"
        chaos.proxy.up()

    chaos.run("5 log full", fill)

    with Traffic(chaos.service.url, "6 whole service SIGKILL") as before:
        chaos.runs[before.prefix].append(before)
        before.wait_for(600)
        chaos.service.kill()
    chaos.service = chaos.start()  # same log directory: it delivers what it held first
    with Traffic(chaos.service.url, "6 whole service SIGKILL-after") as after:
        chaos.runs[before.prefix].append(after)
        after.wait_for(300)

    assert chaos.service.stop() == 0, chaos.service.log_tail()

    in_s3 = collections.Counter(
        r["message_id"] for r in read_parquet_tree(f"s3://{chaos.bucket}/events")
    )
    in_kinesis = collections.Counter(
        e["messageId"] for events in read_stream(chaos.stream).values() for e in events
    )
    rows = []
    failures = []
    for name, runs in chaos.runs.items():
        sent = sum(t.sent for t in runs)
        acked = set().union(*(t.acked for t in runs))
        lost = {i for i in acked if not in_s3[i] or not in_kinesis[i]}
        dupes = sum(max(0, in_s3[i] - 1) + max(0, in_kinesis[i] - 1) for i in acked)
        rows.append((name, sent, len(acked), len(lost), dupes))
        if lost:
            failures.append(
                f"{name}: {len(lost)} acknowledged events lost, e.g. {sorted(lost)[:3]}"
            )
    table = ["", f"{'scenario':<26}{'sent':>8}{'acked':>8}{'lost':>6}{'duplicates':>12}"]
    table += [f"{n:<26}{s:>8}{a:>8}{lo:>6}{d:>12}" for n, s, a, lo, d in rows]
    with capsys.disabled():
        print("\n".join(table))
    (chaos.workdir / "chaos-table.txt").write_text("\n".join(table) + "\n")
    assert not failures, "\n".join(failures)
    assert all(acked > 0 for _, _, acked, _, _ in rows)
