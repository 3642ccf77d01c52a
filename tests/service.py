"""The real `sluice serve`, started as a user would, for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil

from bench.servers import free_port, kill_tree

WRITE_KEY = "test-write-key"


class Service:
    """A `sluice serve` subprocess; `start()` returns once it printed its ready line."""

    def __init__(
        self,
        workdir: Path,
        *,
        sinks: Sequence[str] = ("file://./data",),
        write_keys: Sequence[str] = (f"{WRITE_KEY}:web",),
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.log_dir = log_dir or workdir / "log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "sluice.cli", "serve", "--port", str(self.port)]
        self.args += ["--log-dir", str(self.log_dir)]
        for sink in sinks:
            self.args += ["--sink", sink]
        for key in write_keys:
            self.args += ["--write-key", key]
        self.args += list(extra)
        self.env = {**os.environ, **(env or {})}
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    def start(self, timeout_s: float = 180) -> Service:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.args,
            cwd=self.workdir,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("sluice serve did not become ready:\n" + self.log_tail())
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip())
            if line.startswith("sluice ready on "):
                self._ready.set()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.output[-lines:])

    def stop(self, timeout_s: float = 180) -> int:
        """SIGTERM, as a service manager would; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the launcher and its session (Ray included); nothing is flushed."""
        if self.process is not None:
            kill_tree(self.process)

    def processes(self, title: str) -> list[psutil.Process]:
        """Processes of this service whose title (`ray::ClassName...`) starts with `title`."""
        assert self.process is not None
        found = []
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, IndexError):
                if proc.cmdline()[0].startswith(title):
                    found.append(proc)
        return found

    def client(self, auth: tuple[str, str] | None = (WRITE_KEY, "")) -> httpx.Client:
        """An HTTP client for this service, authenticated with the test write key."""
        return httpx.Client(base_url=self.url, auth=auth, timeout=30)
