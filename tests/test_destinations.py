"""Destinations and de-duplication through the real `sluice serve`: a webhook receiver
that fails and times out gets every event, in order per user, beside the file sink; a
messageId sent twice, and again after a restart, lands once; 10,000 distinct ids land."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.runner import duplicates_counted
from tests.aws import read_parquet_tree, rows_when_landed
from tests.receiver import Receiver
from tests.service import Service


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver([503, 503, 500, "timeout", 429], hang_s=2.0) as running:
        yield running


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("destinations")


def start(workdir: Path, receiver: Receiver, port: int | None = None) -> Service:
    return Service(
        workdir,
        sinks=[
            "file://./data?max_age_s=0.2",
            f"webhook+{receiver.url}?max_age_s=0.2&timeout_s=1",
        ],
        port=port,
    ).start()


def post_batches(service: Service, prefix: str, count: int, users: int) -> None:
    with service.client() as client:
        for start in range(0, count, 100):
            batch = [
                {
                    "type": "track",
                    "event": "Tick",
                    "userId": f"{prefix}-u{n % users}",
                    "messageId": f"{prefix}-{n}",
                    "properties": {"seq": n},
                }
                for n in range(start, min(count, start + 100))
            ]
            answer = client.post("/v1/batch", json={"batch": batch})
            assert answer.status_code == 200, answer.text


def wait_for(check: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_webhook_gets_every_event_in_order_despite_failures_and_dedup_survives_a_restart(
    workdir: Path, receiver: Receiver
) -> None:
    service = start(workdir, receiver)
    try:
        post_batches(service, "hook", 600, users=6)
        expected = {f"hook-{n}" for n in range(600)}
        wait_for(lambda: expected <= set(receiver.ids()))
        assert receiver.script == []  # every scripted failure was met and retried
        first_seen: dict[str, list[int]] = {}
        seen_ids: set[str] = set()
        for event in receiver.events:
            if event["messageId"] not in seen_ids:
                seen_ids.add(event["messageId"])
                first_seen.setdefault(event["userId"], []).append(event["properties"]["seq"])
        assert all(seqs == sorted(seqs) for seqs in first_seen.values())
        assert all(len(seqs) == 100 for seqs in first_seen.values())
        assert set(rows_when_landed(f"file://{workdir}/data", expected)) == expected

        # The same messageId twice: answered 200 both times, stored once.
        with service.client() as client:
            event = {"userId": "d", "event": "Once", "messageId": "dup-1"}
            assert client.post("/v1/track", json=event).status_code == 200
            assert client.post("/v1/track", json=event).status_code == 200
            both = {"batch": [{**event, "type": "track"}, {**event, "type": "track"}]}
            assert client.post("/v1/batch", json=both).status_code == 200
        wait_for(lambda: (duplicates_counted(service.url) or 0) >= 3)
        assert service.stop() == 0, service.log_tail()
    finally:
        service.kill()

    again = start(workdir, receiver, port=service.port)
    try:
        with again.client() as client:
            event = {"userId": "d", "event": "Once", "messageId": "dup-1"}
            assert client.post("/v1/track", json=event).status_code == 200
        post_batches(again, "distinct", 10_000, users=50)
        ids = {f"distinct-{n}" for n in range(10_000)}
        assert set(rows_when_landed(f"file://{workdir}/data", ids, timeout_s=60)) == ids
        assert again.stop() == 0, again.log_tail()
    finally:
        again.kill()
    rows = [r for r in read_parquet_tree(f"file://{workdir}/data") if r["message_id"] == "dup-1"]
    assert len(rows) == 1
    assert receiver.ids().count("dup-1") == 1


def test_a_non_critical_webhook_that_is_down_drops_instead_of_holding_back(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(
        "log_capacity_bytes: 2000000\n"
        "sinks:\n"
        "  - uri: file://./data\n"
        "    batch: {max_age_s: 0.2}\n"
        "  - uri: webhook+http://127.0.0.1:9/down\n"
        "    critical: false\n"
        "    timeout_s: 0.5\n"
    )
    service = Service(tmp_path, sinks=(), extra=["--config", str(config)]).start()
    try:
        acked: set[str] = set()
        with service.client() as client:
            for start in range(0, 6000, 100):  # ~3 MB of events: more than the log holds
                batch = [
                    {
                        "type": "track",
                        "event": "Big",
                        "userId": f"u{n % 7}",
                        "messageId": f"nc-{n}",
                        "properties": {"pad": "x" * 400},
                    }
                    for n in range(start, start + 100)
                ]
                for _ in range(60):
                    answer = client.post("/v1/batch", json={"batch": batch})
                    if answer.status_code != 503:
                        break
                    time.sleep(0.5)
                assert answer.status_code == 200, answer.text
                acked |= {e["messageId"] for e in batch}
        assert set(rows_when_landed(f"file://{tmp_path}/data", acked, timeout_s=60)) == acked

        def dropped() -> float:
            metrics = httpx.get(f"{service.url}/metrics").text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("sluice_sink_events_dropped{") and "webhook" in line
            )

        # The webhook gives up on a batch after 2 s (not critical); then the full log drains.
        wait_for(lambda: dropped() > 0)
        letters = tmp_path / "data" / "_deadletter"
        wait_for(lambda: any(letters.rglob("*.jsonl")))
        assert b"not critical" in next(letters.rglob("*.jsonl")).read_bytes()
    finally:
        # Not stopped cleanly: a flush waits for the webhook, which stays down.
        service.kill()
