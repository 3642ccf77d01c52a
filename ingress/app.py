"""The Starlette app: Segment's HTTP tracking API, `/health` and `/metrics`.

The app knows nothing of Ray: it hands accepted events to an `EventStore`
(`ingress.store.RayEventStore` in the service) and answers 200 once the store has them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingress import events
from ingress.auth import WriteKeys
from ingress.events import IngressError
from sluice.config import Config
from sluice.model import DEADLETTER, RecordType

_JSON_TYPES = ("application/json", "text/plain")  # text/plain: browsers' sendBeacon


class EventStore(Protocol):
    """Where accepted events go. `append` returns once they are stored durably."""

    async def append(self, record_type: str, payloads: list[bytes]) -> None: ...

    async def stats(self) -> list[dict[str, Any]]: ...


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(exc: IngressError) -> Response:
    body = {"success": False, "code": exc.code, "message": exc.message}
    return json_response(exc.status, body, exc.headers)


class _StoreCollector:
    """Prometheus gauges read from the producers' counters at scrape time."""

    def __init__(self) -> None:
        self.latest: list[dict[str, Any]] = []

    def collect(self) -> Any:
        stored = GaugeMetricFamily(
            "sluice_log_events_stored", "Events accepted into the log", labels=["type"]
        )
        in_log = GaugeMetricFamily(
            "sluice_log_events_in_log",
            "Events in the log not yet committed by every sink",
            labels=["type"],
        )
        committed = GaugeMetricFamily(
            "sluice_sink_events_committed", "Events committed by a sink", labels=["type", "sink"]
        )
        retries = GaugeMetricFamily(
            "sluice_sink_retries", "Batch write retries", labels=["type", "sink"]
        )
        dead = GaugeMetricFamily(
            "sluice_sink_events_deadlettered",
            "Events a sink refused for good",
            labels=["type", "sink"],
        )
        for s in self.latest:
            kind = s["record_type"]
            stored.add_metric([kind], s["accepted"])
            in_log.add_metric([kind], s["in_log"])
            for sink in s["sinks"].values():
                committed.add_metric([kind, sink["uri"]], sink["committed"])
                retries.add_metric([kind, sink["uri"]], sink["retries"])
                dead.add_metric([kind, sink["uri"]], sink["deadlettered"])
        yield from (stored, in_log, committed, retries, dead)


def build_app(config: Config, store: EventStore) -> Starlette:
    """The ingress ASGI app for `config`, storing through `store`."""
    keys = WriteKeys(config.write_keys)
    registry = CollectorRegistry()
    requests = Counter(
        "sluice_http_requests", "HTTP requests", ["endpoint", "status"], registry=registry
    )
    accepted = Counter("sluice_events_accepted", "Events answered 200", ["type"], registry=registry)
    rejected = Counter(
        "sluice_events_rejected", "Events refused by validation", ["code"], registry=registry
    )
    store_metrics = _StoreCollector()
    registry.register(store_metrics)

    async def read_body(request: Request, limit: int) -> bytes:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
            raise IngressError(
                415,
                "unsupported_media_type",
                f"Content-Type {content_type or '(none)'!r} is not accepted; send application/json",
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise IngressError(
                413, "payload_too_large", f"body is {declared} bytes; the limit is {limit}"
            )
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise IngressError(413, "payload_too_large", f"body exceeds {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        return events.decompress(body, request.headers.get("content-encoding", ""), limit)

    async def store_parsed(parsed: events.Parsed, source: str) -> None:
        letters = events.deadletters(parsed, source)
        calls = [store.append(kind, payloads) for kind, payloads in parsed.by_type.items()]
        if letters and config.deadletter_sink is not None:
            calls.append(store.append(DEADLETTER, letters))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def ingest(request: Request, endpoint: str) -> Response:
        limit = events.MAX_BATCH_BYTES if endpoint == "batch" else events.MAX_EVENT_BYTES
        try:
            body = await read_body(request, limit)
            data = events.parse_json(body)
            source = keys.source_of(request.headers.get("authorization"), data)
            if endpoint == "batch":
                items = data.get("batch")
                if not isinstance(items, list):
                    raise IngressError(400, "invalid_batch", "'batch' must be a list of events")
                if len(items) > events.MAX_BATCH_EVENTS:
                    raise IngressError(
                        400,
                        "too_many_events",
                        f"batch holds {len(items)} events; the limit is {events.MAX_BATCH_EVENTS}",
                    )
                record_type = None
            else:
                items, record_type = [data], endpoint
            ip = request.client.host if request.client else None
            forwarded = request.headers.get("x-forwarded-for")
            if forwarded:
                ip = forwarded.split(",")[0].strip()
            parsed = events.accept(
                items, record_type=record_type, source=source, ip=ip, defaults=data
            )
            for r in parsed.rejected:
                rejected.labels(r.code).inc()
            await store_parsed(parsed, source)
            if record_type is not None and parsed.rejected:
                r = parsed.rejected[0]
                raise IngressError(400, r.code, r.message)
            if parsed.rejected and not parsed.accepted:
                body_out = {
                    "success": False,
                    "code": "invalid_events",
                    "message": "no event in the batch is valid",
                    "rejected": [
                        {"index": r.index, "code": r.code, "message": r.message}
                        for r in parsed.rejected
                    ],
                }
                requests.labels(endpoint, "400").inc()
                return json_response(400, body_out)
            for kind, payloads in parsed.by_type.items():
                accepted.labels(kind).inc(len(payloads))
            answer: dict[str, Any] = {"success": True}
            if parsed.rejected:
                answer["rejected"] = [
                    {"index": r.index, "code": r.code, "message": r.message}
                    for r in parsed.rejected
                ]
            requests.labels(endpoint, "200").inc()
            return json_response(200, answer)
        except IngressError as exc:
            requests.labels(endpoint, str(exc.status)).inc()
            return error_response(exc)

    def endpoint_for(name: str) -> Any:
        async def handler(request: Request) -> Response:
            return await ingest(request, name)

        handler.__name__ = f"post_{name}"
        return handler

    async def health(request: Request) -> Response:
        try:
            stats = await asyncio.wait_for(store.stats(), 5.0)
        except Exception as exc:
            return json_response(
                503, {"status": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}
            )
        full = [s["record_type"] for s in stats if s["held_bytes"] >= s["capacity_bytes"] * 0.95]
        body = {"status": "full" if full else "ok", "types": {s["log"]: s for s in stats}}
        if full:
            body["reason"] = f"log full for {', '.join(full)}: a sink is behind or down"
            return json_response(503, body, {"Retry-After": "5"})
        return json_response(200, body)

    async def metrics(request: Request) -> Response:
        try:
            store_metrics.latest = await asyncio.wait_for(store.stats(), 5.0)
        except Exception:
            store_metrics.latest = []
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "error")
        return json_response(
            status,
            {
                "success": False,
                "code": code,
                "message": f"{request.method} {request.url.path}: {code.replace('_', ' ')}",
            },
        )

    routes = [Route(f"/v1/{t.value}", endpoint_for(t.value), methods=["POST"]) for t in RecordType]
    routes += [
        Route("/v1/batch", endpoint_for("batch"), methods=["POST"]),
        Route("/v1/import", endpoint_for("batch"), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})
