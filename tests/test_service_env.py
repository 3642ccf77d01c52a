"""HAProxy's files and side ports are per instance, so two Sluices share a machine."""

from __future__ import annotations

from sluice.config import Config
from sluice.service import serve_environment


def test_two_instances_share_no_haproxy_port_or_file() -> None:
    first = serve_environment(Config(port=18001))
    second = serve_environment(Config(port=18002))
    for key in first:
        if key.endswith(("_PORT", "_LOC", "_PATH", "_BASE", "_FILE")):
            assert first[key] != second[key], key
    assert {"RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"} <= first.keys()
