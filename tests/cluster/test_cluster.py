"""Sluice on a Ray cluster: three nodes simulated on this machine with
`ray.cluster_utils.Cluster`, and `sluice serve --address` deploying onto it.

One ingress replica per node, all on the public port (`SO_REUSEPORT`), each appending
to its own node's log directory (`log_dir: .../{node}`, so the simulated nodes share
no log as real machines would not), tailed by that node's own producers. A worker node
is then lost with its log directory: what README promises for node loss holds.
"""

from __future__ import annotations

import collections
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from ray.cluster_utils import Cluster

from tests.aws import create_stream, read_parquet_tree, read_stream
from tests.service import Service
from tests.traffic import Traffic

NODE = {"num_cpus": 1, "object_store_memory": 200 * 1024 * 1024}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    nodes = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    for _ in range(2):
        nodes.add_node(**NODE)
    nodes.wait_for_nodes()
    yield nodes
    nodes.shutdown()


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.5)


def nodes_with_logs(log_root: Path) -> set[str]:
    """Nodes whose producers have published the state of their track log."""
    return {p.parent.parent.name for p in log_root.glob("*/track/state.json")}


def test_cluster_every_node_serves_and_a_lost_node_loses_only_its_uncommitted_events(
    cluster: Cluster, moto_server: str, tmp_path: Path
) -> None:
    stream = create_stream(2)
    log_root = tmp_path / "logs"
    config = tmp_path / "cluster.yaml"
    config.write_text("ingress_replicas: 3\nmax_replicas_per_node: 1\n")
    service = Service(
        tmp_path,
        log_dir=log_root / "{node}",
        sinks=["file://./data?max_age_s=0.5", f"kinesis://{stream}"],
        extra=["--config", str(config), "--address", cluster.address],
    ).start()
    worker = cluster.list_all_nodes()[-1]
    try:
        wait_until(lambda: len(nodes_with_logs(log_root)) == 3, "producers on every node")
        flows = [Traffic(service.url, f"flow{i}").__enter__() for i in range(6)]
        for flow in flows:
            flow.wait_for(300)
        # Connections spread over the replicas of the nodes.
        wait_until(
            lambda: len({p.parents[2].name for p in log_root.glob("*/*/writers/*")}) >= 2,
            "replicas of two nodes writing",
        )
        cluster.remove_node(worker)  # the node is lost, and its /dev/shm with it
        shutil.rmtree(log_root / worker.unique_id[:12], ignore_errors=True)
        # Whatever was acknowledged until now may have been the lost node's; nothing after.
        before = set().union(*(f.acked for f in flows))
        for flow in flows:
            flow.wait_for(len(flow.acked) + 300, timeout_s=180)
        for flow in flows:
            flow.stop()
        acked = set().union(*(f.acked for f in flows))
        with httpx.Client(timeout=10) as client:
            assert client.get(f"{service.url}/health").status_code == 200
        assert service.stop() == 0, service.log_tail()
    finally:
        service.kill()

    found = collections.Counter(
        r["message_id"] for r in read_parquet_tree(f"file://{tmp_path}/data")
    )
    lost = acked - set(found)
    # Only events the lost node had acknowledged and not yet delivered can be missing.
    assert lost <= before, f"{len(lost - before)} events acknowledged after the loss lost"
    in_kinesis = {e["messageId"] for events in read_stream(stream).values() for e in events}
    assert acked - in_kinesis <= before
    print(f"node loss: {len(lost)} of {len(before)} events acknowledged before it were lost")
