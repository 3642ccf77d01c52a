"""Tracking plans: JSON Schemas per event, and each source's mode (off, warn, reject)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.config import ConfigError
from ingress.plans import TrackingPlan
from tests.ingress.harness import Ingress, error

ORDER = {
    "type": "object",
    "required": ["revenue"],
    "properties": {"revenue": {"type": "number", "minimum": 0}, "coupon": {"type": "string"}},
}
PLANS = {
    "track/Order Completed.json": ORDER,
    "identify.json": {"properties": {"email": {"type": "string", "format": "email"}}},
    "page/Home.json": {"additionalProperties": False},
}
MODES = """
tracking_plans: plans
sources:
  - {name: lax, write_keys: [off-key], tracking_plan: "off"}
  - {name: watched, write_keys: [warn-key], tracking_plan: warn}
  - {name: strict, write_keys: [reject-key], tracking_plan: reject}
"""
GOOD = {"userId": "u", "event": "Order Completed", "properties": {"revenue": 10}}
BAD = {"userId": "u", "event": "Order Completed", "properties": {"revenue": "ten"}}


def write(root: Path, files: dict[str, Any]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_violations_name_the_path_and_unplanned_events_pass(tmp_path: Path) -> None:
    plan = TrackingPlan.load(
        write(tmp_path, {k: orjson.dumps(v).decode() for k, v in PLANS.items()})
    )
    assert plan.violations("track", BAD) == [
        {"path": "properties.revenue", "message": "'ten' is not of type 'number'"}
    ]
    assert plan.violations("track", {"event": "Order Completed"}) == [
        {"path": "properties", "message": "'revenue' is a required property"}
    ]
    assert plan.violations("track", GOOD) == []
    assert plan.violations("track", {"event": "Unplanned", "properties": {"x": 1}}) == []
    assert plan.violations("identify", {"traits": {"email": "not an email"}}) == []  # formats off
    assert plan.violations("page", {"name": "Home", "properties": {"x": 1}})[0]["path"] == (
        "properties"
    )
    assert plan.violations("alias", {"previousId": "p"}) == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"track/A.json": "{"}, "cannot read it as JSON"),
        ({"track/A.json": '{"type": 5}'}, "not a valid JSON Schema"),
        ({"track/A.json": "[]"}, "must be a JSON object"),
        ({"alias.json": "{}"}, "not a known place"),
        ({"identify/A.json": "{}"}, "not a known place"),
        ({"track/A.json": '{"$ref": "#/$defs/nope"}'}, "does not resolve"),
        ({"track/A.json": '{"pattern": "\\\\Z"}'}, "not a usable JSON Schema"),
        ({"track/A.json": '{"$ref": "https://example.com/s.json"}'}, "does not resolve"),
    ],
)
def test_a_broken_plan_stops_startup_with_a_message(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TrackingPlan.load(write(tmp_path, files))


def test_off_accepts_without_checking(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(MODES, PLANS)
    assert ingress.post("/v1/track", BAD, "off-key").json() == {"success": True}
    assert "sluice" not in ingress.store.events()[0]["context"]


def test_warn_accepts_and_marks_the_event(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(MODES, PLANS)
    assert ingress.post("/v1/track", BAD, "warn-key").json() == {"success": True}
    assert ingress.post("/v1/track", GOOD, "warn-key").json() == {"success": True}
    marked, clean = ingress.store.events()
    assert marked["context"]["sluice"] == {
        "violations": [{"path": "properties.revenue", "message": "'ten' is not of type 'number'"}]
    }
    assert "sluice" not in clean["context"]
    assert ingress.store.deadletters() == []


def test_reject_refuses_a_single_event_with_the_schema_errors(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(MODES, PLANS)
    body = error(ingress.post("/v1/track", BAD, "reject-key"), 400)
    assert body["code"] == "tracking_plan_violation"
    assert "properties.revenue: 'ten' is not of type 'number'" in body["message"]
    assert body["violations"] == [
        {"path": "properties.revenue", "message": "'ten' is not of type 'number'"}
    ]
    assert ingress.store.events() == []
    (letter,) = ingress.store.deadletters()
    assert letter["source"] == "strict" and letter["payload"] == BAD
    assert "tracking_plan_violation" in letter["reason"]


def test_reject_in_a_batch_refuses_only_the_breaking_events(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(MODES, PLANS)
    batch = [
        {**BAD, "type": "track", "messageId": "bad"},
        {**GOOD, "type": "track", "messageId": "good"},
        {"type": "identify", "userId": "u", "traits": {"email": 5}, "messageId": "bad-traits"},
        {"type": "track", "userId": "u", "event": "Unplanned", "messageId": "unplanned"},
    ]
    answer = ingress.post("/v1/batch", {"batch": batch}, "reject-key")
    assert answer.status_code == 200
    rejected = answer.json()["rejected"]
    assert [(r["index"], r["code"]) for r in rejected] == [
        (0, "tracking_plan_violation"),
        (2, "tracking_plan_violation"),
    ]
    assert rejected[1]["violations"] == [
        {"path": "traits.email", "message": "5 is not of type 'string'"}
    ]
    assert {e["messageId"] for e in ingress.store.events()} == {"good", "unplanned"}
    assert {d["payload"]["messageId"] for d in ingress.store.deadletters()} == {"bad", "bad-traits"}


def test_odd_values_under_a_plan_are_checked_not_crashed(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(MODES, PLANS)
    deep: list[Any] = []
    for _ in range(55):
        deep = [deep]
    fits = {18446744073709551615: True, -(2**63): False, 1e308: True, "\u0000": False}
    for value, ok in [*fits.items(), (deep, False), ({"nested": True}, False)]:
        event = {**GOOD, "properties": {"revenue": value}}
        assert ingress.post("/v1/track", event, "warn-key").status_code == 200
        assert ("sluice" in ingress.store.events()[-1]["context"]) is not ok
        assert ingress.post("/v1/track", event, "reject-key").status_code == (200 if ok else 400)
