"""The Ray Serve deployment that serves the ingress app in each replica."""

from __future__ import annotations

from typing import Any

from ray import serve
from starlette.applications import Starlette

from ingress.app import build_app
from ingress.store import RayEventStore
from sluice.config import Config


@serve.deployment
@serve.ingress()
class Ingress:
    """One replica: a Starlette app over a `RayEventStore` (and its micro-batcher)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = RayEventStore(
            config.batch_window_s,
            config.shards,
            config.batch_in_flight,
            bulk_window_s=config.batch_request_window_s,
        )

    def __serve_build_asgi_app__(self) -> Starlette:
        return build_app(self.config, self.store)


def application(config: Config) -> Any:
    """The Serve application for `config`, with replica count and CPU share set here."""
    deployment: Any = Ingress  # a Serve Deployment once decorated
    options: dict[str, Any] = {
        "num_replicas": config.ingress_replicas,
        "ray_actor_options": {"num_cpus": 0.25},
        "max_ongoing_requests": 1000,
    }
    if config.max_replicas_per_node:
        options["max_replicas_per_node"] = config.max_replicas_per_node
    return deployment.options(**options).bind(config)
