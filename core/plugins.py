"""Functions of the user's own, named `module:function` in the config (enrichers, sink
transforms), loaded at start with an error that says what to fix."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from core.config import ConfigError


def load_callable(spec: str, setting: str) -> Callable[..., Any]:
    """The function `module:function` names; ConfigError naming `setting` if it cannot."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{setting}: cannot load {spec!r} ({type(exc).__name__}: {exc}); the module must be "
            "importable where Sluice runs (installed, or on PYTHONPATH)"
        ) from exc
    if not callable(function):
        raise ConfigError(f"{setting}: {spec!r} is not a function (event dict in, event dict out)")
    return function  # type: ignore[no-any-return]
