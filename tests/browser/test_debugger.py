"""The live debugger in a real Chromium against the real `sluice serve`: events sent with
Segment's Python library appear within 2 s, filter by type, show their JSON, and a trace
finds one delivered to the file sink with its Parquet path. Without the admin token:
401, and nothing about the events.

Needs Debian's `chromium`: `tests/setup.sh` installs it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
import segment.analytics as segment_analytics
from playwright.sync_api import Browser, Page, expect

from tests.service import WRITE_KEY, Service

ADMIN_TOKEN = "debugger-admin-token"


@pytest.fixture(scope="module")
def sluice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("debugger")
    svc = Service(
        workdir,
        sinks=["file://./data?max_age_s=0.2"],
        extra=["--admin-token", ADMIN_TOKEN],
    ).start()
    yield svc
    svc.kill()


@pytest.fixture
def page(browser: Browser, sluice: Service) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.goto(f"{sluice.url}/debugger?token={ADMIN_TOKEN}")
    expect(opened.locator("#status")).to_have_text("live", timeout=10_000)
    yield opened
    context.close()


def send_with_the_sdk(sluice: Service, tag: str) -> dict[str, str]:
    client = segment_analytics.Client(WRITE_KEY, host=sluice.url, sync_mode=True, max_retries=1)
    errors: list[Exception] = []
    client.on_error = lambda error, _items: errors.append(error)
    ids = {
        "track": f"{tag}-track",
        "identify": f"{tag}-identify",
        "page": f"{tag}-page",
    }
    client.track(f"{tag}-user", "Order Completed", {"revenue": 9}, message_id=ids["track"])
    client.identify(f"{tag}-user", {"plan": "pro"}, message_id=ids["identify"])
    client.page(f"{tag}-user", "Docs", "Install", message_id=ids["page"])
    client.flush()
    assert errors == []
    return ids


def test_events_appear_filter_open_and_trace_to_the_parquet_file(
    page: Page, sluice: Service
) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = send_with_the_sdk(sluice, tag)
    rows = page.locator("#events tr")
    for message_id in ids.values():
        expect(rows.filter(has_text=message_id)).to_have_count(1, timeout=2_000)

    page.select_option("select[name=type]", "identify")
    page.click("#filters button[type=submit]")
    # The filtered stream shows what comes after it opened: send once it is live.
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    more = send_with_the_sdk(sluice, tag + "b")
    expect(rows.filter(has_text=more["identify"])).to_have_count(1, timeout=2_000)
    expect(rows.filter(has_text=more["track"])).to_have_count(0)
    assert all("identify" in t for t in rows.locator("td:first-child").all_inner_texts())

    rows.filter(has_text=more["identify"]).click()
    expect(page.locator("#detail")).to_contain_text(f'"messageId": "{more["identify"]}"')
    expect(page.locator("#detail")).to_contain_text('"plan": "pro"')

    page.fill("#trace input[name=id]", ids["track"])
    for _ in range(20):  # delivered within the sink's 0.2 s batch age, give or take
        page.click("#trace button")
        expect(page.locator("#trace-result")).not_to_have_text("looking…")
        if '"status": "delivered"' in page.locator("#trace-result").inner_text():
            break
        page.wait_for_timeout(500)
    result = page.locator("#trace-result")
    expect(result).to_contain_text('"status": "delivered"')
    expect(result).to_contain_text("source=web/type=track/dt=")
    expect(result).to_contain_text(".parquet")


def test_rejected_events_are_shown_with_their_reason(page: Page, sluice: Service) -> None:
    with sluice.client() as client:
        answer = client.post("/v1/batch", json={"batch": [{"type": "track", "event": "No user"}]})
        assert answer.status_code == 400
    rejected = page.locator("#events tr.rejected")
    expect(rejected.first).to_be_visible(timeout=2_000)
    expect(rejected.first).to_have_attribute("title", re.compile("^missing_field: "))


def test_without_the_admin_token_nothing_opens(sluice: Service) -> None:
    send_with_the_sdk(sluice, "secret")
    with httpx.Client(base_url=sluice.url, timeout=10) as client:
        for path in ("/debugger", "/debugger/stream", "/debugger/stats", "/v1/trace/secret-track"):
            for auth in (None, (WRITE_KEY, "")):
                answer = client.get(path, auth=auth)
                assert answer.status_code == 401, path
                assert answer.json()["code"] == "admin_token_required"
                assert "secret" not in answer.text
            wrong = client.get(path, headers={"Authorization": f"Bearer {WRITE_KEY}"})
            assert wrong.status_code == 401
        stats = client.get("/debugger/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert stats.status_code == 200 and stats.json()["logs"]
