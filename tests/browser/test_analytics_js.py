"""Segment's analytics.js (analytics-next from npm) in a real Chromium, on a page served
from another origin than Sluice's: identify, track and page land in the Parquet tree,
with standard and batching delivery, with only `cdnURL` pointed at Sluice, and when
the page closes right after `track`. A source's `allowed_origins` refuses the page.

Needs Debian's `chromium` and `npm install` in tests/browser: `tests/setup.sh` does both.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.aws import rows_when_landed
from tests.service import WRITE_KEY, Service

HERE = Path(__file__).parent
ANALYTICS_JS = HERE / "node_modules/@segment/analytics-next/dist/umd/index.js"
SHOP_KEY = "shop-key"


class _PageHandler(SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        if path.split("?")[0] == "/analytics-next.js":
            return str(ANALYTICS_JS)
        return super().translate_path(path)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The shop's pages, on an origin of their own (another port than Sluice's)."""
    assert ANALYTICS_JS.exists(), "run tests/setup.sh: it installs analytics-next from npm"
    handler = functools.partial(_PageHandler, directory=str(HERE / "page"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def sluice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("browser")
    config = workdir / "sluice.yaml"
    config.write_text(
        "sources:\n"
        "  - name: shop\n"
        f"    write_keys: [{SHOP_KEY}]\n"
        "    allowed_origins: [https://shop.example.com]\n"
    )
    svc = Service(
        workdir,
        sinks=["file://./data?max_age_s=0.2"],
        write_keys=[f"{WRITE_KEY}:web"],
        extra=["--config", str(config)],
    ).start()
    yield svc
    svc.kill()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """The test's browser profile, open until the test ends: a page closed in it is a tab
    closed in a browser that stays open. (A page of its own context would take the
    context's network stack down with it, and the keepalive requests it left behind.)"""
    context = browser.new_context()
    yield context
    context.close()


def open_shop(context: BrowserContext, site: str, sluice: Service, how: str, key: str) -> Page:
    page = open_page(context, site)
    api_host = page.evaluate(
        "([sluice, key, how]) => window.loadAnalytics(sluice, key, how)", [sluice.url, key, how]
    )
    assert api_host == f"127.0.0.1:{sluice.port}/v1"
    return page


def landed(sluice: Service, ids: set[str], timeout_s: float = 30) -> dict[str, dict[str, Any]]:
    return rows_when_landed(f"file://{sluice.workdir}/data", ids, timeout_s)


def open_page(context: BrowserContext, site: str) -> Page:
    page = context.new_page()
    page.goto(f"{site}/index.html")
    return page


def send_three(page: Page, tag: str) -> dict[str, str]:
    """identify, track and page from the page; their messageIds by type."""
    ids = {kind: f"{tag}-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("identify", "track", "page")}
    page.evaluate(
        """async (ids) => {
            await Promise.all([
              analytics.identify("shopper-1", {plan: "pro"}, {messageId: ids.identify}),
              analytics.track("Order Completed", {revenue: 42}, {messageId: ids.track}),
              analytics.page("Shop", "Checkout", {}, {messageId: ids.page}),
            ]);
        }""",
        ids,
    )
    return ids


@pytest.mark.parametrize("how", ["api-host", "cdn", "cdn-batching"])
def test_identify_track_and_page_land_with_their_types(
    context: BrowserContext, site: str, sluice: Service, how: str
) -> None:
    page = open_shop(context, site, sluice, how, WRITE_KEY)
    ids = send_three(page, how)
    if how == "cdn-batching":
        page.evaluate("() => analytics.track('Flush Now', {})")  # batches go by size or time
        page.close(run_before_unload=True)  # pagehide sends what is queued
    rows = landed(sluice, set(ids.values()))
    assert {rows[i]["type"] for i in rows} == set(ids) and len(rows) == 3, rows
    track = rows[ids["track"]]
    assert track["event"] == "Order Completed" and track["source"] == "web"
    assert '"revenue":42' in track["properties"]
    assert rows[ids["identify"]]["user_id"] == "shopper-1"
    assert '"userAgent"' in track["context"]  # the browser's own context came along


def test_a_page_closed_right_after_track_still_delivers_it(
    context: BrowserContext, site: str, sluice: Service
) -> None:
    page = open_shop(context, site, sluice, "cdn-batching", WRITE_KEY)
    message_id = f"unload-{uuid.uuid4().hex[:8]}"
    # track resolves once the event sits in the SDK's batch queue (sent after 60 s or 50
    # events); the page goes away while it waits there, and pagehide must send it. Not
    # awaiting would race the SDK's own plugin chain, which may not have queued it yet.
    page.evaluate("(id) => analytics.track('Left Page', {}, {messageId: id})", message_id)
    page.close(run_before_unload=True)
    assert message_id in landed(sluice, {message_id})


FETCH = """async ([url, key, id]) => {
    try {
      // JSON with Basic auth: the browser sends a preflight first.
      const r = await fetch(url + "/v1/t", {method: "POST",
        headers: {"Content-Type": "application/json", "Authorization": "Basic " + btoa(key + ":")},
        body: JSON.stringify({userId: "u", event: "Fetched", messageId: id})});
      return [r.status, (await r.json()).success];
    } catch (e) { return "blocked"; }
}"""


def test_a_preflighted_cross_origin_post_reads_its_answer(
    context: BrowserContext, site: str, sluice: Service
) -> None:
    page = open_page(context, site)
    message_id = f"fetched-{uuid.uuid4().hex[:8]}"
    assert page.evaluate(FETCH, [sluice.url, WRITE_KEY, message_id]) == [200, True]
    assert message_id in landed(sluice, {message_id})


def test_a_source_with_allowed_origins_refuses_another_origin(
    context: BrowserContext, site: str, sluice: Service
) -> None:
    page = open_page(context, site)
    message_id = f"refused-{uuid.uuid4().hex[:8]}"
    # Refused with a 403 that carries no CORS headers: the page may not even read it.
    assert page.evaluate(FETCH, [sluice.url, SHOP_KEY, message_id]) == "blocked"
    # An event sent after it that does land shows the refused one was never stored.
    marker = {"userId": "u", "event": "Marker", "messageId": f"marker-{uuid.uuid4().hex[:8]}"}
    with sluice.client() as client:
        assert client.post("/v1/track", json=marker).status_code == 200
    rows = landed(sluice, {message_id, marker["messageId"]}, timeout_s=10)
    assert set(rows) == {marker["messageId"]}
