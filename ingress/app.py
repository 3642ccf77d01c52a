"""The Starlette app: Segment's HTTP tracking API, the settings analytics.js loads,
`/health`, `/metrics`, `/openapi.json`.

The app knows nothing of Ray: it hands accepted events to an `EventStore` and answers
200 once the store has them. Per request: header size, content type, body size and read
time, JSON, write key (which names the source), the source's origins and rate limit,
then each event's validation, the source's allowed record types and tracking plan.
Everything the endpoints share lives in one `IngressState` on `app.state.ingress`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from core.config import Config
from core.model import DEADLETTER, RecordType
from ingress import cdn, debugger, events, typed
from ingress.auth import WriteKeys
from ingress.cors import CorsPolicy
from ingress.counters import ReplicaCounters
from ingress.dedup import Lookup, SeenIds
from ingress.enrich import Enrichment
from ingress.events import IngressError, Rejection
from ingress.openapi import openapi_document
from ingress.plans import TrackingPlan
from ingress.ratelimit import TokenBucket, retry_after

logger = logging.getLogger("sluice.ingress")

DEDUP_DIR = "_dedup"  # in the node's log directory
_JSON_TYPES = ("application/json", "text/plain")  # text/plain: browsers' sendBeacon

#: Path name under /v1/ -> the record type it takes, or "batch". The one-letter names are
#: what analytics.js posts to.
ENDPOINTS: dict[str, str] = {
    **{t.value: t.value for t in RecordType},
    **{t.value[0]: t.value for t in RecordType},
    "batch": "batch",
    "import": "batch",
    "b": "batch",
}

SETTINGS_PATH = "/v1/projects/{write_key}/settings"


class EventStore(Protocol):
    """Where accepted events go. `append_many` returns once the payloads of every record
    type (or the dead letters) it is given are stored durably.

    `bulk`: the events came in a batch request, whose sender can wait a little longer.
    """

    async def append_many(self, by_log: Mapping[str, list[bytes]], bulk: bool = False) -> None: ...

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
class SourceRules:
    """What one source may send, built once per replica from its `core.config.Source`."""

    allowed_types: frozenset[str] | None
    bucket: TokenBucket | None  # per replica: see ingress/ratelimit.py
    plan: TrackingPlan | None
    reject_violations: bool

    @classmethod
    def for_config(cls, config: Config) -> dict[str, SourceRules]:
        plan = TrackingPlan.compile(config.tracking_plan_files) if config.tracking_plans else None
        rules = {}
        for source in config.sources:
            limit = source.rate_limit
            rules[source.name] = cls(
                allowed_types=frozenset(source.record_types) if source.record_types else None,
                bucket=TokenBucket(limit.events_per_s, limit.burst) if limit else None,
                plan=plan if source.tracking_plan != "off" else None,
                reject_violations=source.tracking_plan == "reject",
            )
        return rules


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
        dropped = GaugeMetricFamily(
            "sluice_sink_events_dropped",
            "Events a non-critical sink dead-lettered because it was behind while the log was full",
            labels=["type", "sink"],
        )
        refused_values = GaugeMetricFamily(
            "sluice_table_values_rejected",
            "Typed tables: values kept in _rejected because they did not fit their column",
            labels=["type", "sink"],
        )
        lag = GaugeMetricFamily(
            "sluice_sink_lag_seconds",
            "Age of the oldest event a sink has not committed",
            labels=["type", "sink"],
        )
        restarts = GaugeMetricFamily(
            "sluice_producer_loop_restarts",
            "Tail and dispatch loops of a producer restarted after an unexpected error",
            labels=["type"],
        )
        for s in self.latest:
            kind = s["record_type"]
            stored.add_metric([kind], s["accepted"])
            in_log.add_metric([kind], s["in_log"])
            restarts.add_metric([kind], s["loop_restarts"])
            for sink in s["sinks"].values():
                committed.add_metric([kind, sink["uri"]], sink["committed"])
                retries.add_metric([kind, sink["uri"]], sink["retries"])
                dead.add_metric([kind, sink["uri"]], sink["deadlettered"])
                dropped.add_metric([kind, sink["uri"]], sink.get("dropped", 0))
                refused_values.add_metric([kind, sink["uri"]], sink.get("values_rejected", 0))
                lag.add_metric([kind, sink["uri"]], sink["lag_s"])
        yield from (
            stored,
            in_log,
            committed,
            retries,
            dead,
            dropped,
            refused_values,
            lag,
            restarts,
        )


class Metrics:
    """The replica's Prometheus registry: the node's replica counters and the producers'
    published state."""

    def __init__(self, counters: ReplicaCounters) -> None:
        self.registry = CollectorRegistry()
        self.counters = counters
        self.store = _StoreCollector()
        self.registry.register(counters)
        self.registry.register(self.store)


class IngressState:
    """What every endpoint of one replica shares."""

    def __init__(
        self,
        config: Config,
        store: EventStore,
        counters: ReplicaCounters,
        log_root: Path | None = None,
        tracer: debugger.Tracer | None = None,
    ) -> None:
        self.config = config
        self.log_root = log_root
        self.tracer = tracer
        self.dedup = (
            SeenIds(log_root / DEDUP_DIR, config.dedup_window, config.dedup_capacity)
            if log_root is not None and config.dedup_window > 0
            else None
        )
        self.store = store
        self.counters = counters
        self.keys = WriteKeys(config.write_keys)
        self.rules = SourceRules.for_config(config)
        self.enrichment = Enrichment.from_config(config, counters)
        self.cors = CorsPolicy(config.sources)
        self.metrics = Metrics(counters)
        self.openapi = orjson.dumps(openapi_document())


def _state(request: Request) -> IngressState:
    state: IngressState = request.app.state.ingress
    return state


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request's JSON body, decompressed, within `limit` bytes and `timeout_s`."""
    header_bytes = sum(len(k) + len(v) for k, v in request.scope["headers"])
    if header_bytes > events.MAX_HEADER_BYTES:
        raise IngressError(
            431,
            "headers_too_large",
            f"request headers take {header_bytes} bytes; the limit is {events.MAX_HEADER_BYTES}",
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
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise IngressError(413, "payload_too_large", f"body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise IngressError(
            408, "request_timeout", f"the request body took longer than {timeout_s:g}s to arrive"
        ) from None
    except ClientDisconnect:
        raise IngressError(
            400, "client_disconnected", "the client went away before sending its body"
        ) from None
    body = b"".join(chunks)
    return events.decompress(body, request.headers.get("content-encoding", ""), limit)


def client_ip(request: Request | WebSocket) -> str | None:
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else None


def _events_of(data: dict[str, Any], endpoint: str) -> tuple[list[Any], str | None]:
    """The events of a request and their record type (None: each event's own `type`)."""
    if endpoint != "batch":
        return [data], endpoint
    items = data.get("batch")
    if not isinstance(items, list):
        raise IngressError(400, "invalid_batch", "'batch' must be a list of events")
    if len(items) > events.MAX_BATCH_EVENTS:
        raise IngressError(
            400,
            "too_many_events",
            f"batch holds {len(items)} events; the limit is {events.MAX_BATCH_EVENTS}",
        )
    return items, None


def _check_rate(rule: SourceRules, count: int) -> None:
    bucket = rule.bucket
    wait_s = bucket.take(count) if bucket else 0.0
    if bucket and wait_s:
        raise IngressError(
            429,
            "rate_limited",
            f"this source may send {bucket.rate:g} events/s (bursts of {bucket.burst:g}); "
            "retry after the Retry-After seconds",
            {"Retry-After": retry_after(wait_s)},
        )


def check_origin(state: IngressState, origin: str | None, source: str) -> None:
    if origin and not state.cors.allows(origin, source):
        raise IngressError(
            403,
            "origin_not_allowed",
            f"source {source} does not accept events from {origin[:200]}; "
            "add it to the source's allowed_origins",
        )


async def _store(state: IngressState, parsed: events.Parsed, source: str, bulk: bool) -> None:
    letters = events.deadletters(parsed, source)
    by_log = parsed.by_type
    if letters and state.config.deadletter_sink is not None:
        by_log = {**by_log, DEADLETTER: letters}
    if by_log:
        await state.store.append_many(by_log, bulk)


def _answer(state: IngressState, parsed: events.Parsed, single: bool) -> tuple[int, dict[str, Any]]:
    """Status and body once the accepted events are stored."""
    if single and parsed.rejected:
        described = _described(parsed.rejected[0])
        del described["index"]
        return 400, {"success": False, **described}
    if parsed.rejected and not parsed.accepted:
        return 400, {
            "success": False,
            "code": "invalid_events",
            "message": "no event in the batch is valid",
            "rejected": [_described(r) for r in parsed.rejected],
        }
    for kind, payloads in parsed.by_type.items():
        state.counters.add("sluice_events_accepted", kind, amount=len(payloads))
    answer: dict[str, Any] = {"success": True}
    if parsed.rejected:
        answer["rejected"] = [_described(r) for r in parsed.rejected]
    return 200, answer


async def _ingest(state: IngressState, request: Request, endpoint: str) -> Response:
    limit = events.MAX_BATCH_BYTES if endpoint == "batch" else events.MAX_EVENT_BYTES
    body = await read_body(request, limit, state.config.body_timeout_s)
    found = typed.decode(body, endpoint)
    if found is None:
        data = events.parse_json(body)
        source = state.keys.source_of(request.headers.get("authorization"), data)
        check_origin(state, request.headers.get("origin"), source)
        status, answer = await accept_and_store(state, data, endpoint, source, client_ip(request))
        return json_response(status, answer)
    source = state.keys.source_of(request.headers.get("authorization"), found.key_body)
    check_origin(state, request.headers.get("origin"), source)
    rule = state.rules[source]
    record_type = None if endpoint == "batch" else endpoint
    _check_rate(rule, len(found.batch))
    times = events.Times(datetime.now(UTC), found.sent_at)
    prepared = None
    if typed.takes(state.enrichment, rule.plan is not None):
        prepared = typed.prepare(
            found, body, times, record_type=record_type, allowed_types=rule.allowed_types
        )
    if prepared is None:  # the request as `events.accept` takes it, already counted
        data = events.parse_json(body)
        status, answer = await accept_and_store(
            state, data, endpoint, source, client_ip(request), rated=True
        )
        return json_response(status, answer)
    parsed = typed.accept(
        prepared, times, source=source, ip=client_ip(request), enrichment=state.enrichment
    )
    status, answer = await _stored(state, parsed, source, single=record_type is not None)
    return json_response(status, answer)


async def accept_and_store(
    state: IngressState,
    data: dict[str, Any],
    endpoint: str,
    source: str,
    ip: str | None,
    *,
    rated: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Validate, enrich and store the events of one request (`endpoint`: a record type or
    "batch") from `source`: the status and body to answer once they are stored. `rated`:
    the request's events were counted against the source's rate limit already."""
    rule = state.rules[source]
    items, record_type = _events_of(data, endpoint)
    if not rated:
        _check_rate(rule, len(items))
    parsed = events.accept(
        items,
        record_type=record_type,
        source=source,
        ip=ip,
        defaults=data,
        allowed_types=rule.allowed_types,
        plan=rule.plan,
        reject_violations=rule.reject_violations,
        enrichment=state.enrichment,
    )
    return await _stored(state, parsed, source, single=record_type is not None)


async def _stored(
    state: IngressState, parsed: events.Parsed, source: str, *, single: bool
) -> tuple[int, dict[str, Any]]:
    """Store what `parsed` accepted (its repeats taken out); the status and body to answer."""
    for r in parsed.rejected:
        state.counters.add("sluice_events_rejected", r.code)
    fresh = _drop_duplicates(state, state.dedup, parsed, source) if state.dedup else None
    await _store(state, parsed, source, bulk=not single)
    if state.dedup is not None and fresh is not None:
        state.dedup.add(*fresh)
    return _answer(state, parsed, single=single)


def _drop_duplicates(
    state: IngressState, dedup: SeenIds, parsed: events.Parsed, source: str
) -> tuple[Lookup, list[bool] | None] | None:
    """Take out of `parsed` the events whose messageId this source sent within the window
    (or earlier in this request): they are answered 200 and not stored again. Returns
    the request's lookup and which of its ids to remember once they are stored (None:
    all), or None when there is nothing to remember."""
    ids = [message_id for kind_ids in parsed.ids.values() for message_id in kind_ids]
    if not ids:
        return None
    found = dedup.lookup(source, ids)  # once for all record types: numpy's cost is per call
    seen = found.seen
    if len(ids) > 1 and len(set(ids)) < len(ids):  # an id twice in the request (rare)
        first: set[str] = set()
        for i, message_id in enumerate(ids):
            seen[i] = seen[i] or message_id in first
            first.add(message_id)
    if not any(seen):
        return found, None
    at = 0
    for kind, kind_ids in parsed.ids.items():
        dups = seen[at : at + len(kind_ids)]
        at += len(kind_ids)
        if any(dups):
            payloads = parsed.by_type[kind]
            parsed.by_type[kind] = [p for p, dup in zip(payloads, dups, strict=True) if not dup]
            state.counters.add("sluice_duplicates", kind, amount=sum(dups))
    for kind in [k for k, payloads in parsed.by_type.items() if not payloads]:
        del parsed.by_type[kind]
    return found, [not dup for dup in seen]


def _with_cors(state: IngressState, request: Request, response: Response) -> Response:
    origin = request.headers.get("origin")
    if origin and response.status_code != 403 and state.cors.allows(origin):
        response.headers.update(state.cors.headers(origin))
    return response


async def ingest(request: Request) -> Response:
    """POST /v1/{track,identify,...,batch,import} and analytics.js's /v1/{t,i,p,s,g,a,b}."""
    return await _answer_ingest(_state(request), request, request.url.path[4:])


async def _answer_ingest(state: IngressState, request: Request, name: str) -> Response:
    endpoint = ENDPOINTS[name]
    try:
        response = await _ingest(state, request, endpoint)
    except IngressError as exc:
        response = error_response(exc)
    state.counters.add("sluice_http_requests", endpoint, str(response.status_code))
    return _with_cors(state, request, response)


async def preflight(request: Request) -> Response:
    """OPTIONS on the ingestion paths: the CORS preflight a browser sends first."""
    state = _state(request)
    origin = request.headers.get("origin")
    if not origin or not state.cors.allows(origin):
        return json_response(
            403,
            {
                "success": False,
                "code": "origin_not_allowed",
                "message": f"no source accepts events from {str(origin)[:200]}",
            },
        )
    requested = request.headers.get("access-control-request-headers", "")
    return Response(status_code=204, headers=state.cors.preflight_headers(origin, requested))


async def sdk_metrics(request: Request) -> Response:
    """POST /v1/m: analytics.js's own delivery metrics. Counted; not an event."""
    state = _state(request)
    try:
        await read_body(request, events.MAX_EVENT_BYTES, state.config.body_timeout_s)
    except IngressError as exc:
        return _with_cors(state, request, error_response(exc))
    state.counters.add("sluice_sdk_metrics_reports")
    return _with_cors(state, request, json_response(200, {"success": True}))


async def project_settings(request: Request) -> Response:
    """GET /v1/projects/{writeKey}/settings: what analytics.js loads from its CDN."""
    state = _state(request)
    key = request.path_params["write_key"]
    source = state.keys.known(key)
    if source is None:
        response = json_response(
            404,
            {"success": False, "code": "unknown_write_key", "message": "no such write key here"},
        )
        return _with_cors(state, request, response)
    origin = request.headers.get("origin")
    if origin and not state.cors.allows(origin, source):
        return json_response(
            403,
            {
                "success": False,
                "code": "origin_not_allowed",
                "message": f"source {source} does not accept {origin[:200]}",
            },
        )
    scheme = request.headers.get("x-forwarded-proto", request.url.scheme)
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    protocol, base = cdn.public_base(state.config.public_url, scheme, host)
    body, etag = cdn.encoded(key, protocol, base)
    headers = {"ETag": etag, "Cache-Control": cdn.CACHE_CONTROL, "Vary": "Origin, Host"}
    if request.headers.get("if-none-match") == etag:
        response = Response(status_code=304, headers=headers)
    else:
        response = Response(body, 200, headers, media_type="application/json")
    return _with_cors(state, request, response)


async def health(request: Request) -> Response:
    """GET /health: 200 while every log can take events."""
    try:
        stats = await asyncio.wait_for(_state(request).store.stats(), 5.0)
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
    """GET /metrics: Prometheus text."""
    state = _state(request)
    try:
        state.metrics.store.latest = await asyncio.wait_for(state.store.stats(), 5.0)
    except Exception:
        state.metrics.store.latest = []
    return Response(generate_latest(state.metrics.registry), media_type="text/plain; version=0.0.4")


def _admin(request: Request) -> IngressState:
    """The replica's state once the request shows the admin token and the debugger is on;
    else 401 (asked first, so nothing tells a caller without the token whether it is on)
    or 404."""
    state = _state(request)
    if not debugger.authorized(request, state.config.admin_token):
        raise HTTPException(401)
    if not state.config.debugger or state.log_root is None:
        raise HTTPException(404)
    return state


async def debugger_page(request: Request) -> Response:
    """GET /debugger: the live debugger (admin token)."""
    return debugger.page(request, _admin(request).config.admin_token)


async def debugger_script(request: Request) -> Response:
    """GET /debugger/app.js: the page's script (nothing secret in it)."""
    state = _state(request)
    if not state.config.debugger or state.log_root is None:
        raise HTTPException(404)
    return debugger.script()


async def debugger_stream(request: Request) -> Response:
    """GET /debugger/stream: server-sent events, a sample of what arrives (admin token)."""
    state = _admin(request)
    assert state.log_root is not None
    return debugger.stream_response(request, state.log_root)


async def debugger_stats(request: Request) -> Response:
    """GET /debugger/stats: the figures of /metrics as JSON, for the page's panel."""
    state = _admin(request)
    try:
        logs = await asyncio.wait_for(state.store.stats(), 5.0)
    except Exception:
        logs = []
    counters = {name: dict(values) for name, values in state.counters.node_totals().items()}
    return json_response(200, {"at": time.time(), "logs": logs, "counters": counters})


async def trace(request: Request) -> Response:
    """GET /v1/trace/{messageId}: where one recent event is (admin token)."""
    state = _admin(request)
    assert state.log_root is not None
    message_id = request.path_params["message_id"]
    found = await debugger.trace(message_id, state.log_root, state.tracer)
    return json_response(200 if found["found"] else 404, found)


async def openapi_json(request: Request) -> Response:
    return Response(_state(request).openapi, media_type="application/json")


async def http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 (with `Allow`) as JSON errors."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 401:
        return debugger.unauthorized()
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    body = {
        "success": False,
        "code": code,
        "message": f"{request.method} {request.url.path[:200]}: {code.replace('_', ' ')}",
    }
    return json_response(exc.status_code, body, dict(exc.headers) if exc.headers else None)


async def server_error(request: Request, exc: Exception) -> Response:
    """A fault of Sluice's own: still JSON, and the client may retry. Never expected."""
    body = {"success": False, "code": "internal_error", "message": "internal error; retry"}
    return json_response(500, body, {"Retry-After": "1"})


class IngressApp:
    """The ASGI app: event POSTs go straight to `ingest`, the rest through Starlette.

    Starlette's router, middleware and exception wrappers took more of a replica's time
    than Sluice's own work on a single-event request (py-spy); the answers are the same.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state: IngressState = app.state.ingress

    @property
    def routes(self) -> list[Any]:
        return self.app.routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        hot = path.startswith("/v1/") and path[4:] in ENDPOINTS
        if not (hot and scope["type"] == "http" and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _answer_ingest(self.state, request, path[4:])
        except Exception as exc:
            logger.exception("error on %s", path)
            response = await server_error(request, exc)
        await response(scope, receive, send)


def build_app(
    config: Config,
    store: EventStore,
    counters: ReplicaCounters | None = None,
    *,
    log_root: Path | None = None,
    tracer: debugger.Tracer | None = None,
) -> IngressApp:
    """The ingress ASGI app for `config`, storing through `store`, counting in `counters`
    (shared with the node's other replicas; default: this app's alone). The debugger
    watches the segment files under `log_root` and traces through `tracer`."""
    browser_paths = [f"/v1/{name}" for name in ENDPOINTS] + ["/v1/m", SETTINGS_PATH]
    routes: list[BaseRoute] = [Route(f"/v1/{name}", ingest, methods=["POST"]) for name in ENDPOINTS]
    routes += [Route(path, preflight, methods=["OPTIONS"]) for path in browser_paths]
    # The WebSocket endpoint builds on this module's request handling, hence imported here.
    from ingress import websocket

    routes += [
        WebSocketRoute("/v1/ws", websocket.endpoint),
        Route("/v1/m", sdk_metrics, methods=["POST"]),
        Route(SETTINGS_PATH, project_settings, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/debugger", debugger_page, methods=["GET"]),
        Route("/debugger/app.js", debugger_script, methods=["GET"]),
        Route("/debugger/stream", debugger_stream, methods=["GET"]),
        Route("/debugger/stats", debugger_stats, methods=["GET"]),
        Route("/v1/trace/{message_id}", trace, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error}
    )
    app.state.ingress = IngressState(config, store, counters or ReplicaCounters(), log_root, tracer)
    return IngressApp(app)
