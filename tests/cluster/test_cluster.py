"""Sluice on a Ray cluster: three nodes simulated on this machine with
`ray.cluster_utils.Cluster`, and `sluice serve --address` deploying onto it.

Ingress replicas run one per node and each is sent events directly; producers are
sharded (3 per record type, by partition-key hash) and spread over the nodes. A worker
node is removed while events flow: everything acknowledged lands, its shards come back
on the surviving nodes, and each user's events stay in order in Kinesis.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from ray.cluster_utils import Cluster

from tests.aws import create_stream, read_parquet_tree, read_stream
from tests.service import WRITE_KEY, Service
from tests.traffic import Traffic, event

SHARDS = 3
NODE = {"num_cpus": 1, "object_store_memory": 200 * 1024 * 1024}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    nodes = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    for _ in range(2):
        nodes.add_node(**NODE)
    nodes.wait_for_nodes()
    yield nodes
    nodes.shutdown()


def replica_urls() -> list[str]:
    """The HTTP address of every ingress replica (direct ingress: each listens itself)."""
    urls = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if not proc.cmdline()[0].startswith("ray::ServeReplica:sluice"):
                continue
            for conn in proc.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and 30000 <= conn.laddr.port < 31000:
                    urls.append(f"http://127.0.0.1:{conn.laddr.port}")
        except (psutil.NoSuchProcess, IndexError):
            continue
    return urls


def health(url: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/health", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_cluster_every_node_sharded_and_a_node_lost(
    cluster: Cluster, moto_server: str, tmp_path: Path
) -> None:
    stream = create_stream(2)
    config = tmp_path / "cluster.yaml"
    config.write_text(
        f"ingress_replicas: 3\nmax_replicas_per_node: 1\nshards: {SHARDS}\n"
        "ingress_mode: direct\nproxy_location: HeadOnly\n"
    )
    service = Service(
        tmp_path,
        sinks=["file://./data?max_age_s=1", f"kinesis://{stream}"],
        extra=["--config", str(config), "--address", cluster.address],
    ).start()
    try:
        deadline = time.monotonic() + 60
        while len(urls := replica_urls()) < 3:
            assert time.monotonic() < deadline, f"replicas listening: {urls}"
            time.sleep(1)
        # Ingress on every node takes events.
        acked: set[str] = set()
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as client:
            for i, url in enumerate(urls):
                batch = [event(f"node{i}", n) for n in range(60)]
                assert client.post(f"{url}/v1/batch", json={"batch": batch}).status_code == 200
                acked.update(e["messageId"] for e in batch)
        logs = {name for name in health(service.url)["types"]}
        assert {f"track.{s}" for s in range(SHARDS)} <= logs, logs

        with Traffic(service.url, "flow") as traffic:
            traffic.wait_for(600)
            cluster.remove_node(cluster.list_all_nodes()[-1])  # a worker node is lost
            traffic.wait_for(len(traffic.acked) + 900, timeout_s=180)
        acked |= traffic.acked
        # The lost node's shards were recreated: every shard answers again.
        after = health(service.url)["types"]
        assert {f"track.{s}" for s in range(SHARDS)} <= set(after), sorted(after)
        assert service.stop() == 0, service.log_tail()
    finally:
        service.kill()

    found = collections.Counter(
        r["message_id"] for r in read_parquet_tree(f"file://{tmp_path}/data")
    )
    assert acked <= set(found), f"{len(acked - set(found))} acknowledged events lost"
    in_kinesis = [e for events in read_stream(stream).values() for e in events]
    assert acked <= {e["messageId"] for e in in_kinesis}
    # Each user's events in order (first deliveries; a lost node's replays come later).
    last: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    for shard_events in read_stream(stream).values():
        for e in shard_events:
            if e["messageId"] in seen:
                continue
            seen.add(e["messageId"])
            key = (e["userId"], e["type"])
            assert e["properties"]["seq"] > last.get(key, -1), f"{key} out of order"
            last[key] = e["properties"]["seq"]
