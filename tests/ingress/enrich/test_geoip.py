"""`geoip`: the offline country data on public addresses of known countries, a real
MaxMind-format database (written here with mmdb-writer), and the privacy options."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from core.config import ConfigError
from ingress.enrich.geoip import GeoIP


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("8.8.8.8", "US"),  # Google, ARIN
        ("1.0.16.1", "JP"),  # APNIC, delegated to Japan
        ("2001:4860:4860::8888", "US"),  # Google's IPv6 resolver
    ],
)
def test_offline_countries(ip: str, country: str) -> None:
    event = GeoIP.open("")({"context": {"ip": ip}})
    assert event["context"]["location"]["country"] == country


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "192.168.0.7", "::1", "not-an-ip"])
def test_private_loopback_and_bad_addresses_get_nothing(ip: str) -> None:
    assert "location" not in GeoIP.open("")({"context": {"ip": ip}})["context"]


@pytest.fixture(scope="module")
def city_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-City")
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {
            "country": {"iso_code": "GB"},
            "city": {"names": {"en": "London"}},
            "subdivisions": [{"names": {"en": "England"}}],
            "location": {"latitude": 51.5142, "longitude": -0.0931},
        },
    )
    path = tmp_path_factory.mktemp("geoip") / "city.mmdb"
    writer.to_db_file(str(path))
    return str(path)


def test_a_city_database(city_db: str) -> None:
    event = GeoIP.open(city_db)({"context": {"ip": "81.2.69.142"}})
    assert event["context"]["location"] == {
        "country": "GB",
        "region": "England",
        "city": "London",
        "latitude": 51.5142,
        "longitude": -0.0931,
    }


def test_ip_truncated_or_dropped_after_the_lookup(city_db: str) -> None:
    truncated = GeoIP.open(city_db, ip="truncate")({"context": {"ip": "81.2.69.142"}})
    assert truncated["context"]["ip"] == "81.2.69.0"
    assert truncated["context"]["location"]["city"] == "London"
    dropped = GeoIP.open("", ip="drop")({"context": {"ip": "8.8.8.8"}})
    assert "ip" not in dropped["context"] and dropped["context"]["location"]["country"] == "US"


def test_a_missing_database_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="geoip_db: cannot open"):
        GeoIP.open(str(tmp_path / "nope.mmdb"))
