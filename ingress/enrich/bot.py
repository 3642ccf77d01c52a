"""`bot`: whether the user agent is a crawler (`crawlerdetect`'s maintained list), as
`context.bot`; with `bots: drop` such events are not stored (counted in `/metrics`).
"""

from __future__ import annotations

import functools
from typing import Any

from crawlerdetect import CrawlerDetect

_DETECTOR = CrawlerDetect()


@functools.lru_cache(maxsize=8192)
def is_bot(user_agent: str) -> bool:
    """Whether `user_agent` is a known crawler, bot or spider."""
    return bool(_DETECTOR.isCrawler(user_agent))


class BotFilter:
    """Flags (or, with `drop`, drops) events sent by crawlers."""

    def __init__(self, *, drop: bool = False) -> None:
        self.drop = drop

    def __call__(self, event: dict[str, Any]) -> dict[str, Any] | None:
        context = event["context"]
        user_agent = context.get("userAgent")
        bot = isinstance(user_agent, str) and bool(user_agent) and is_bot(user_agent[:1024])
        if bot and self.drop:
            return None
        if isinstance(user_agent, str):
            context["bot"] = bot
        return event
