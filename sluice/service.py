"""Running the whole service: Ray, the supervisor, the Serve application, and a clean stop.

Stop order on SIGINT/SIGTERM: stop accepting (delete the Serve app, which drains the
requests in flight), flush every log to every sink, then shut Ray down.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sluice.config import Config

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_environment(config: Config) -> dict[str, str]:
    """Ray Serve settings for `config.ingress_mode`, measured in bench/ (see README).

    `haproxy`: HAProxy on the public port in front of replicas that serve HTTP directly;
    several times the throughput of Serve's Python proxy (`proxy`). HAProxy's files and
    side ports are made per instance so two Sluices on one machine never collide.
    """
    if config.ingress_mode not in ("haproxy", "direct", "proxy"):
        raise StartupError(f"ingress_mode {config.ingress_mode!r}: use haproxy, direct or proxy")
    # Our handlers on the replica's own event loop, not a second thread's: the two
    # threads took turns at the GIL on every request (README, "Ingress modes").
    common = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
    if config.ingress_mode == "proxy":
        return common | {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    if config.ingress_mode == "direct":
        # Serve's proxy on the public port, and every replica also serves HTTP itself.
        return common | {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}
    run_dir = Path(tempfile.gettempdir()) / f"sluice-{config.port}" / "haproxy"
    run_dir.mkdir(parents=True, exist_ok=True)
    return common | {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run_dir / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",  # Sluice's own /metrics covers ingress
        # Bound even when disabled, on 0.0.0.0:9101 by default: a second Sluice would fail.
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": "60",  # idle or stalled clients are cut
    }


def serve_forever(config: Config, address: str | None = None) -> int:
    """Start everything, print the ready line, block until SIGINT/SIGTERM, flush, stop."""
    # Serve reads its settings when imported, so they go into the environment first;
    # a user's own RAY_SERVE_* variables win.
    env = {k: v for k, v in serve_environment(config).items() if k not in os.environ}
    os.environ.update(env)

    import ray
    from ray import serve

    from actors.supervisor import NAMESPACE, SUPERVISOR_NAME, Supervisor, log_root_holds_events
    from ingress.deployment import application

    check_port_free(config.host, config.port)
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
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": env},  # every worker, on a cluster too
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
        serve.start(
            http_options={"host": config.host, "port": config.port},
            proxy_location=config.proxy_location,
            logging_config=_SERVE_LOGGING,
        )
        serve.run(
            application(config), name=APP_NAME, route_prefix="/", logging_config=_SERVE_LOGGING
        )
        _wait_healthy(f"http://{config.host}:{config.port}/health", 120)
        if config.generated_key:
            print(
                f"sluice: no write key configured; generated one: {config.write_keys[0].key}",
                flush=True,
            )
        print(f"sluice ready on http://{config.host}:{config.port}", flush=True)
        while not stop.wait(0.5):
            pass
        print(
            "sluice: stopping: no new events accepted; flushing every log to every sink", flush=True
        )
        serve.delete(APP_NAME)
        drained = ray.get(supervisor.flush.remote(), timeout=300)
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
