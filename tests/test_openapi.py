"""`/openapi.json` is true to the app: schemathesis generates requests from it (valid and
invalid ones) and checks every answer against it, in process, with no Ray."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection
from starlette.routing import Route

from core import config
from ingress.app import build_app
from tests.ingress.memory_store import MemoryEventStore

WRITE_KEY = "openapi-key"

app = build_app(config.load(write_keys=[f"{WRITE_KEY}:web"], environ={}), MemoryEventStore())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.update(basic_auth=(WRITE_KEY, ""))


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_answers_as_its_openapi_document_says(case: schemathesis.Case) -> None:
    # A batch accepts its valid events and lists the invalid ones (200) by design, so an
    # invalid event inside it is not a request the API must refuse.
    batch = case.path in ("/v1/batch", "/v1/import", "/v1/b")
    case.call_and_validate(excluded_checks=[negative_data_rejection] if batch else [])


def test_every_route_of_the_app_is_in_the_document() -> None:
    document = schema.raw_schema
    routes = {
        (r.path, m.lower()) for r in app.routes if isinstance(r, Route) for m in r.methods or ()
    }
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes - {(p, "head") for p, _ in routes} == documented
