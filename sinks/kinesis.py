"""Kinesis Data Streams: one record per event, partitioned by user, through PutRecords.

`kinesis://stream-name`. Endpoint, region and credentials come from the standard AWS
variables (`AWS_ENDPOINT_URL_KINESIS`, `AWS_ENDPOINT_URL`, `AWS_REGION`, ...).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import orjson
from botocore.config import Config

from core import model
from core.config import SinkSpec
from sinks.base import Batch, Delivered, Rejected

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_kinesis.type_defs import PutRecordsRequestEntryTypeDef

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024  # data + partition key
MAX_KEY_CHARS = 256


@dataclass
class _Record:
    index: int  # position in the batch
    key: str
    data: bytes
    first_failure: float | None = None
    failures: int = 0

    @property
    def size(self) -> int:
        return len(self.data) + len(self.key.encode())


def _key_for(event: dict[str, Any]) -> str:
    key = model.partition_key(event)
    # Kinesis refuses keys over 256 characters; a digest still maps one user to one shard.
    return key if len(key) <= MAX_KEY_CHARS else hashlib.sha256(key.encode()).hexdigest()


def _calls(records: list[_Record]) -> Iterator[list[_Record]]:
    """Split records into PutRecords calls of at most 500 records and 5 MiB."""
    call: list[_Record] = []
    size = 0
    for record in records:
        if call and (len(call) == MAX_RECORDS_PER_CALL or size + record.size > MAX_BYTES_PER_CALL):
            yield call
            call, size = [], 0
        call.append(record)
        size += record.size
    if call:
        yield call


class KinesisSink:
    """Puts each event of a batch as one record, keeping each user's events in order."""

    #: Backoff after a round with failed records: full jitter, doubling per failure, capped.
    backoff_base_s = 0.05
    backoff_cap_s = 2.0
    #: A record still failing this long after its first failure fails the whole write.
    give_up_after_s = 30.0

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.stream = spec.location[0]
        region = (
            os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or boto3.session.Session().region_name
            or "us-east-1"
        )
        config = Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard", "max_attempts": 3},
        )
        self.client: KinesisClient = boto3.client("kinesis", region_name=region, config=config)
        self.retries = 0  # records sent again after PutRecords reported them failed
        # Records that landed after an earlier record of their key failed, sent again to
        # follow it: the duplicates that per-key order costs.
        self.resent_in_order = 0

    def write(self, batch: Batch) -> Delivered:
        """Put every event of `batch`; raise if some still fail after `give_up_after_s`."""
        rejected: list[Rejected] = []
        sequences = [""] * (batch.end - batch.start)
        queues: dict[str, deque[_Record]] = {}
        for index, data in enumerate(batch.payloads()):
            try:
                key = _key_for(orjson.loads(data))
            except orjson.JSONDecodeError as exc:
                rejected.append(Rejected(index, f"kinesis: event is not valid JSON: {exc}"))
                continue
            record = _Record(index, key, data)
            if not key:
                rejected.append(Rejected(index, "kinesis: no userId, anonymousId or messageId"))
            elif record.size > MAX_RECORD_BYTES:
                rejected.append(
                    Rejected(
                        index,
                        f"kinesis: record of {record.size} bytes (data + partition key) is over "
                        f"the {MAX_RECORD_BYTES}-byte limit of a Kinesis record",
                    )
                )
            else:
                queues.setdefault(key, deque()).append(record)

        # Each round sends every queued record, keys interleaved in batch order, in calls of
        # up to 500 records. PutRecords keeps going past a failed record, so a key's later
        # records may land before it: the key is sent again from its first failed record
        # (at least once, and its last copies in order).
        while queues:
            sent = sorted((r for queue in queues.values() for r in queue), key=lambda r: r.index)
            failed = {r.index for call in _calls(sent) for r in self._put(call, sequences)}
            self.retries += len(failed)
            retry: list[_Record] = []
            for key in list(queues):
                queue = queues[key]
                while queue and queue[0].index not in failed:
                    queue.popleft()
                if not queue:
                    del queues[key]
                    continue
                retry.append(queue[0])
                self.resent_in_order += sum(1 for r in queue if r.index not in failed)
            if retry:
                self._back_off(retry)
        return Delivered(rejected, sequences, by_index=True)

    def _put(self, call: list[_Record], sequences: list[str]) -> list[_Record]:
        """One PutRecords call; the records it reports as failed. Where the others landed
        goes into `sequences`."""
        entries: list[PutRecordsRequestEntryTypeDef] = [
            {"Data": r.data, "PartitionKey": r.key} for r in call
        ]
        response = self.client.put_records(StreamName=self.stream, Records=entries)
        failed = []
        for record, out in zip(call, response["Records"], strict=True):
            if out.get("ErrorCode"):
                failed.append(record)
            else:
                sequences[record.index] = f"{out.get('ShardId')}/{out.get('SequenceNumber')}"
        return failed

    def _back_off(self, failed: list[_Record]) -> None:
        now = time.monotonic()
        worst = 0
        for record in failed:
            if record.first_failure is None:
                record.first_failure = now
            elif now - record.first_failure > self.give_up_after_s:
                raise TimeoutError(
                    f"kinesis stream {self.stream}: {len(failed)} record(s) still failing "
                    f"after {self.give_up_after_s:.0f} s (throttled?); the batch will be retried"
                )
            record.failures += 1
            worst = max(worst, record.failures)
        time.sleep(random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**worst)))

    def close(self) -> None:
        """Release the client's connection pool."""
        self.client.close()
