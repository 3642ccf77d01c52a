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

import importlib
import logging
from collections.abc import Callable
from typing import Any

from core.config import Config, ConfigError
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
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        enricher = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"enrich: cannot load {spec!r} ({type(exc).__name__}: {exc}); the module must be "
            "importable where Sluice runs (installed, or on PYTHONPATH)"
        ) from exc
    if not callable(enricher):
        raise ConfigError(f"enrich: {spec!r} is not a function (event dict in, event dict out)")
    return enricher  # type: ignore[no-any-return]


class Enrichment:
    """The configured enrichers, run in order on each accepted event."""

    def __init__(
        self, enrichers: list[tuple[str, Enricher]], counters: ReplicaCounters | None = None
    ) -> None:
        self.enrichers = enrichers
        self.counters = counters or ReplicaCounters()

    @classmethod
    def from_config(cls, config: Config, counters: ReplicaCounters | None = None) -> Enrichment:
        """Load every enricher `config.enrich` names; a ConfigError says what is wrong."""
        names = DEFAULT if config.enrich is None else config.enrich
        loaded = []
        for name in names:
            enricher = _imported(name) if ":" in name else _builtin(name, config)
            loaded.append((name, enricher))
        return cls(loaded, counters)

    def __call__(self, event: dict[str, Any]) -> dict[str, Any] | None:
        for name, enricher in self.enrichers:
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
