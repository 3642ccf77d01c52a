"""The Ray Serve deployment whose replicas serve HTTP themselves.

Serve starts, places, health-checks and restarts the replicas; it routes no request.
Each replica runs its own uvicorn (uvloop, httptools) in a thread, on the public port
opened with `SO_REUSEPORT`, so the kernel spreads connections over the replicas of a
node with no proxy hop. Requests are stored by the replica's `SegmentWriter`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
from typing import Any

import ray
import uvicorn
from ray import serve

from actors.supervisor import NAMESPACE, SUPERVISOR_NAME, producer_name
from core import memory
from core.config import Config
from core.model import DEADLETTER, RecordType
from ingress import websocket
from ingress.app import build_app
from ingress.counters import ReplicaCounters
from ingress.writer import SegmentWriter

logger = logging.getLogger("sluice.ingress")


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that every replica of the node binds alike."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@serve.deployment
class Ingress:
    """One replica: the ingress app over this replica's `SegmentWriter`, on its own server."""

    def __init__(self, config: Config) -> None:
        memory.return_large_frees()
        node = ray.get_runtime_context().get_node_id()
        self.writer = SegmentWriter(
            config.node_log_path(node),
            capacity_bytes=config.log_capacity_bytes,
            segment_bytes=config.segment_bytes,
            fsync=config.should_fsync(),
            unowned=functools.partial(_start_producer, node),
        )
        counters = ReplicaCounters(self.writer.log_root / "replicas", self.writer.writer_id)
        tracer = functools.partial(_trace, node, [str(t) for t in LOGS])
        app = build_app(config, self.writer, counters, log_root=self.writer.log_root, tracer=tracer)
        server_config = uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            ws_max_size=websocket.MAX_FRAME_BYTES,  # a bigger frame closes with 1009
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            proxy_headers=False,  # X-Forwarded-For is read where the client IP is needed
            timeout_keep_alive=60,  # idle clients are cut
        )
        self.server = uvicorn.Server(server_config)
        self.sock = reuseport_socket(config.host, config.port)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="http", daemon=True
        )
        self.thread.start()

    def check_health(self) -> None:
        """Serve's health check: a replica whose HTTP server stopped is replaced."""
        if not self.thread.is_alive():
            raise RuntimeError("the replica's HTTP server has stopped")

    def __del__(self) -> None:
        # Serve's graceful stop: finish the requests in flight, then close.
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.writer.close()


LOGS = [*(t.value for t in RecordType), DEADLETTER]


def _start_producer(node: str, log: str) -> None:
    """Ask the supervisor for the producer of `log` on `node` (the writer found none),
    from a thread: looking the supervisor up waits on Ray's GCS, the loop must not."""

    def ask() -> None:
        try:
            supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
            supervisor.start_producer.remote(node, log)
        except Exception as exc:  # the supervisor restarting: the writer asks again
            logger.warning("asking for the %s producer failed: %s", log, exc)

    threading.Thread(target=ask, name=f"start-{log}-producer", daemon=True).start()


async def _trace(node: str, logs: list[str], message_id: str) -> list[dict[str, Any]]:
    """Ask this node's producers where `message_id` is (their recent batches and logs)."""

    async def ask(log: str) -> Any:
        try:
            producer = ray.get_actor(producer_name(node, log), namespace=NAMESPACE)
        except ValueError:  # not started (the dead letters' starts with the first one)
            return None
        try:
            return await producer.trace.remote(message_id)
        except Exception as exc:  # a producer restarting: the others still answer
            logger.warning("trace of %s in %s failed: %s", message_id, log, exc)
            return None

    found = await asyncio.gather(*(ask(log) for log in logs))
    return [hit for hit in found if hit]


def application(config: Config) -> Any:
    """The Serve application for `config`, with replica count and CPU share set here."""
    deployment: Any = Ingress  # a Serve Deployment once decorated
    options: dict[str, Any] = {
        "num_replicas": config.replicas,
        "ray_actor_options": {"num_cpus": 0.1},
        "health_check_period_s": 2,
    }
    if config.max_replicas_per_node:
        options["max_replicas_per_node"] = config.max_replicas_per_node
    return deployment.options(**options).bind(config)
