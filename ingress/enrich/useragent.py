"""`useragent`: browser, OS and device from `context.userAgent`, with `ua-parser` and its
Rust-backed resolver (`ua-parser-rs`).

Adds `context.browser` `{name, version}`, and `context.os` `{name, version}` and
`context.device.model` where the client did not send its own (mobile SDKs do).
A site sees few distinct user agents, so results are cached.
"""

from __future__ import annotations

import functools
from typing import Any

import ua_parser


def _version(*parts: str | None) -> str | None:
    numbers = [p for p in parts if p]
    return ".".join(numbers) or None


@functools.lru_cache(maxsize=8192)
def parse(user_agent: str) -> dict[str, dict[str, str | None]]:
    """`{"browser": {...}, "os": {...}, "device": {...}}` for one user-agent string."""
    result = ua_parser.parse(user_agent)
    browser, os_, device = result.user_agent, result.os, result.device
    return {
        "browser": {
            "name": browser.family if browser else None,
            "version": _version(browser.major, browser.minor) if browser else None,
        },
        "os": {
            "name": os_.family if os_ else None,
            "version": _version(os_.major, os_.minor) if os_ else None,
        },
        "device": {"model": device.family if device and device.family != "Other" else None},
    }


def enrich_useragent(event: dict[str, Any]) -> dict[str, Any]:
    context = event["context"]
    user_agent = context.get("userAgent")
    if not isinstance(user_agent, str) or not user_agent:
        return event
    parsed = parse(user_agent[:1024])
    if parsed["browser"]["name"]:
        context["browser"] = dict(parsed["browser"])
    if parsed["os"]["name"] and parsed["os"]["name"] != "Other":
        os_ = context.get("os")
        if not isinstance(os_, dict) or not os_.get("name"):
            context["os"] = dict(parsed["os"])
    if parsed["device"]["model"]:
        device = context.get("device")
        device = dict(device) if isinstance(device, dict) else {}
        device.setdefault("model", parsed["device"]["model"])
        context["device"] = device
    return event
