"""Fixtures for the ingress app run in process, with no Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from core import config
from tests.ingress.harness import Ingress


@pytest.fixture
def make_ingress(tmp_path: Path) -> Callable[..., Ingress]:
    """`make_ingress(yaml_text, plans={relative path: schema}, **load_kwargs)`: an `Ingress`.

    `plans` are written under `tmp_path/plans`, which the YAML names as `tracking_plans: plans`.
    """

    def make(yaml_text: str = "", plans: dict[str, Any] | None = None, **kw: Any) -> Ingress:
        for relative, schema in (plans or {}).items():
            path = tmp_path / "plans" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(orjson.dumps(schema))
        config_file = tmp_path / "sluice.yaml"
        config_file.write_text(yaml_text)
        return Ingress(config.load(str(config_file), base_dir=tmp_path, environ={}, **kw))

    return make
