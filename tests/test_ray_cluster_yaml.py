"""`ray_cluster.yaml` is a config `ray up` accepts, and it brings Sluice up as documented.

Checked with Ray's own validator against the schema shipped in the installed `ray`,
offline: no AWS credentials, no Ray started.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"

# `sluice serve` flags, as DESIGN.md's "Command line" names them.
SERVE_FLAGS = {
    "--address",
    "--host",
    "--port",
    "--sink",
    "--write-key",
    "--config",
    "--log-dir",
}


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def config(text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def ray_up_checks(config: dict[str, Any]) -> None:
    """The checks `ray up` makes before it talks to AWS: defaults merged, then validated."""
    validate_config(prepare_config(copy.deepcopy(config)))


def test_ray_accepts_the_config(config: dict[str, Any]) -> None:
    ray_up_checks(config)


def test_ray_validator_rejects_a_misspelled_field(config: dict[str, Any]) -> None:
    # Proves the check above has teeth: the schema forbids unknown top-level keys.
    broken = {**config, "setup_comands": config["setup_commands"]}
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        ray_up_checks(broken)


def test_head_and_worker_node_types(config: dict[str, Any]) -> None:
    assert config["cluster_name"] == "sluice"
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"] == "us-east-1"
    node_types = config["available_node_types"]
    head = config["head_node_type"]
    assert head in node_types
    workers = [name for name in node_types if name != head]
    assert workers, "no worker node type"
    for name in workers:
        assert 0 < node_types[name]["min_workers"] <= node_types[name]["max_workers"]
        assert node_types[name]["max_workers"] <= config["max_workers"]
    for name, node_type in node_types.items():
        node_config = node_type["node_config"]
        assert node_config["InstanceType"], name
        # Sinks run on every node: without an instance profile, S3/Kinesis writes fail.
        arn = node_config["IamInstanceProfile"]["Arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+", arn), arn


def test_every_node_installs_sluice_from_the_synced_project(config: dict[str, Any]) -> None:
    assert config["file_mounts"]["~/sluice"] == "."
    # The local virtualenv and data must not be shipped to every node.
    assert ".gitignore" in config["rsync_filter"]
    gitignore = (CLUSTER_YAML.parent / ".gitignore").read_text().split()
    assert ".venv/" in gitignore or ".venv" in gitignore
    assert any("pip install" in c and "~/sluice" in c for c in config["setup_commands"])
    # Ray's defaults would otherwise add their own head/worker setup commands.
    assert config["head_setup_commands"] == []
    assert config["worker_setup_commands"] == []


def test_start_commands_start_ray_with_sluices_environment(config: dict[str, Any]) -> None:
    head = config["head_start_ray_commands"]
    worker = config["worker_start_ray_commands"]
    assert head[0] == "ray stop" and worker[0] == "ray stop"
    head_start = next(c for c in head if "ray start" in c)
    worker_start = next(c for c in worker if "ray start" in c)
    assert "ray start --head --port=6379" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker_start
    # Every Ray process (and `sluice serve` under `ray exec`) reads the same env file.
    env_setup = " ".join(config["setup_commands"])
    assert "AWS_REGION=" in env_setup
    assert head_start.startswith("source ~/sluice.env")
    assert worker_start.startswith("source ~/sluice.env")


def test_documented_bring_up_command(text: str) -> None:
    comments = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
    assert "ray up ray_cluster.yaml" in comments
    exec_line = next(c for c in comments if c.startswith("ray exec ray_cluster.yaml 'sluice serve"))
    argv = shlex.split(exec_line)
    assert argv[:3] == ["ray", "exec", "ray_cluster.yaml"]
    assert "--tmux" in argv[4:]
    serve = shlex.split(argv[3])
    assert serve[:4] == ["sluice", "serve", "--address", "auto"]
    used = {arg for arg in serve if arg.startswith("--")}
    assert used <= SERVE_FLAGS, used - SERVE_FLAGS
    assert serve[serve.index("--host") + 1] == "0.0.0.0"
    sinks = [serve[i + 1] for i, arg in enumerate(serve) if arg == "--sink"]
    assert any(s.startswith("s3://") for s in sinks)
    assert any(s.startswith("kinesis://") for s in sinks)
