"""The HTTP edge against hostile input: each case gets a clear 4xx JSON error, stores
nothing, and leaves the app serving. In process, with no Ray."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from core import config
from ingress import events
from tests.ingress.harness import Ingress, error

KEY = "web-key"
EVENT = {"userId": "u-1", "event": "Order Completed", "properties": {"revenue": 42}}


@pytest.fixture
def ingress(make_ingress: Callable[..., Ingress]) -> Ingress:
    return make_ingress(write_keys=[f"{KEY}:web"])


def still_serving(ingress: Ingress) -> None:
    answer = ingress.post("/v1/track", {**EVENT, "messageId": "after"}, KEY)
    assert answer.json() == {"success": True}
    assert "after" in {e["messageId"] for e in ingress.store.events()}


def nested(depth: int) -> bytes:
    return (
        b'{"userId": "u", "event": "e", "properties": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"userId": "u", ', "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'"just a string"', "invalid_json"),
        (b"42", "invalid_json"),
        (b'{"userId": "\xff\xfe", "event": "e"}', "invalid_json"),  # not UTF-8
        (b'{"userId": "\\ud800", "event": "e"}', "invalid_json"),  # a lone surrogate
        (b'{"userId": "u", "event": "e", "properties": {"x": 1e400}}', "invalid_json"),
        (b'{"userId": "u", "event": "e", "properties": {"x": NaN}}', "invalid_json"),
        (nested(63), "too_deep"),  # 65 levels with the event and its properties
        (nested(300), "too_deep"),  # past what orjson could write back
        (nested(2000), "invalid_json"),  # past what orjson reads at all
        (b'{"userId": 9007199254740993, "event": "e"}', "invalid_field"),  # past 2**53
        (b'{"userId": 1e30, "event": "e"}', "invalid_field"),
        (b'{"userId": true, "event": "e"}', "invalid_field"),
    ],
)
def test_bad_bodies_get_400_and_store_nothing(ingress: Ingress, body: bytes, code: str) -> None:
    assert error(ingress.post("/v1/track", body, KEY), 400)["code"] == code
    assert ingress.store.events() == []
    still_serving(ingress)


def test_nesting_up_to_the_cap_and_huge_numbers_inside_properties_are_kept(
    ingress: Ingress,
) -> None:
    assert ingress.post("/v1/track", nested(62), KEY).status_code == 200  # 64 levels
    body = b'{"userId": 42, "event": "e", "properties": {"big": 18446744073709551616, "f": 1e300}}'
    assert ingress.post("/v1/track", body, KEY).status_code == 200
    stored = ingress.store.events()[-1]
    assert stored["userId"] == "42"
    assert stored["properties"] == {"big": 1.8446744073709552e19, "f": 1e300}


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ({"Content-Type": ""}, 415, "unsupported_media_type"),
        ({"Content-Encoding": "br"}, 415, "unsupported_encoding"),
        ({"Content-Encoding": "gzip"}, 400, "invalid_encoding"),  # says gzip, is not
        ({"X-Padding": "p" * (events.MAX_HEADER_BYTES + 1)}, 431, "headers_too_large"),
    ],
)
def test_bad_headers(ingress: Ingress, headers: dict[str, str], status: int, code: str) -> None:
    assert error(ingress.post("/v1/track", EVENT, KEY, headers), status)["code"] == code
    still_serving(ingress)


def test_missing_content_type_is_415(ingress: Ingress) -> None:
    answer = ingress.client.post("/v1/track", content=orjson.dumps(EVENT), auth=(KEY, ""))
    assert error(answer, 415)["code"] == "unsupported_media_type"


def test_oversize_bodies_and_gzip_bombs_are_413(ingress: Ingress) -> None:
    big = {**EVENT, "properties": {"x": "y" * events.MAX_EVENT_BYTES}}
    assert error(ingress.post("/v1/track", big, KEY), 413)["code"] == "payload_too_large"
    batch = {"batch": [{**EVENT, "type": "track", "properties": {"x": "y" * 30_000}}] * 20}
    assert error(ingress.post("/v1/batch", batch, KEY), 413)["code"] == "payload_too_large"
    bomb = gzip.compress(b'{"batch": [' + b" " * 20_000_000 + b"]}")
    answer = ingress.post("/v1/batch", bomb, KEY, {"Content-Encoding": "gzip"})
    assert error(answer, 413)["message"].startswith("decompressed body exceeds")
    # A Content-Length in other digits than ASCII (here a superscript two) is no crash.
    start, _ = asyncio.run(
        asgi_post(ingress.app, [orjson.dumps(EVENT)], headers=[(b"content-length", b"\xb2")])
    )
    assert start["status"] == 200
    still_serving(ingress)


def test_an_oversize_event_in_a_batch_is_rejected_alone(ingress: Ingress) -> None:
    big = {**EVENT, "type": "track", "properties": {"x": "y" * 40_000}}
    answer = ingress.post("/v1/batch", {"batch": [big, {**EVENT, "type": "track"}]}, KEY)
    assert answer.status_code == 200
    assert [(r["index"], r["code"]) for r in answer.json()["rejected"]] == [(0, "event_too_large")]
    assert len(ingress.store.events()) == 1 and len(ingress.store.deadletters()) == 1


async def asgi_post(
    app: Any,
    chunks: list[bytes],
    delay_s: float = 0.0,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> list[Any]:
    """POST /v1/track straight through ASGI, the body in `chunks` `delay_s` apart, with
    `headers` no HTTP client would send; returns the messages the app sent."""
    sent: list[Any] = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(delay_s)
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/track",
        "raw_path": b"/v1/track",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", b"Basic d2ViLWtleTo="),  # web-key:
            *headers,
        ],
        "client": ("10.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return sent


def test_a_body_slower_than_the_timeout_gets_408(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress("body_timeout_s: 0.3\n", write_keys=[f"{KEY}:web"])
    body = orjson.dumps(EVENT)
    trickle = [body[i : i + 4] for i in range(0, len(body), 4)]
    start, body_out = asyncio.run(asgi_post(ingress.app, trickle, 0.05))
    assert start["status"] == 408
    assert orjson.loads(body_out["body"])["code"] == "request_timeout"
    assert ingress.store.events() == []
    # The same body at a normal pace is stored.
    start, _ = asyncio.run(asgi_post(ingress.app, [body]))
    assert start["status"] == 200


def test_unknown_paths_and_methods_are_json(ingress: Ingress) -> None:
    assert error(ingress.client.get("/v2/track"), 404)["code"] == "not_found"
    answer = ingress.client.get("/v1/track")
    assert error(answer, 405)["code"] == "method_not_allowed"
    assert answer.headers["allow"] == "POST"


def test_timestamps_at_the_edges_of_time(ingress: Ingress) -> None:
    edge = {
        **EVENT,
        "timestamp": "0001-01-01T00:00:00+01:00",  # an hour before year 1 in UTC
        "sentAt": "9999-12-31t23:59:59z",  # lowercase, as RFC 3339 allows
    }
    assert ingress.post("/v1/track", edge, KEY).status_code == 200
    stored = ingress.store.events()[-1]
    assert stored["originalTimestamp"] == "0001-01-01T00:00:00.000Z"
    assert stored["sentAt"] == "9999-12-31T23:59:59.000Z"
    # The clock correction would leave the calendar: the server's time is used instead.
    assert stored["timestamp"] == stored["receivedAt"]


def test_context_sluice_is_written_by_sluice_only(ingress: Ingress) -> None:
    forged = {**EVENT, "context": {"sluice": {"violations": []}, "app": {"name": "x"}}}
    assert ingress.post("/v1/track", forged, KEY).status_code == 200
    assert ingress.store.events()[-1]["context"] == {"app": {"name": "x"}, "ip": "testclient"}


def test_openapi_json_is_served(ingress: Ingress) -> None:
    document = ingress.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"


def test_an_id_sent_twice_is_stored_once_in_one_request_and_across_requests(
    tmp_path: Path,
) -> None:
    ingress = Ingress(config.load(None, write_keys=[KEY], environ={}), log_root=tmp_path)
    track = {"type": "track", "userId": "u", "event": "e"}
    batch = [{**track, "messageId": "a"}, {**track, "messageId": "b"}, {**track, "messageId": "a"}]
    assert ingress.post("/v1/batch", {"batch": batch}, KEY).json() == {"success": True}
    assert ingress.post("/v1/track", {**track, "messageId": "b"}, KEY).json() == {"success": True}
    assert [e["messageId"] for e in ingress.store.events()] == ["a", "b"]
