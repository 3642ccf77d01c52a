"""Configuration: sink URIs, batch policies, write keys, the YAML file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core import config
from core.config import BatchPolicy, ConfigError


def test_defaults_and_relative_file_sink(tmp_path: Path) -> None:
    cfg = config.load(base_dir=tmp_path, environ={})
    (sink,) = cfg.sinks
    assert sink.uri == f"file://{tmp_path.resolve()}/data"
    assert cfg.generated_key and len(cfg.write_keys) == 1
    assert cfg.log_path == Path("/dev/shm/sluice/8000")


def test_uri_query_sets_batch_policy_over_scheme_defaults(tmp_path: Path) -> None:
    cfg = config.load(
        sinks=["kinesis://events?max_events=200", "s3://bucket/pre/"], base_dir=tmp_path, environ={}
    )
    kinesis, s3 = cfg.sinks
    assert kinesis.policy == BatchPolicy.default_for("kinesis").updated({"max_events": 200})
    assert s3.uri == "s3://bucket/pre" and s3.policy == BatchPolicy.default_for("s3")
    assert kinesis.sink_id != s3.sink_id


def test_yaml_file_and_env_keys(tmp_path: Path) -> None:
    path = tmp_path / "sluice.yaml"
    path.write_text(
        "port: 9001\n"
        "sinks:\n  - uri: s3://b/p\n    batch: {max_age_s: 30}\n"
        "write_keys: ['k1:web']\n"
    )
    cfg = config.load(str(path), base_dir=tmp_path, environ={"SLUICE_WRITE_KEYS": "k2:ios,k3"})
    assert cfg.port == 9001
    assert cfg.sinks[0].policy.max_age_s == 30
    assert {(k.key, k.source) for k in cfg.write_keys} == {
        ("k1", "web"),
        ("k2", "ios"),
        ("k3", "default"),
    }
    assert not cfg.generated_key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sinks": ["ftp://x"]}, "scheme must be one of"),
        ({"sinks": ["s3://"]}, "name the bucket"),
        ({"sinks": ["file://./a?max_events=zero"]}, "must be numbers"),
        ({"sinks": ["file://./a?max_lag=1"]}, "unknown batch policy"),
        ({"write_keys": [":web"]}, "is empty"),
    ],
)
def test_mistakes_get_a_message_that_says_what_to_do(
    tmp_path: Path, kwargs: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(base_dir=tmp_path, environ={}, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("segment_bytes: 0", "segment_bytes must be a whole number >= 1, got 0"),
        ("max_replicas_per_node: 1.5", "max_replicas_per_node must be a whole number >= 1"),
        ("ingress_replicas: true", "ingress_replicas must be a whole number >= 1"),
        ("log_capacity_bytes: 0", "log_capacity_bytes must be a whole number >= 1"),
        ("body_timeout_s: 0", "body_timeout_s must be a number > 0"),
    ],
)
def test_numeric_settings_are_checked_at_load(tmp_path: Path, text: str, message: str) -> None:
    # A zero segment size, say, would otherwise make a new file per write in a replica.
    path = tmp_path / "sluice.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(str(path), base_dir=tmp_path, environ={})


def test_numeric_settings_in_range_load(tmp_path: Path) -> None:
    path = tmp_path / "sluice.yaml"
    path.write_text("ingress_replicas: 3\nmax_replicas_per_node: null\n")
    cfg = config.load(str(path), base_dir=tmp_path, environ={})
    assert (cfg.replicas, cfg.max_replicas_per_node) == (3, None)
