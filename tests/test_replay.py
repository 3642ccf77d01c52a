"""`sluice replay` of an archive the real service wrote: into a webhook receiver and a
second file sink, only the window asked for, in order per user, with progress; and
`--resume` after the replay was killed sends nothing twice but its last batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from core.config import SinkSpec
from sinks.base import Batch
from sinks.s3 import ParquetSink
from tests.aws import create_bucket, read_parquet_tree, rows_when_landed
from tests.receiver import Receiver
from tests.service import Service

USERS = 10
COUNT = 2000
OLD_HOUR = "2026-11-20T05"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Parquet tree: COUNT events through `sluice serve` now, 50 written in an old hour."""
    workdir = tmp_path_factory.mktemp("replay")
    service = Service(workdir, sinks=["file://./data?max_age_s=0.2"]).start()
    try:
        with service.client() as client:
            for start in range(0, COUNT, 200):
                batch = [
                    {
                        "type": "track",
                        "event": "Played" if n % 4 else "Paused",
                        "userId": f"u{n % USERS}",
                        "messageId": f"live-{n}",
                        "properties": {"seq": n},
                    }
                    for n in range(start, start + 200)
                ]
                assert client.post("/v1/batch", json={"batch": batch}).status_code == 200
        ids = {f"live-{n}" for n in range(COUNT)}
        assert len(rows_when_landed(f"file://{workdir}/data", ids)) == COUNT
        assert service.stop() == 0
    finally:
        service.kill()
    old = [
        orjson.dumps(
            {
                "type": "track",
                "event": "Played",
                "userId": "old",
                "messageId": f"old-{n}",
                "source": "web",
                "receivedAt": f"{OLD_HOUR}:{n:02d}:00.000Z",
                "timestamp": f"{OLD_HOUR}:{n:02d}:00.000Z",
                "properties": {"seq": n},
            }
        )
        for n in range(50)
    ]
    ParquetSink(SinkSpec.parse(f"file://{workdir}/data", workdir)).write(
        Batch.of("oldlog", "track", 0, old)
    )
    return workdir


def replay(archive: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "replay", "--from", "file://./data", *args],
        cwd=archive,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def window_now() -> list[str]:
    now = datetime.now(UTC)
    return [
        "--start",
        (now - timedelta(hours=2)).isoformat(),
        "--end",
        (now + timedelta(hours=1)).isoformat(),
    ]


def test_replay_into_a_webhook_and_a_second_file_sink(archive: Path) -> None:
    with Receiver() as receiver:
        run = replay(archive, "--to", f"webhook+{receiver.url}", *window_now())
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output
    assert "events/s" in output and f"{COUNT} events to" in output
    assert sorted(receiver.ids()) == sorted(f"live-{n}" for n in range(COUNT))
    per_user: dict[str, list[int]] = {}
    for event in receiver.events:
        per_user.setdefault(event["userId"], []).append(event["properties"]["seq"])
        assert event["receivedAt"].endswith("Z") and event["source"] == "web"
    assert all(seqs == sorted(seqs) and len(seqs) == COUNT // USERS for seqs in per_user.values())

    run = replay(
        archive, "--to", "file://./copy", "--start", f"{OLD_HOUR}:00", "--end", f"{OLD_HOUR}:30"
    )
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    copied = read_parquet_tree(f"file://{archive}/copy")
    assert sorted(r["message_id"] for r in copied) == sorted(f"old-{n}" for n in range(30))

    run = replay(archive, "--to", "file://./paused", "--event", "Paused", *window_now())
    assert run.wait(120) == 0
    paused = read_parquet_tree(f"file://{archive}/paused")
    assert len(paused) == COUNT // 4 and {r["event"] for r in paused} == {"Paused"}


def test_resume_after_a_killed_replay_sends_at_most_its_last_batch_again(archive: Path) -> None:
    with Receiver() as receiver:
        args = ("--to", f"webhook+{receiver.url}", "--rate", "400", *window_now())
        run = replay(archive, *args)
        time.sleep(3)  # one 400-event batch a second: some delivered, not all
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        before = len(receiver.ids())
        assert 0 < before < COUNT
        run = replay(archive, *args, "--resume")
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output
    ids = receiver.ids()
    assert set(ids) == {f"live-{n}" for n in range(COUNT)}
    assert len(ids) - COUNT <= 400  # the batch in flight when it was killed, at most


def test_replay_reads_an_s3_archive(moto_server: str, tmp_path: Path) -> None:
    bucket = create_bucket()
    events = [
        orjson.dumps(
            {
                "type": "identify",
                "userId": f"s3-{n % 3}",
                "messageId": f"s3-{n}",
                "source": "ios",
                "receivedAt": f"2026-11-21T0{n % 3}:30:00.000Z",
                "traits": {"n": n},
            }
        )
        for n in range(30)
    ]
    ParquetSink(SinkSpec.parse(f"s3://{bucket}/events", tmp_path)).write(
        Batch.of("s3log", "identify", 0, events)
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "replay", "--from", f"s3://{bucket}/events",
         "--to", "file://./copy", "--start", "2026-11-21T00:00", "--end", "2026-11-21T02:00",
         "--type", "identify"],
        cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    copied = read_parquet_tree(f"file://{tmp_path}/copy")
    # Hours 00 and 01 of the three; the traits come back as they were stored.
    assert sorted(r["message_id"] for r in copied) == sorted(
        f"s3-{n}" for n in range(30) if n % 3 < 2
    )
    assert {orjson.loads(r["traits"])["n"] for r in copied} == {n for n in range(30) if n % 3 < 2}
