"""`bot` with crawlerdetect's list: flag, or drop."""

from __future__ import annotations

from ingress.enrich.bot import BotFilter
from tests.ingress.enrich.test_useragent import CHROME_WINDOWS, GOOGLEBOT

BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"


def test_crawlers_are_flagged_and_people_are_not() -> None:
    flag = BotFilter()
    for user_agent, bot in ((GOOGLEBOT, True), (BINGBOT, True), (CHROME_WINDOWS, False)):
        event = flag({"context": {"userAgent": user_agent}})
        assert event is not None and event["context"]["bot"] is bot, user_agent


def test_drop_mode_drops_crawlers_only() -> None:
    drop = BotFilter(drop=True)
    assert drop({"context": {"userAgent": GOOGLEBOT}}) is None
    assert drop({"context": {"userAgent": CHROME_WINDOWS}}) is not None
