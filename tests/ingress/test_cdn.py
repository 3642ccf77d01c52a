"""The settings analytics.js loads from its CDN, served by Sluice. In process, no Ray."""

from __future__ import annotations

from collections.abc import Callable

from tests.ingress.harness import Ingress, error

KEY = "web-key"


def test_settings_point_analytics_js_back_at_the_host_it_came_to(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(write_keys=[f"{KEY}:web"])
    answer = ingress.client.get(
        f"/v1/projects/{KEY}/settings",
        headers={"Host": "collect.local:8000", "Origin": "https://site.example"},
    )
    assert answer.status_code == 200
    segment = answer.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == KEY
    assert segment["apiHost"] == "collect.local:8000/v1"
    assert segment["protocol"] == "http"
    assert answer.headers["access-control-allow-origin"] == "https://site.example"
    assert "max-age" in answer.headers["cache-control"]
    again = ingress.client.get(
        f"/v1/projects/{KEY}/settings",
        headers={"Host": "collect.local:8000", "If-None-Match": answer.headers["etag"]},
    )
    assert again.status_code == 304


def test_public_url_wins_over_the_request_host(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(
        "public_url: https://events.example.com/collect\n", write_keys=[f"{KEY}:web"]
    )
    segment = ingress.client.get(f"/v1/projects/{KEY}/settings").json()["integrations"][
        "Segment.io"
    ]
    assert (segment["protocol"], segment["apiHost"]) == ("https", "events.example.com/collect/v1")


def test_unknown_write_key_is_404_json(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(write_keys=[f"{KEY}:web"])
    answer = ingress.client.get("/v1/projects/not-a-key/settings")
    assert error(answer, 404)["code"] == "unknown_write_key"
