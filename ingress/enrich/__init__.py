"""Enrichment: each enricher reads an accepted event and adds what it knows under
`context`, where Segment's and Snowplow's users look for it. One module per enricher,
behind one interface: a callable taking the event (a dict, server fields set) and
returning it, or `None` to drop it (the bot filter in `drop` mode).

Configured by the `enrich:` list (built-in names, in order, or `module:function` for an
enricher of your own); by default `useragent`, `campaign`, `referrer`, `bot` and `geoip`.
An enricher never fails a request: one that raises is counted
(`sluice_enrich_errors_total`) and the event goes on without its fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from core.config import Config, ConfigError
from core.plugins import load_callable
from ingress.counters import ReplicaCounters

logger = logging.getLogger("sluice.enrich")

#: Event in; the event (changed in place or new), or None to drop it.
Enricher = Callable[[dict[str, Any]], dict[str, Any] | None]

DEFAULT = ("useragent", "campaign", "referrer", "bot", "geoip")


def _builtin(name: str, config: Config) -> Enricher:
    if name == "useragent":
        from ingress.enrich.useragent import enrich_useragent

        return enrich_useragent
    if name == "campaign":
        from ingress.enrich.campaign import enrich_campaign

        return enrich_campaign
    if name == "referrer":
        from ingress.enrich.referrer import enrich_referrer

        return enrich_referrer
    if name == "bot":
        from ingress.enrich.bot import BotFilter

        return BotFilter(drop=config.bots == "drop")
    if name == "geoip":
        from ingress.enrich.geoip import GeoIP

        return GeoIP.open(config.geoip_db, ip=config.geoip_ip)
    raise ConfigError(
        f"enrich: no built-in enricher {name!r}; use one of {', '.join(DEFAULT)} "
        "or module:function for your own"
    )


def _imported(spec: str) -> Enricher:
    enricher: Enricher = load_callable(spec, "enrich")
    return enricher


#: Where the built-in enrichers write (they read `userAgent`, `ip` and `page` only).
_WRITES = frozenset(("browser", "os", "device", "campaign", "referrer", "location", "bot"))
_MEMO_SIZE = 8192
_DROP = object()


class Enrichment:
    """The configured enrichers, run in order on each accepted event.

    The built-in enrichers at the head of the list depend only on a few context fields
    (user agent, page URL and referrer, address), so what they add is remembered per
    combination of those and copied into each event: most events of a site share one.
    An event whose client sent any of the places they write goes through them in full.
    """

    def __init__(
        self,
        enrichers: list[tuple[str, Enricher]],
        counters: ReplicaCounters | None = None,
        builtin_head: int = 0,
    ) -> None:
        self.enrichers = enrichers
        self.counters = counters or ReplicaCounters()
        self.builtin_head = builtin_head  # how many leading enrichers are built-ins
        self._memo: dict[tuple[Any, ...], Any] = {}

    @classmethod
    def from_config(cls, config: Config, counters: ReplicaCounters | None = None) -> Enrichment:
        """Load every enricher `config.enrich` names; a ConfigError says what is wrong."""
        names = DEFAULT if config.enrich is None else config.enrich
        loaded = []
        for name in names:
            enricher = _imported(name) if ":" in name else _builtin(name, config)
            loaded.append((name, enricher))
        head = next((i for i, name in enumerate(names) if ":" in name), len(names))
        return cls(loaded, counters, head)

    @property
    def context_only(self) -> bool:
        """Whether what it adds depends on the event's `context` alone (built-ins only)."""
        return self.builtin_head == len(self.enrichers)

    def __call__(self, event: dict[str, Any]) -> dict[str, Any] | None:
        start = 0
        if self.builtin_head:
            remembered = self._remembered(event)
            if remembered is _DROP:
                self.counters.add("sluice_events_dropped")
                return None
            if remembered is not None:
                start = self.builtin_head
        return self._run(event, start)

    def _run(
        self, event: dict[str, Any], start: int, end: int | None = None
    ) -> dict[str, Any] | None:
        for name, enricher in self.enrichers[start:end]:
            try:
                result = enricher(event)
            except Exception:
                self.counters.add("sluice_enrich_errors", name)
                logger.exception("enricher %s failed; the event goes on without it", name)
                continue
            if result is None:
                self.counters.add("sluice_events_dropped")
                return None
            event = result
        return event

    def _remembered(self, event: dict[str, Any]) -> Any:
        """Apply the built-in head's remembered additions to `event`: True when done,
        `_DROP` when it drops the event, None when it must run in full."""
        context = event["context"]
        if not _WRITES.isdisjoint(context):
            return None
        page = context.get("page")
        if isinstance(page, dict):
            page = (page.get("url"), page.get("search"), page.get("referrer"))
        try:
            key = (context.get("userAgent"), context.get("ip"), page)
            additions = self._memo.get(key)
        except TypeError:  # an unhashable value (a client's list where a string goes)
            return None
        if additions is None:
            additions = self._additions(context)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = additions
        if additions is _DROP:
            return _DROP
        if "ip" in additions and additions["ip"] is _DROP:
            del context["ip"]  # geoip_ip: drop
            additions = {k: v for k, v in additions.items() if k != "ip"}
        if self.builtin_head < len(self.enrichers):
            # A user enricher follows and may change what it finds: copies of its own.
            additions = {k: dict(v) if type(v) is dict else v for k, v in additions.items()}
        context.update(additions)
        return True

    def _additions(self, context: dict[str, Any]) -> Any:
        """What the built-in head adds to a context with these inputs, or `_DROP`."""
        probe = {"context": {k: context[k] for k in ("userAgent", "ip", "page") if k in context}}
        result = self._run(probe, 0, self.builtin_head)
        if result is None:
            return _DROP
        added = result["context"]
        additions = {k: v for k, v in added.items() if k in _WRITES}
        if "ip" in context:
            additions["ip"] = added.get("ip", _DROP)
        return additions
