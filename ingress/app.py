"""The Starlette app: Segment's HTTP tracking API, `/health`, `/metrics`, `/openapi.json`.

The app knows nothing of Ray: it hands accepted events to an `EventStore`
(`ingress.store.RayEventStore` in the service) and answers 200 once the store has them.
Per request: header size, content type, body size and read time, JSON, write key
(which names the source), the source's rate limit, then each event's validation, the
source's allowed record types and tracking plan.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ingress import events
from ingress.auth import WriteKeys
from ingress.events import IngressError, Rejection
from ingress.openapi import openapi_document
from ingress.plans import TrackingPlan
from ingress.ratelimit import TokenBucket, retry_after
from sluice.config import Config
from sluice.model import DEADLETTER, RecordType

_JSON_TYPES = ("application/json", "text/plain")  # text/plain: browsers' sendBeacon


class EventStore(Protocol):
    """Where accepted events go. `append` returns once they are stored durably.

    `bulk`: the events came in a batch request, whose sender can wait a little longer.
    """

    async def append(self, record_type: str, payloads: list[bytes], bulk: bool = False) -> None: ...

    async def stats(self) -> list[dict[str, Any]]: ...


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(exc: IngressError) -> Response:
    body = {"success": False, "code": exc.code, "message": exc.message}
    return json_response(exc.status, body, exc.headers)


def _described(r: Rejection) -> dict[str, Any]:
    out: dict[str, Any] = {"index": r.index, "code": r.code, "message": r.message}
    if r.violations:
        out["violations"] = r.violations
    return out


@dataclass(frozen=True)
class _SourceRules:
    """What one source may send, built once per replica from its `sluice.config.Source`."""

    allowed_types: frozenset[str] | None
    bucket: TokenBucket | None  # per replica: see ingress/ratelimit.py
    plan: TrackingPlan | None
    reject_violations: bool


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
    plan = TrackingPlan.compile(config.tracking_plan_files) if config.tracking_plans else None
    rules: dict[str, _SourceRules] = {}
    for key in config.write_keys:
        source = config.source(key.source)
        limit = source.rate_limit
        rules[source.name] = _SourceRules(
            allowed_types=frozenset(source.record_types) if source.record_types else None,
            bucket=TokenBucket(limit.events_per_s, limit.burst) if limit else None,
            plan=plan if source.tracking_plan != "off" else None,
            reject_violations=source.tracking_plan == "reject",
        )
    openapi = orjson.dumps(openapi_document())
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
        header_bytes = sum(len(k) + len(v) for k, v in request.scope["headers"])
        if header_bytes > events.MAX_HEADER_BYTES:
            raise IngressError(
                431,
                "headers_too_large",
                f"request headers take {header_bytes} bytes; the limit is "
                f"{events.MAX_HEADER_BYTES}",
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
            raise IngressError(
                415,
                "unsupported_media_type",
                f"Content-Type {content_type[:100] or '(none)'!r} is not accepted; "
                "send application/json",
            )
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise IngressError(
                413, "payload_too_large", f"body is {declared} bytes; the limit is {limit}"
            )
        chunks = []
        size = 0
        try:
            # A client trickling its body (slowloris) holds a connection: bound the wait.
            async with asyncio.timeout(config.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise IngressError(413, "payload_too_large", f"body exceeds {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise IngressError(
                408,
                "request_timeout",
                f"the request body took longer than {config.body_timeout_s:g}s to arrive",
            ) from None
        except ClientDisconnect:
            raise IngressError(
                400, "client_disconnected", "the client went away before sending its body"
            ) from None
        body = b"".join(chunks)
        return events.decompress(body, request.headers.get("content-encoding", ""), limit)

    async def store_parsed(parsed: events.Parsed, source: str, bulk: bool) -> None:
        letters = events.deadletters(parsed, source)
        calls = [store.append(kind, payloads, bulk) for kind, payloads in parsed.by_type.items()]
        if letters and config.deadletter_sink is not None:
            calls.append(store.append(DEADLETTER, letters, bulk))
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
            rule = rules[source]
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
            bucket = rule.bucket
            wait_s = bucket.take(len(items)) if bucket else 0.0
            if bucket and wait_s:
                raise IngressError(
                    429,
                    "rate_limited",
                    f"this source may send {bucket.rate:g} events/s (bursts of {bucket.burst:g}); "
                    "retry after the Retry-After seconds",
                    {"Retry-After": retry_after(wait_s)},
                )
            ip = request.client.host if request.client else None
            forwarded = request.headers.get("x-forwarded-for")
            if forwarded:
                ip = forwarded.split(",")[0].strip()
            parsed = events.accept(
                items,
                record_type=record_type,
                source=source,
                ip=ip,
                defaults=data,
                allowed_types=rule.allowed_types,
                plan=rule.plan,
                reject_violations=rule.reject_violations,
            )
            for r in parsed.rejected:
                rejected.labels(r.code).inc()
            await store_parsed(parsed, source, bulk=record_type is None)
            if record_type is not None and parsed.rejected:
                single = _described(parsed.rejected[0])
                del single["index"]
                requests.labels(endpoint, "400").inc()
                return json_response(400, {"success": False, **single})
            if parsed.rejected and not parsed.accepted:
                body_out = {
                    "success": False,
                    "code": "invalid_events",
                    "message": "no event in the batch is valid",
                    "rejected": [_described(r) for r in parsed.rejected],
                }
                requests.labels(endpoint, "400").inc()
                return json_response(400, body_out)
            for kind, payloads in parsed.by_type.items():
                accepted.labels(kind).inc(len(payloads))
            answer: dict[str, Any] = {"success": True}
            if parsed.rejected:
                answer["rejected"] = [_described(r) for r in parsed.rejected]
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

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "error")
        headers = exc.headers if isinstance(exc, HTTPException) else None  # 405: Allow
        return json_response(
            status,
            {
                "success": False,
                "code": code,
                "message": f"{request.method} {request.url.path[:200]}: {code.replace('_', ' ')}",
            },
            dict(headers) if headers else None,
        )

    routes = [Route(f"/v1/{t.value}", endpoint_for(t.value), methods=["POST"]) for t in RecordType]
    routes += [
        Route("/v1/batch", endpoint_for("batch"), methods=["POST"]),
        Route("/v1/import", endpoint_for("batch"), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})
