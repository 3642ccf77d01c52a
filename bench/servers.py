"""The servers a benchmark starts: `sluice serve` on its defaults, and the baseline."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, TextIO

import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs installed

from bench.generator import BenchError, child_env

#: Where `free_port` looks: above Ray's worker ports (10002-19999) and below the
#: kernel's ephemeral range (32768 up), from which Ray and every client take ports. A
#: service restarted on its port (the chaos tests) must not find a Ray agent started
#: meanwhile sitting on it.
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, outside the ports the
    kernel hands out by itself."""
    for port in random.sample(_PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1}")


class _Server:
    """A subprocess whose output is kept in a log file and in memory."""

    def __init__(self, name: str, args: list[str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self.args = args
        self.cwd = cwd
        self.log_path = log_path
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._log: TextIO | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _spawn(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed by _read_output)
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=child_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read_output, daemon=True).start()

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        assert self._log is not None
        with self._log:
            for line in self.process.stdout:
                self._log.write(line)
                self._log.flush()
                self.output.append(line.rstrip())
                self.on_line(line)

    def on_line(self, line: str) -> None:
        pass

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output[-lines:])

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float) -> int:
        """SIGTERM, as a service manager would, and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(
                f"{self.name} did not stop within {timeout_s:.0f}s after SIGTERM; "
                f"killed it. Its output is in {self.log_path}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the process and all its descendants; nothing is flushed."""
        if self.process is not None:
            kill_tree(self.process)


class SluiceServer(_Server):
    """`sluice serve` with one write key, a `file://` sink and its log in `log_dir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        write_key: str,
        sink_dir: Path,
        log_dir: Path,
        config: Path | None = None,
        sink_query: str = "",
        extra_sinks: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "sluice.cli", "serve", "--port", str(self.port)]
        file_sink = f"file://{sink_dir}" + (f"?{sink_query}" if sink_query else "")
        args += ["--write-key", f"{write_key}:bench", "--sink", file_sink]
        for sink in extra_sinks:
            args += ["--sink", sink]
        args += ["--log-dir", str(log_dir)]
        if config is not None:
            args += ["--config", str(config.resolve())]
        super().__init__("sluice serve", args, workdir, workdir / "sluice.log")
        self._ready = threading.Event()

    def on_line(self, line: str) -> None:
        if line.startswith("sluice ready on "):
            self._ready.set()

    def start(self, timeout_s: float = 180) -> SluiceServer:
        """Start it and return once it printed its ready line."""
        self._spawn()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.2):
            if not self.running() or time.monotonic() > deadline:
                self.kill()
                raise BenchError(
                    f"sluice serve did not become ready within {timeout_s:.0f}s:\n"
                    + self.log_tail()
                )
        return self


class BaselineServer(_Server):
    """`python -m bench.baseline`: bare uvicorn + Starlette + orjson, nothing stored."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "bench.baseline", "--port", str(self.port)]
        super().__init__("the baseline", args, workdir, workdir / "baseline.log")

    def start(self, timeout_s: float = 30) -> BaselineServer:
        """Start it and return once `/health` answers."""
        self._spawn()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.running():
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer,
            ):
                if answer.status == 200:
                    return self
            time.sleep(0.1)
        self.kill()
        raise BenchError("the baseline server did not start:\n" + self.log_tail())

    def __enter__(self) -> BaselineServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(BenchError):
            self.stop(10)


def kill_tree(process: subprocess.Popen[Any]) -> None:
    """SIGKILL `process` and all its descendants (a Ray it started included) and reap it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(process.pid)
        victims = [root, *root.children(recursive=True)]
        for proc in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(victims, timeout=30)
    process.wait(30)
