"""`geoip`: where `context.ip` is, into `context.location` `{country, region, city,
latitude, longitude}` (`country` as ISO 3166-1 alpha-2).

With `geoip_db:` naming a MaxMind-format `.mmdb` (GeoLite2 or DB-IP, City or Country),
read with `maxminddb`. Without one, the country alone from `iptocc`, whose data (the
five Regional Internet Registries' delegations) ships inside the package, so this works
on a fresh machine with no download. Private, loopback and reserved addresses get
nothing. `geoip_ip:` `keep` (default), `truncate` (to /24 or /48 after the lookup) or
`drop` (remove `context.ip` after the lookup) for privacy.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from core.config import ConfigError

Location = dict[str, Any]


def _public(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return address if address.is_global else None


def _mmdb_lookup(path: str) -> Callable[[str], Location]:
    import maxminddb

    try:
        reader = maxminddb.open_database(path)
    except (OSError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigError(f"geoip_db: cannot open {path}: {exc}") from exc

    def lookup(ip: str) -> Location:
        record: Any = reader.get(ip)
        if not isinstance(record, dict):
            return {}
        country = (record.get("country") or record.get("registered_country") or {}).get("iso_code")
        subdivisions = record.get("subdivisions") or [{}]
        location = record.get("location") or {}
        found = {
            "country": country,
            "region": (subdivisions[0].get("names") or {}).get("en"),
            "city": ((record.get("city") or {}).get("names") or {}).get("en"),
            "latitude": location.get("latitude"),
            "longitude": location.get("longitude"),
        }
        return {k: v for k, v in found.items() if v is not None}

    return lookup


def _offline_lookup() -> Callable[[str], Location]:
    from iptocc import country_code

    def lookup(ip: str) -> Location:
        code = country_code(ip)
        return {"country": code} if code else {}

    return lookup


def truncated(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of `ip`, as an address."""
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


class GeoIP:
    """Looks up `context.ip` and writes `context.location`."""

    def __init__(self, lookup: Callable[[str], Location], ip: str = "keep") -> None:
        if ip not in ("keep", "truncate", "drop"):
            raise ConfigError(f"geoip_ip must be keep, truncate or drop, got {ip!r}")
        self.lookup = lookup
        self.ip = ip

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one instance per replica, kept)
    def located(self, ip: str) -> Location:
        """What the database says of `ip`; nothing for private and bad addresses."""
        address = _public(ip)
        return self.lookup(str(address)) if address is not None else {}

    @classmethod
    def open(cls, db: str, ip: str = "keep") -> GeoIP:
        """From a `.mmdb` file, or the offline country data when `db` is empty."""
        return cls(_mmdb_lookup(db) if db else _offline_lookup(), ip)

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        context = event["context"]
        ip = context.get("ip")
        if not isinstance(ip, str):
            return event
        found = self.located(ip[:64])
        if found:
            sent = context.get("location")
            context["location"] = {**found, **(sent if isinstance(sent, dict) else {})}
        if self.ip == "drop":
            del context["ip"]
        elif self.ip == "truncate":
            try:
                context["ip"] = truncated(ip)
            except ValueError:
                del context["ip"]
        return event
