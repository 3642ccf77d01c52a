"""Enrichment through the real `sluice serve`: the default enrichers, a user enricher
from examples/, and one that raises, read back from Parquet with pyarrow."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.aws import rows_when_landed
from tests.ingress.enrich.test_useragent import CHROME_WINDOWS, GOOGLEBOT, SAFARI_IOS
from tests.service import Service

ROOT = Path(__file__).parents[3]


@pytest.fixture(scope="module")
def sluice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("enrich")
    (workdir / "failing.py").write_text("def boom(event):\n    raise RuntimeError('no')\n")
    config = workdir / "sluice.yaml"
    config.write_text(
        'enrich: [useragent, campaign, referrer, bot, geoip, "enrichers:add_team", '
        '"failing:boom"]\n'
    )
    path = os.pathsep.join([str(ROOT / "examples"), str(workdir)])
    svc = Service(
        workdir,
        sinks=["file://./data?max_age_s=0.2"],
        extra=["--config", str(config)],
        env={"PYTHONPATH": path},
    ).start()
    yield svc
    svc.kill()


def rows(sluice: Service, ids: set[str]) -> dict[str, dict[str, Any]]:
    return rows_when_landed(f"file://{sluice.workdir}/data", ids)


def test_enriched_columns_and_context_in_parquet(sluice: Service) -> None:
    url = "https://shop.example.com/checkout/pay?utm_source=newsletter&utm_medium=email&utm_campaign=bf"
    sent = {
        "chrome": (CHROME_WINDOWS, "8.8.8.8", "https://www.google.com/"),
        "iphone": (SAFARI_IOS, "1.0.16.1", "https://t.co/x"),
        "bot": (GOOGLEBOT, "66.249.66.1", ""),
    }
    with sluice.client() as client:
        for name, (user_agent, ip, referrer) in sent.items():
            event = {
                "userId": f"u-{name}",
                "name": "Checkout",
                "messageId": f"enrich-{name}",
                "context": {
                    "userAgent": user_agent,
                    "page": {"url": url, "path": "/checkout/pay", "referrer": referrer},
                },
            }
            answer = client.post("/v1/page", json=event, headers={"X-Forwarded-For": ip})
            assert answer.status_code == 200, answer.text
    found = rows(sluice, {f"enrich-{n}" for n in sent})
    chrome, iphone, bot = (found[f"enrich-{n}"] for n in sent)
    assert (chrome["ua_browser"], chrome["ua_os"], chrome["is_bot"]) == ("Chrome", "Windows", False)
    assert (iphone["ua_browser"], iphone["ua_os"], iphone["ua_device"]) == (
        "Mobile Safari",
        "iOS",
        "iPhone",
    )
    assert bot["is_bot"] is True
    assert (chrome["geo_country"], iphone["geo_country"]) == ("US", "JP")
    assert (chrome["utm_source"], chrome["utm_medium"], chrome["utm_campaign"]) == (
        "newsletter",
        "email",
        "bf",
    )
    assert (chrome["referrer_medium"], chrome["referrer_source"]) == ("search", "Google")
    assert (iphone["referrer_medium"], iphone["referrer_source"]) == ("social", "Twitter")
    context = orjson.loads(chrome["context"])
    assert context["browser"]["name"] == "Chrome" and context["location"]["country"] == "US"
    assert context["team"] == "payments"  # the user enricher from examples/
    # The enricher that raises is counted, over every replica; the events went on.
    expected = 'sluice_enrich_errors_total{enricher="failing:boom"} 3.0'
    deadline = time.monotonic() + 10
    while expected not in (metrics := httpx.get(f"{sluice.url}/metrics", timeout=10).text):
        assert time.monotonic() < deadline, metrics[-2000:]
        time.sleep(0.5)


def test_an_enricher_that_does_not_import_stops_sluice_at_start(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text('enrich: ["no_such_module:fn"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "serve", "--config", str(config), "--in-session"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "enrich: cannot load 'no_such_module:fn'" in result.stderr
