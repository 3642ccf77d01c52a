"""The OpenAPI 3.1 document served at `/openapi.json`.

Written by hand from the same constants the app enforces (record types, limits), and
checked against the app by schemathesis in `tests/test_openapi.py`: a change to what the
app accepts or answers that is not made here too fails that test.
"""

from __future__ import annotations

from typing import Any

from core.model import RecordType
from ingress import events

_REF = "#/components/schemas/"

_ID = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "integer", "minimum": -events.MAX_ID_INT, "maximum": events.MAX_ID_INT},
    ],
    "description": "A string; an integer (up to 2**53 - 1) is taken as its text.",
}
_OPTIONAL_ID = {
    "anyOf": [
        {"type": ["string", "null"]},
        {"type": "integer", "minimum": -events.MAX_ID_INT, "maximum": events.MAX_ID_INT},
    ],
    "description": "A string; an integer (up to 2**53 - 1) is taken as its text; "
    "empty or null is absent.",
}
_TIME = {
    "anyOf": [{"type": "string", "format": "date-time"}, {"enum": ["", None]}],
    "description": "ISO-8601 / RFC 3339; naive times are UTC; empty or null is absent.",
}
_OBJECT = {"type": ["object", "null"]}
_TEXT = {"type": ["string", "null"]}
_BODY_KEY = {
    "description": "The write key (a string) when there is no Authorization header; "
    "ignored when there is one, never stored."
}

# Which fields each record type requires besides userId or anonymousId, and their schemas.
_REQUIRED: dict[str, dict[str, Any]] = {
    "track": {"event": {"type": "string", "minLength": 1, "description": "The event's name."}},
    "identify": {},
    "page": {},
    "screen": {},
    "group": {"groupId": _ID},
    "alias": {"previousId": _ID, "userId": _ID},
}


def _event_schema(record_type: str, *, in_batch: bool) -> dict[str, Any]:
    required = _REQUIRED[record_type]
    properties: dict[str, Any] = {
        "userId": _OPTIONAL_ID,
        "anonymousId": _OPTIONAL_ID,
        "messageId": {**_OPTIONAL_ID, "description": "Generated when missing."},
        "timestamp": _TIME,
        "sentAt": _TIME,
        "properties": _OBJECT,
        "traits": _OBJECT,
        "context": {
            **_OBJECT,
            "description": "context.sluice is reserved: Sluice writes tracking-plan "
            "violations there (`context.sluice.violations`).",
        },
        "integrations": _OBJECT,
        "name": _TEXT,
        "category": _TEXT,
        **required,
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if in_batch:
        properties["type"] = {"const": record_type}
        schema["required"] = ["type", *required]
    else:
        properties["writeKey"] = _BODY_KEY
        if required:
            schema["required"] = list(required)
    if "userId" not in required:
        # userId or anonymousId, not empty.
        schema["anyOf"] = [
            {"required": [key], "properties": {key: _ID}} for key in ("userId", "anonymousId")
        ]
    return schema


def _error_response(description: str, *, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}},
    }
    if retry:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before sending again.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return response


_ERRORS = {
    "400": _error_response(
        "Not valid: bad JSON, nesting deeper than "
        f"{events.MAX_DEPTH}, a missing field, a record type the source may not send, a "
        "tracking-plan violation (source in reject mode), or a batch with no valid event."
    ),
    "401": _error_response("No write key, or one Sluice does not know."),
    "403": _error_response("The source does not accept events from this browser origin."),
    "408": _error_response("The body took too long to arrive."),
    "413": _error_response(
        f"Body over {events.MAX_EVENT_BYTES} bytes (single event) or "
        f"{events.MAX_BATCH_BYTES} bytes (batch), also once decompressed."
    ),
    "415": _error_response("Content-Type is not JSON, or Content-Encoding is not gzip."),
    "429": _error_response("The source is over its rate limit (per ingress replica).", retry=True),
    "431": _error_response(f"Request headers over {events.MAX_HEADER_BYTES} bytes."),
    "503": _error_response("A log is full or a producer is restarting.", retry=True),
}

_OK = {
    "description": "Stored. In a batch, rejected events are listed by index and kept as "
    "dead letters.",
    "content": {"application/json": {"schema": {"$ref": _REF + "Success"}}},
}

_BODY_NOTE = (
    "Content-Type application/json (also text/plain and */*+json, as browsers' sendBeacon "
    "sends); Content-Encoding gzip or deflate accepted."
)


def _operation(summary: str, body_schema: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": _BODY_NOTE,
            "security": [{"writeKey": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF + body_schema}}},
            },
            "responses": {"200": _OK, **_ERRORS},
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the ingress HTTP API."""
    types = [t.value for t in RecordType]
    schemas: dict[str, Any] = {}
    for t in types:
        schemas[t.capitalize()] = _event_schema(t, in_batch=False)
        schemas[f"Batch{t.capitalize()}"] = _event_schema(t, in_batch=True)
    schemas["Batch"] = {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {
                "type": "array",
                "maxItems": events.MAX_BATCH_EVENTS,
                "items": {"oneOf": [{"$ref": f"{_REF}Batch{t.capitalize()}"} for t in types]},
            },
            "context": {**_OBJECT, "description": "Applies to events without their own."},
            "integrations": {**_OBJECT, "description": "Applies to events without their own."},
            "sentAt": _TIME,
            "writeKey": _BODY_KEY,
        },
    }
    violation = {
        "type": "object",
        "required": ["path", "message"],
        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
    }
    schemas["Violation"] = violation
    schemas["Rejected"] = {
        "type": "object",
        "required": ["index", "code", "message"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "violations": {"type": "array", "items": {"$ref": _REF + "Violation"}},
        },
    }
    schemas["Success"] = {
        "type": "object",
        "required": ["success"],
        "properties": {
            "success": {"const": True},
            "rejected": {"type": "array", "items": {"$ref": _REF + "Rejected"}},
        },
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["success", "code", "message"],
        "properties": {
            "success": {"const": False},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "violations": {"type": "array", "items": {"$ref": _REF + "Violation"}},
            "rejected": {"type": "array", "items": {"$ref": _REF + "Rejected"}},
        },
    }
    paths: dict[str, Any] = {
        f"/v1/{t}": _operation(f"Send one {t} event", t.capitalize()) for t in types
    }
    paths["/v1/batch"] = _operation("Send up to 2,500 events of any types", "Batch")
    paths["/v1/import"] = _operation("Same as /v1/batch", "Batch")
    # analytics.js posts to one-letter paths.
    for t in types:
        paths[f"/v1/{t[0]}"] = _operation(f"Same as /v1/{t} (analytics.js)", t.capitalize())
    paths["/v1/b"] = _operation("Same as /v1/batch (analytics.js)", "Batch")
    paths["/v1/m"] = {
        "post": {
            "summary": "analytics.js's own delivery metrics: counted, not stored",
            "security": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
            "responses": {"200": _OK, **_ERRORS},
        }
    }
    paths["/v1/projects/{write_key}/settings"] = {
        "parameters": [
            {"name": "write_key", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "get": {
            "summary": "Segment-CDN-shaped settings that point analytics.js at this Sluice",
            "security": [],
            "responses": {
                "200": {
                    "description": "Settings (cacheable; ETag).",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "304": {"description": "Not modified since the ETag sent."},
                "403": _ERRORS["403"],
                "404": {
                    "description": "Unknown write key.",
                    "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}},
                },
            },
        },
    }
    for path in [p for p in paths if p.startswith("/v1/")]:
        paths[path]["options"] = {
            "summary": "CORS preflight",
            "security": [],
            "responses": {
                "204": {"description": "The origin may send; CORS headers say how."},
                "403": _ERRORS["403"],
            },
        }
    paths["/health"] = {
        "get": {
            "summary": "Whether Sluice accepts events, with per-type log counters",
            "security": [],
            "responses": {
                "200": {
                    "description": "Accepting.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "503": {
                    "description": "A log is (nearly) full or the producers cannot be reached.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    admin_errors = {
        "401": {
            "description": "No admin token (write keys do not count).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
        "404": {
            "description": "The debugger is off (`debugger: false`), or no such event lately.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    }
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    for path, summary, media in (
        ("/debugger", "The live debugger page (`?token=` sets its cookie)", "text/html"),
        ("/debugger/app.js", "The debugger page's script", "text/javascript"),
        (
            "/debugger/stream",
            "Server-sent events: a sample of arriving events",
            "text/event-stream",
        ),
        ("/debugger/stats", "Per log and sink figures, as /metrics, in JSON", "application/json"),
    ):
        paths[path] = {
            "get": {
                "summary": summary,
                "security": [] if path.endswith(".js") else admin,
                "responses": {
                    "200": {
                        "description": "OK.",
                        "content": {media: {"schema": {"type": "string"}}},
                    },
                    **admin_errors,
                },
            }
        }
    paths["/v1/trace/{message_id}"] = {
        "get": {
            "summary": "Where one recent event is: received, stored, batched, per sink delivered",
            "security": admin,
            "parameters": [
                {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "Found; `steps` in order.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **admin_errors,
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice",
            "version": "1",
            "description": "Segment-compatible HTTP tracking API. Limits: "
            f"{events.MAX_EVENT_BYTES} bytes per event, {events.MAX_BATCH_BYTES} bytes and "
            f"{events.MAX_BATCH_EVENTS} events per batch request.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (`admin_token`), for the debugger and traces.",
                },
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The write key as user name, empty password. A "
                    "`writeKey` field in the body works too.",
                },
            },
        },
        "security": [{"writeKey": []}],
    }
