"""The Locust suite: single `track` events, 100-event batches, gzip-compressed batches,
and `track` calls pipelined over WebSockets (JSON-RPC on `/v1/ws`).

Headless, through the runner: `sluice bench --scenario batch ...`. Interactive, with
Locust's web UI (pick the user class and set the write key in the UI):

    locust -f bench/locustfile.py --class-picker --host http://127.0.0.1:8000 \\
        --write-key KEY        # or SLUICE_BENCH_WRITE_KEY=KEY

Every event has a unique `messageId` (a per-process random prefix and a counter). When
`SLUICE_BENCH_ACKED_DIR` is set, each process appends the ids of the events answered
2xx to `acked-<pid>.txt` there, one a line, so the runner can count what got lost.
"""

from __future__ import annotations

import atexit
import base64
import os
import random
import time
import zlib
from pathlib import Path
from typing import Any

import locust.stats
import orjson
import websocket  # websocket-client: plain sockets, which gevent makes cooperative
from locust import FastHttpUser, User, constant, events, task

from bench.payloads import BATCH_SIZE, EventPool, MessageIds, accepted_ids

WRITE_KEY_ENV = "SLUICE_BENCH_WRITE_KEY"
ACKED_DIR_ENV = "SLUICE_BENCH_ACKED_DIR"

if os.environ.get("SLUICE_BENCH_RUNNER"):
    # The runner draws its progress line from the stats-history CSV (flushed every 5 s by
    # default) and plots its "current" percentiles (a 10 s window by default).
    locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1
    locust.stats.CURRENT_RESPONSE_TIME_PERCENTILE_WINDOW = 2


class AckedIds:
    """Ids answered 2xx, appended to `acked-<pid>.txt` in large chunks."""

    def __init__(self, directory: str | None) -> None:
        self.directory = Path(directory) if directory else None
        self.reset()

    def reset(self) -> None:
        self.pending: list[str] = []
        self.last_write = time.monotonic()

    def add(self, ids: list[str]) -> None:
        if self.directory is None:
            return
        self.pending += ids
        # Also by age: a worker Locust kills at the end must not take many ids with it.
        if len(self.pending) >= 50_000 or time.monotonic() - self.last_write > 1.0:
            self.flush()

    def flush(self) -> None:
        if self.directory is None:
            return
        chunk, self.pending = self.pending, []
        self.last_write = time.monotonic()
        if chunk:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / f"acked-{os.getpid()}.txt", "a") as out:
                out.write("\n".join(chunk) + "\n")


MESSAGE_IDS = MessageIds()
POOL = EventPool(random.Random())
ACKED = AckedIds(os.environ.get(ACKED_DIR_ENV))


def _after_fork() -> None:
    # `locust --processes` forks workers after importing this file: each needs its own ids.
    MESSAGE_IDS.reset()
    POOL.rng.seed()
    ACKED.reset()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(ACKED.flush)


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator, unused-ignore]
def _add_arguments(parser: Any) -> None:
    # Shown (and editable) in the web UI too.
    parser.add_argument(
        "--write-key",
        env_var=WRITE_KEY_ENV,
        default="",
        include_in_web_ui=True,
        help="Sluice write key, sent as the HTTP Basic user name",
    )


@events.test_stop.add_listener  # type: ignore[untyped-decorator, unused-ignore]
def _flush_on_stop(**_kwargs: Any) -> None:
    ACKED.flush()


@events.quitting.add_listener  # type: ignore[untyped-decorator, unused-ignore]
def _flush_on_quit(**_kwargs: Any) -> None:
    ACKED.flush()


class _SluiceUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        key = options.write_key if options else os.environ.get(WRITE_KEY_ENV, "")
        token = base64.b64encode(f"{key}:".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def send(self, path: str, body: bytes, ids: list[str], headers: dict[str, str]) -> None:
        response = self.client.post(path, data=body, headers=headers, name=path)  # type: ignore[arg-type]
        if 200 <= response.status_code < 300:
            ACKED.add(accepted_ids(ids, response.content or b""))


class SingleTrack(_SluiceUser):
    """One `track` event per request to `/v1/track`."""

    @task
    def track(self) -> None:
        ids = MESSAGE_IDS.take(1)
        self.send("/v1/track", POOL.track(ids[0]), ids, self.headers)


class Batch(_SluiceUser):
    """100 mixed events (all six record types) per request to `/v1/batch`."""

    @task
    def batch(self) -> None:
        ids = MESSAGE_IDS.take(BATCH_SIZE)
        self.send("/v1/batch", POOL.batch(ids), ids, self.headers)


class GzipBatch(_SluiceUser):
    """The same batches as `Batch`, gzip-compressed (`Content-Encoding: gzip`)."""

    def on_start(self) -> None:
        super().on_start()
        self.gzip_headers = {**self.headers, "Content-Encoding": "gzip"}

    @task
    def gzip_batch(self) -> None:
        ids = MESSAGE_IDS.take(BATCH_SIZE)
        # Level 1 (wbits 31: a gzip stream) spares the generator; inflating costs the
        # server about the same at any level.
        body = zlib.compress(POOL.batch(ids), 1, 31)
        self.send("/v1/batch", body, ids, self.gzip_headers)


#: Calls a WebSocket user sends before reading their answers.
WS_WINDOW = 50


class WebSocketTrack(User):
    """One WebSocket per user; `track` calls sent `WS_WINDOW` at a time without waiting,
    each timed from its send to its answer (which leaves once the event is stored)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        key = options.write_key if options else os.environ.get(WRITE_KEY_ENV, "")
        token = base64.b64encode(f"{key}:".encode()).decode()
        url = str(self.host).replace("http", "ws", 1) + "/v1/ws"
        self.socket = websocket.create_connection(
            url, header=[f"Authorization: Basic {token}"], timeout=60
        )

    def on_stop(self) -> None:
        self.socket.close()

    @task
    def pipelined_track(self) -> None:
        ids = MESSAGE_IDS.take(WS_WINDOW)
        sent_at: dict[int, float] = {}
        for n, message_id in enumerate(ids):
            call = b'{"jsonrpc":"2.0","method":"track","id":%d,"params":%s}' % (
                n,
                POOL.track(message_id),
            )
            sent_at[n] = time.perf_counter()
            self.socket.send(call)
        acked: list[str] = []
        try:
            for _ in ids:
                answer = orjson.loads(self.socket.recv())
                n = answer.get("id")
                error = answer.get("error")
                if error is None and isinstance(n, int):
                    acked.append(ids[n])  # before it is counted: a stop may come between
                events.request.fire(  # type: ignore[no-untyped-call]
                    request_type="WS",
                    name="/v1/ws track",
                    response_time=(time.perf_counter() - sent_at.get(n, 0.0)) * 1000,
                    response_length=0,
                    exception=RuntimeError(str(error)) if error else None,
                    context={},
                )
        finally:
            # Also when the run stops this user mid-window: every answer counted above
            # has its id in the acked file, so `events` matches the answered calls.
            ACKED.add(acked)
