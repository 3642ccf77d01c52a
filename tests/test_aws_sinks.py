"""The service writing to S3 and Kinesis (moto's server on loopback) at once: counts
match what was acknowledged, each user's events keep their order in their shard, and
an S3 outage while events flow loses nothing.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aws import create_bucket, create_stream, read_parquet_tree, read_stream
from tests.proxy import OutageProxy
from tests.service import Service
from tests.traffic import Traffic

SHARDS = 3


@pytest.fixture
def s3_proxy(moto_server: str) -> Iterator[OutageProxy]:
    """The way to S3 for the service, which a test can cut and restore."""
    proxy = OutageProxy(int(moto_server.rsplit(":", 1)[1]))
    yield proxy
    proxy.down()


def s3_retries(service: Service, bucket: str) -> float:
    with service.client() as client:
        metrics = client.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("sluice_sink_retries{") and f"s3://{bucket}" in line
    )


def test_s3_and_kinesis_receive_everything_acknowledged_in_order(
    moto_server: str, s3_proxy: OutageProxy, tmp_path: Path
) -> None:
    bucket, stream = create_bucket(), create_stream(SHARDS)
    s3_uri = f"s3://{bucket}/events?max_age_s=1"
    service = Service(
        tmp_path,
        sinks=[s3_uri, f"kinesis://{stream}"],
        env={"AWS_ENDPOINT_URL_S3": s3_proxy.url},
    ).start()
    try:
        with Traffic(service.url, "flow") as traffic:
            traffic.wait_for(600)
            s3_proxy.down()  # S3 goes away while events keep flowing
            traffic.wait_for(len(traffic.acked) + 1500)
            # Down until a write has failed: otherwise the test would prove nothing.
            deadline = time.monotonic() + 60
            while s3_retries(service, bucket) == 0:
                assert time.monotonic() < deadline, "the outage never made an S3 write fail"
                time.sleep(0.5)
            s3_proxy.up()
            traffic.wait_for(len(traffic.acked) + 300)
        assert service.stop() == 0, service.log_tail()
    finally:
        service.kill()
    acked = traffic.acked
    assert len(acked) >= 1500

    rows = read_parquet_tree(f"s3://{bucket}/events")
    in_s3 = collections.Counter(r["message_id"] for r in rows)
    assert set(in_s3) == acked, f"lost in S3: {len(acked - set(in_s3))}"

    shards = read_stream(stream)
    in_kinesis = collections.Counter(e["messageId"] for events in shards.values() for e in events)
    assert set(in_kinesis) == acked, f"lost in Kinesis: {len(acked - set(in_kinesis))}"
    # Per-user order within each record type (types have separate producers).
    for events in shards.values():
        last: dict[tuple[str, str], int] = {}
        for e in events:
            key = (e["userId"], e["type"])
            seq = e["properties"]["seq"]
            assert seq > last.get(key, -1), f"{key} out of order in its shard"
            last[key] = seq
    users_per_shard = collections.defaultdict(set)
    for shard, events in shards.items():
        for e in events:
            users_per_shard[e["userId"]].add(shard)
    assert all(len(s) == 1 for s in users_per_shard.values()), "a user spans two shards"
