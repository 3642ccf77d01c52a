"""KinesisSink against moto's Kinesis: nothing lost, nothing doubled, each user in order."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.config import SinkSpec
from sinks.base import Batch
from sinks.kinesis import MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, KinesisSink
from tests.aws import create_stream, read_stream

SHARDS = 4


def make_events(count: int, users: int, *, pad: int = 0, seed: int = 0) -> list[bytes]:
    """`count` track events from `users` users; `seq` numbers each user's events in order."""
    rng = random.Random(seed)
    seq: dict[str, int] = defaultdict(int)
    payloads = []
    for i in range(count):
        user = f"user-{rng.randrange(users)}"
        event: dict[str, Any] = {
            "type": "track",
            "event": "Clicked",
            "messageId": f"m-{i}-{uuid.uuid4()}",
            "receivedAt": "2024-05-01T12:00:00.000Z",
            "source": "web",
            "properties": {"seq": seq[user], "pad": "x" * pad},
        }
        # A few anonymous visitors, so the key falls back to anonymousId.
        event["userId" if i % 10 else "anonymousId"] = user
        seq[user] += 1
        payloads.append(orjson.dumps(event))
    return payloads


def assert_delivered(name: str, payloads: list[bytes], duplicates: int = 0) -> None:
    """Every event at least once (`duplicates` extra copies in all); each user's events in
    one shard, the last copy of each in the order sent."""
    shards = read_stream(name)
    ids = [e["messageId"] for events in shards.values() for e in events]
    assert set(ids) == {orjson.loads(p)["messageId"] for p in payloads}
    assert len(ids) - len(set(ids)) == duplicates
    seen_in: dict[str, str] = {}
    for shard_id, events in shards.items():
        last: dict[str, dict[str, int]] = defaultdict(dict)  # user -> messageId -> seq
        for e in events:
            user = e.get("userId") or e["anonymousId"]
            assert seen_in.setdefault(user, shard_id) == shard_id, f"{user} in two shards"
            last[user].pop(e["messageId"], None)
            last[user][e["messageId"]] = e["properties"]["seq"]
        for user, copies in last.items():
            seqs = list(copies.values())
            assert seqs == sorted(seqs), f"{user}'s events out of order in {shard_id}"


@pytest.fixture
def sink(moto_server: str) -> Iterator[KinesisSink]:
    kinesis = KinesisSink(SinkSpec.parse(f"kinesis://{create_stream(SHARDS)}", Path.cwd()))
    yield kinesis
    kinesis.close()


def record_calls(sink: KinesisSink) -> list[tuple[int, int]]:
    """(records, bytes of data + keys) of every PutRecords call the sink makes."""
    calls: list[tuple[int, int]] = []

    def on_call(params: dict[str, Any], **_: Any) -> None:
        records = params["Records"]
        size = sum(len(r["Data"]) + len(r["PartitionKey"].encode()) for r in records)
        calls.append((len(records), size))

    sink.client.meta.events.register("provide-client-params.kinesis.PutRecords", on_call)
    return calls


def test_batches_from_many_users_arrive_once_and_in_order(sink: KinesisSink) -> None:
    payloads = make_events(4000, users=50)
    assert sink.write(Batch.of("track-0", "track", 0, payloads[:2500])).rejected == []
    assert sink.write(Batch.of("track-0", "track", 2500, payloads[2500:])).rejected == []
    assert_delivered(sink.stream, payloads)
    assert sink.retries == 0


def test_calls_hold_at_most_500_records(sink: KinesisSink) -> None:
    payloads = make_events(1600, users=100_000)  # nearly every event its own user
    calls = record_calls(sink)
    assert sink.write(Batch.of("track-0", "track", 0, payloads)).rejected == []
    assert max(n for n, _ in calls) == MAX_RECORDS_PER_CALL
    assert sum(n for n, _ in calls) == len(payloads)
    assert_delivered(sink.stream, payloads)


def test_calls_hold_at_most_5_mib(sink: KinesisSink) -> None:
    payloads = make_events(40, users=40, pad=700_000)  # ~0.7 MiB each: 7 fit in one call
    calls = record_calls(sink)
    assert sink.write(Batch.of("track-0", "track", 0, payloads)).rejected == []
    assert all(size <= MAX_BYTES_PER_CALL for _, size in calls)
    assert max(n for n, _ in calls) == 7
    assert_delivered(sink.stream, payloads)


def test_event_over_1_mib_is_rejected_and_the_rest_written(sink: KinesisSink) -> None:
    payloads = make_events(300, users=20)
    payloads[123] = make_events(1, users=1, pad=1024 * 1024)[0]
    rejected = sink.write(Batch.of("track-0", "track", 0, payloads)).rejected
    assert [r.index for r in rejected] == [123]
    assert "1048576-byte limit" in rejected[0].reason
    assert_delivered(sink.stream, payloads[:123] + payloads[124:])


def fail_some_records(sink: KinesisSink, share: float, seed: int = 1) -> list[int]:
    """Make Kinesis refuse `share` of each call's records, throttled as a hot shard would be.

    The refused records are taken out of the request, so moto never stores them, and put
    back into the parsed response as failed entries.
    """
    rng = random.Random(seed)
    refused: list[int] = []

    def drop(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        records = params["Records"]
        failed = {i for i in range(len(records)) if rng.random() < share}
        failed.discard(0)  # PutRecords needs at least one record
        context["refused"] = sorted(failed)
        params["Records"] = [r for i, r in enumerate(records) if i not in failed]
        refused.append(len(failed))

    def report(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        failed = context.pop("refused", [])
        stored = iter(parsed.get("Records", []))
        count = len(parsed.get("Records", [])) + len(failed)
        parsed["Records"] = [
            {
                "ErrorCode": "ProvisionedThroughputExceededException",
                "ErrorMessage": "Rate exceeded for shard",
            }
            if i in failed
            else next(stored)
            for i in range(count)
        ]
        parsed["FailedRecordCount"] = len(failed)

    sink.client.meta.events.register("provide-client-params.kinesis.PutRecords", drop)
    sink.client.meta.events.register("after-call.kinesis.PutRecords", report)
    return refused


def test_partial_failures_are_retried_without_loss_or_reordering(sink: KinesisSink) -> None:
    sink.backoff_base_s = 0.001
    refused = fail_some_records(sink, share=0.3)
    payloads = make_events(3000, users=50, seed=2)
    assert sink.write(Batch.of("track-0", "track", 0, payloads)).rejected == []
    assert sum(refused) > 500
    assert sink.retries == sum(refused)
    # What landed after an earlier event of its user failed is sent again behind it.
    assert_delivered(sink.stream, payloads, duplicates=sink.resent_in_order)


def test_one_users_events_share_calls(sink: KinesisSink) -> None:
    payloads = make_events(1000, users=1)
    calls = record_calls(sink)
    assert sink.write(Batch.of("track-0", "track", 0, payloads)).rejected == []
    assert len(calls) == 2  # 500 records a call, not one call per event
    assert_delivered(sink.stream, payloads)


def test_records_that_keep_failing_fail_the_write(sink: KinesisSink) -> None:
    sink.backoff_base_s = sink.backoff_cap_s = 0.01
    sink.give_up_after_s = 0.2
    fail_some_records(sink, share=1.0)  # everything but each call's first record
    payloads = make_events(200, users=10_000)  # one record lands per call: ~200 rounds
    with pytest.raises(TimeoutError, match="still failing"):
        sink.write(Batch.of("track-0", "track", 0, payloads))
