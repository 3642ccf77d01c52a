"""Running the whole service: Ray, the supervisor, the Serve application, and a clean stop.

Stop order on SIGINT/SIGTERM: stop accepting (delete the Serve app, which drains the
requests in flight), flush every log to every sink, then shut Ray down.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from core.config import Config
from core.model import RecordType

logger = logging.getLogger("sluice")

APP_NAME = "sluice"
_SERVE_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}


class StartupError(RuntimeError):
    """Sluice could not start; the message says why and what to do."""


def check_port_free(host: str, port: int) -> None:
    """Fail early, with a clear message, when the HTTP port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {host} is already in use; stop what holds it or pass --port"
                ) from exc
            raise StartupError(f"cannot listen on {host}:{port}: {exc}") from exc


def _wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise StartupError(f"{url} did not answer 200 within {timeout_s:.0f}s: {last}")


def _die_with_parent() -> None:
    """In the child: get SIGTERM (and flush) if the launching `sluice serve` dies."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run_in_own_session(argv: list[str]) -> int:
    """Run `argv` in a new session; forward SIGINT/SIGTERM to it alone; return its status."""
    child = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent)

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return child.wait()


def sized_to_space(config: Config) -> Config:
    """`config` with each log's capacity cut to what the log directory can hold.

    Every record type's log (and the dead letters') may hold its capacity, and for a
    moment both in the replicas' files and the producer's own: a container's 64 MiB
    `/dev/shm` holds far less than the 512 MiB default.
    """
    root = config.log_path
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if config.dedup_window > 0:
        from ingress.dedup import SeenIds

        needed = SeenIds.space_needed(config.dedup_capacity)
        if needed > free // 4:
            print(
                f"sluice: warning: {root} has {free // 2**20} MiB free; de-duplication needs "
                f"{needed // 2**20} MiB for dedup_capacity {config.dedup_capacity}, so it is "
                "off (set a smaller dedup_capacity, or give the log directory room)",
                file=sys.stderr,
                flush=True,
            )
            config = dataclasses.replace(config, dedup_window=0.0)
        else:
            free -= needed
    logs = len(RecordType) + 1
    fits = int(free * 0.9) // (2 * logs)
    if fits >= config.log_capacity_bytes:
        return config
    if fits < 1024 * 1024:
        raise StartupError(
            f"the log directory {root} has only {free // 2**20} MiB free; give it room "
            "(docker run --shm-size=2g, or log_dir: a disk directory)"
        )
    print(
        f"sluice: warning: {root} has {free // 2**20} MiB free, too little for "
        f"log_capacity_bytes {config.log_capacity_bytes} in each of {logs} logs; each log "
        f"holds up to {fits // 2**20} MiB instead (docker run --shm-size=2g, or log_dir: a "
        "disk directory, for more)",
        file=sys.stderr,
        flush=True,
    )
    return dataclasses.replace(config, log_capacity_bytes=fits)


def serve_forever(config: Config, address: str | None = None, ray_dashboard: bool = False) -> int:
    """Start everything, print the ready line, block until SIGINT/SIGTERM, flush, stop."""
    import ray
    from ray import serve

    from actors.supervisor import NAMESPACE, SUPERVISOR_NAME, Supervisor, log_root_holds_events
    from ingress.deployment import application

    check_port_free(config.host, config.port)
    config = sized_to_space(config)
    from ingress.enrich import Enrichment

    Enrichment.from_config(config)  # an enricher that does not load: ConfigError now
    from core.plugins import load_callable

    for spec in config.sinks:
        if spec.transform:
            load_callable(spec.transform, f"sink {spec.uri}: transform")
    if config.tracking_plans:
        from ingress.plans import TrackingPlan

        TrackingPlan.compile(config.tracking_plan_files)  # a broken schema: ConfigError now
    if log_root_holds_events(config.log_path):
        print(
            f"sluice: {config.log_path} holds events from an earlier run; delivering them first",
            flush=True,
        )
    init: dict[str, Any] = {
        "namespace": NAMESPACE,
        "include_dashboard": ray_dashboard,
        "logging_level": logging.WARNING,
    }
    if address or os.environ.get("RAY_ADDRESS"):
        init["address"] = address or os.environ["RAY_ADDRESS"]
    ray.init(**init)
    # Installed after ray.init, which sets handlers of its own.
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        supervisor: Any = (
            ray.remote(Supervisor)
            .options(
                name=SUPERVISOR_NAME,
                namespace=NAMESPACE,
                num_cpus=0.05,
                max_restarts=-1,
                max_concurrency=1000,
            )
            .remote(config)
        )
        ray.get(supervisor.ready.remote(), timeout=120)
        # Serve places and restarts the replicas; they serve HTTP themselves.
        serve.start(proxy_location="Disabled", logging_config=_SERVE_LOGGING)
        serve.run(
            application(config), name=APP_NAME, route_prefix=None, logging_config=_SERVE_LOGGING
        )
        _wait_healthy(f"http://{config.host}:{config.port}/health", 120)
        if config.generated_key:
            print(
                f"sluice: no write key configured; generated one: {config.write_keys[0].key}",
                flush=True,
            )
        if config.generated_admin_token:
            print(
                f"sluice: debugger: http://{config.host}:{config.port}/debugger?token="
                f"{config.admin_token}",
                flush=True,
            )
        if ray_dashboard:
            print("sluice: Ray dashboard on http://127.0.0.1:8265", flush=True)
        print(f"sluice ready on http://{config.host}:{config.port}", flush=True)
        while not stop.wait(0.5):
            pass
        print(
            "sluice: stopping: no new events accepted; flushing every log to every sink", flush=True
        )
        serve.delete(APP_NAME)
        drained = ray.get(supervisor.flush.remote(), timeout=300)
        ray.get(supervisor.shutdown.remote(), timeout=60)
        if not drained:
            print(
                f"sluice: some events could not be delivered yet; they stay in {config.log_path}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        print("sluice: flushed; bye", flush=True)
        return 0
    finally:
        try:
            serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            ray.shutdown()
