"""Sources: write keys name a source; its events are stamped with it; what it may send;
and one source never sees anything of another."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core import config
from core.config import ConfigError, RateLimit
from tests.ingress.harness import Ingress, error

SOURCES = """
sources:
  - name: web
    write_keys: [web-key-1, web-key-2]
  - name: ios
    write_keys: ios-key
    record_types: [track, screen]
    rate_limit: {events_per_s: 5, burst: 10}
    tracking_plan: "off"
"""


def test_yaml_sources_flags_and_env_make_one_set_of_sources(tmp_path: Path) -> None:
    path = tmp_path / "sluice.yaml"
    path.write_text(SOURCES + "write_keys: ['old-style:web']\n")
    cfg = config.load(
        str(path),
        write_keys=["cli-key:ios", "new-key:android"],
        environ={"SLUICE_WRITE_KEYS": "env-key"},
        base_dir=tmp_path,
    )
    owners = {k.key: k.source for k in cfg.write_keys}
    assert owners == {
        "web-key-1": "web",
        "web-key-2": "web",
        "ios-key": "ios",
        "old-style": "web",
        "cli-key": "ios",  # extends the YAML source, which keeps its rules
        "new-key": "android",  # a new source with the defaults
        "env-key": "default",
    }
    ios = cfg.source("ios")
    assert ios.record_types == ("track", "screen")
    assert ios.rate_limit == RateLimit(events_per_s=5, burst=10)
    assert cfg.source("android") == config.Source(name="android")
    assert not cfg.generated_key


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("sources:\n  - {name: a, write_keys: [k]}\n  - {name: b, write_keys: [k]}\n", "both a"),
        ("sources:\n  - {name: a}\n", "has no write key"),
        ("sources:\n  - {name: a, write_keys: [k]}\n  - {name: a, write_keys: [j]}\n", "twice"),
        ("sources:\n  - {name: 'a/b', write_keys: [k]}\n", "source name"),
        ("sources:\n  - {name: a, write_keys: [k], record_types: [click]}\n", "record_types"),
        ("sources:\n  - {name: a, write_keys: [k], tracking_plan: strict}\n", "tracking_plan"),
        ("sources:\n  - {name: a, write_keys: [k], tracking_plan: warn}\n", "tracking_plans"),
        ("sources:\n  - {name: a, write_keys: [k], rate_limit: {events_per_s: 0}}\n", "> 0"),
        ("sources:\n  - {name: a, write_keys: [k], rate_limit: {rate: 5}}\n", "unknown"),
        ("sources:\n  - {name: a, write_keys: [k], colour: blue}\n", "unknown setting"),
        ("tracking_plans: nowhere\n", "not a directory"),
        ("body_timeout_s: soon\n", "body_timeout_s"),
    ],
)
def test_source_mistakes_say_what_to_fix(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "sluice.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        config.load(str(path), base_dir=tmp_path, environ={})


def test_events_are_stamped_with_their_source(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(SOURCES)
    event = {"userId": "u", "event": "Opened", "source": "web"}  # a forged source is replaced
    assert (
        ingress.post("/v1/track", {**event, "messageId": "m-web"}, "web-key-2").status_code == 200
    )
    body_key = {**event, "messageId": "m-ios", "writeKey": "ios-key"}
    assert ingress.post("/v1/track", body_key).status_code == 200
    sources = {e["messageId"]: e["source"] for e in ingress.store.events()}
    assert sources == {"m-web": "web", "m-ios": "ios"}
    assert all("writeKey" not in e for e in ingress.store.events())


def test_a_source_sends_only_its_record_types(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(SOURCES)
    identify = {"userId": "u", "traits": {"plan": "pro"}}
    assert error(ingress.post("/v1/identify", identify, "ios-key"), 400)["code"] == (
        "type_not_allowed"
    )
    batch = {"batch": [{**identify, "type": "identify"}, {"type": "screen", "userId": "u"}]}
    answer = ingress.post("/v1/batch", batch, "ios-key")
    assert answer.status_code == 200
    assert [(r["index"], r["code"]) for r in answer.json()["rejected"]] == [(0, "type_not_allowed")]
    assert [e["type"] for e in ingress.store.events()] == ["screen"]
    assert ingress.post("/v1/identify", identify, "web-key-1").status_code == 200


def test_two_sources_events_stay_apart(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(SOURCES)
    secret = "web-secret-4711"
    web_events = [
        {"type": "track", "userId": "alice", "event": "Paid", "properties": {"card": secret}},
        {"type": "track", "userId": "alice", "properties": {"card": secret}},  # no name: rejected
    ]
    assert ingress.post("/v1/batch", {"batch": web_events}, "web-key-1").status_code == 200

    # Everything ios can provoke: success, rejections, errors, rate limiting, health.
    ios_answers = [
        ingress.post("/v1/track", {"userId": "bob", "event": "Opened"}, "ios-key"),
        ingress.post("/v1/batch", {"batch": [{"type": "track", "userId": "b"}]}, "ios-key"),
        ingress.post("/v1/identify", {"userId": "bob"}, "ios-key"),
        ingress.post("/v1/track", {"userId": "bob", "event": "x"}, "web-key-3"),
        ingress.post("/v1/track", b"{", "ios-key"),
        *(ingress.post("/v1/track", {"userId": "b", "event": "e"}, "ios-key") for _ in range(12)),
        ingress.client.get("/health"),
    ]
    for answer in ios_answers:
        assert secret not in answer.text
        assert "alice" not in answer.text and "web" not in answer.text
    assert 429 in {a.status_code for a in ios_answers}

    stored = ingress.store.events()
    assert {e["source"] for e in stored if e["userId"] == "alice"} == {"web"}
    assert {e["source"] for e in stored if e["userId"] != "alice"} == {"ios"}
    letters = ingress.store.deadletters()
    assert {(letter["source"], letter["payload"]["userId"]) for letter in letters} == {
        ("web", "alice"),
        ("ios", "b"),
        ("ios", "bob"),
    }
