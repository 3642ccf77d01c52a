"""Browsers on other origins: preflights, CORS headers, analytics.js's short paths and
metrics, and a source's `allowed_origins`. In process, with no Ray."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from tests.ingress.harness import Ingress, error

KEY = "web-key"
SHOP_KEY = "shop-key"
SITE = "https://www.example.org"
SOURCES = f"""
sources:
  - name: web
    write_keys: [{KEY}]
  - name: shop
    write_keys: [{SHOP_KEY}]
    allowed_origins: [https://shop.example.com, "https://*.shop.example.com"]
"""


@pytest.fixture
def ingress(make_ingress: Callable[..., Ingress]) -> Ingress:
    return make_ingress(SOURCES)


def beacon(ingress: Ingress, path: str, body: dict[str, object], origin: str) -> object:
    """POST as analytics.js and sendBeacon do: text/plain, write key in the body."""
    return ingress.client.post(
        path,
        content=orjson.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": origin},
    )


def test_preflight_allows_any_origin_and_is_cached(ingress: Ingress) -> None:
    answer = ingress.client.options(
        "/v1/track",
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == SITE
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    assert int(answer.headers["access-control-max-age"]) >= 600


@pytest.mark.parametrize(
    ("path", "kind", "extra"),
    [
        ("/v1/t", "track", {"event": "Clicked"}),
        ("/v1/i", "identify", {"traits": {"plan": "pro"}}),
        ("/v1/p", "page", {"name": "Home"}),
        ("/v1/s", "screen", {"name": "Home"}),
        ("/v1/g", "group", {"groupId": "acme"}),
        ("/v1/a", "alias", {"previousId": "anon-1"}),
    ],
)
def test_short_paths_store_their_record_type_with_cors_headers(
    ingress: Ingress, path: str, kind: str, extra: dict[str, object]
) -> None:
    body = {"writeKey": KEY, "userId": "u-1", "messageId": f"m-{kind}", **extra}
    answer = beacon(ingress, path, body, SITE)
    assert answer.status_code == 200, answer.text  # type: ignore[attr-defined]
    assert answer.headers["access-control-allow-origin"] == SITE  # type: ignore[attr-defined]
    stored = ingress.store.events(kind)
    assert [e["messageId"] for e in stored] == [f"m-{kind}"]
    assert "writeKey" not in stored[0]


def test_short_batch_path(ingress: Ingress) -> None:
    batch = [
        {"type": "track", "event": "A", "userId": "u"},
        {"type": "page", "name": "B", "userId": "u"},
    ]
    answer = beacon(ingress, "/v1/b", {"writeKey": KEY, "batch": batch}, SITE)
    assert answer.status_code == 200  # type: ignore[attr-defined]
    assert len(ingress.store.events("track")) == 1 and len(ingress.store.events("page")) == 1


def test_sdk_metrics_are_counted_not_stored(ingress: Ingress) -> None:
    series = {"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1}]}
    answer = beacon(ingress, "/v1/m", series, SITE)
    assert answer.json() == {"success": True}  # type: ignore[attr-defined]
    assert ingress.store.events() == []
    assert "sluice_sdk_metrics_reports_total 1.0" in ingress.client.get("/metrics").text


def test_errors_carry_cors_headers_so_the_page_can_read_them(ingress: Ingress) -> None:
    answer = beacon(ingress, "/v1/t", {"writeKey": "nope", "userId": "u", "event": "e"}, SITE)
    assert error(answer, 401)["code"] == "invalid_write_key"  # type: ignore[arg-type]
    assert answer.headers["access-control-allow-origin"] == SITE  # type: ignore[attr-defined]


@pytest.mark.parametrize("origin", ["https://shop.example.com", "https://eu.shop.example.com"])
def test_allowed_origins_of_a_source_accept_their_own(ingress: Ingress, origin: str) -> None:
    body = {"writeKey": SHOP_KEY, "userId": "u", "event": "e"}
    answer = beacon(ingress, "/v1/t", body, origin)
    assert answer.status_code == 200  # type: ignore[attr-defined]
    assert answer.headers["access-control-allow-origin"] == origin  # type: ignore[attr-defined]


@pytest.mark.parametrize("origin", [SITE, "https://shop.example.com.evil.io", "http://x.io"])
def test_allowed_origins_of_a_source_refuse_others(ingress: Ingress, origin: str) -> None:
    body = {"writeKey": SHOP_KEY, "userId": "u", "event": "e"}
    answer = beacon(ingress, "/v1/t", body, origin)
    assert error(answer, 403)["code"] == "origin_not_allowed"  # type: ignore[arg-type]
    assert "access-control-allow-origin" not in answer.headers  # type: ignore[attr-defined]
    assert ingress.store.events() == []


def test_preflight_refused_when_no_source_takes_the_origin(
    make_ingress: Callable[..., Ingress],
) -> None:
    closed = make_ingress(
        f"sources:\n  - name: shop\n    write_keys: [{SHOP_KEY}]\n"
        "    allowed_origins: [https://shop.example.com]\n"
    )
    headers = {"Origin": SITE, "Access-Control-Request-Method": "POST"}
    answer = closed.client.options("/v1/t", headers=headers)
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers


def test_admin_endpoints_get_no_cors_headers(ingress: Ingress) -> None:
    for path in ("/metrics", "/health"):
        answer = ingress.client.get(path, headers={"Origin": SITE})
        assert "access-control-allow-origin" not in answer.headers, path


def test_an_origin_no_browser_sends_is_refused_and_never_echoed(ingress: Ingress) -> None:
    # Found by test_hostile: an Origin of byte 0x80 was echoed in a header of the answer.
    body = orjson.dumps({"writeKey": KEY, "userId": "u", "event": "e"})
    for origin in (b"\x80", b"https://a.io\x7f"):
        answer = ingress.client.post(
            "/v1/t", content=body, headers={"Content-Type": "text/plain", "Origin": origin}
        )
        assert error(answer, 403)["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in answer.headers
    preflight = ingress.client.options(
        "/v1/t",
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": b"x-\xff",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-headers"].startswith("Authorization")
    assert ingress.store.events() == []
