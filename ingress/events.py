"""Parse, validate and enrich Segment payloads. Pure functions: no Ray, no I/O.

Limits are Segment's: 32 KB per event, 500 KB per batch request, 2,500 events per batch.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from sluice.model import RecordType

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
#: Serialized size an accepted event may reach once enriched (server fields added).
MAX_ENRICHED_BYTES = MAX_EVENT_BYTES + 1024

_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
_ID_TYPES = (str, int)
# Top-level batch fields Segment's SDKs send and that apply to every event.
_BATCH_DEFAULTS = ("context", "integrations")


class IngressError(Exception):
    """A request Sluice refuses: the HTTP status, a stable code and a message for the user."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Rejection:
    """One event of a request that validation refused."""

    index: int
    code: str
    message: str
    payload: Any


@dataclass
class Parsed:
    """The accepted events of one request, serialized and grouped by record type."""

    by_type: dict[str, list[bytes]] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    received_at: str = ""

    @property
    def accepted(self) -> int:
        return sum(len(v) for v in self.by_type.values())


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo `Content-Encoding: gzip`/`deflate`, refusing output past `limit` (gzip bombs)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate", "x-gzip"):
        raise IngressError(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    wbits = 47 if encoding != "deflate" else 15  # 47: gzip or zlib header, auto-detected
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise IngressError(400, "invalid_encoding", f"body is not valid {encoding}: {exc}") from exc
    if len(out) > limit:
        raise IngressError(413, "payload_too_large", f"decompressed body exceeds {limit} bytes")
    return out


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    if not body.strip():
        raise IngressError(400, "invalid_json", "request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngressError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise IngressError(
            400, "invalid_json", f"request body must be a JSON object, not {type(data).__name__}"
        )
    return data


def utc_text(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a `Z`, as every server-set time is written."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid("invalid_timestamp", f"{name} must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Invalid("invalid_timestamp", f"{name} {value!r} is not ISO-8601") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Invalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _require_id(event: dict[str, Any], key: str) -> None:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, _ID_TYPES) or value == "":
        raise _Invalid("missing_field", f"{key} is required (a non-empty string)")
    event[key] = str(value)


def validate(raw: Any, record_type: str) -> dict[str, Any]:
    """Check the fields Segment requires for `record_type`; returns a copy to enrich."""
    if not isinstance(raw, dict):
        raise _Invalid("invalid_event", "each event must be a JSON object")
    event: dict[str, Any] = dict(raw)
    has_id = False
    for key in ("userId", "anonymousId"):
        value = event.get(key)
        if value is None or value == "":
            event.pop(key, None)
            continue
        if isinstance(value, bool) or not isinstance(value, _ID_TYPES):
            raise _Invalid("invalid_field", f"{key} must be a string")
        event[key] = str(value)
        has_id = True
    if not has_id:
        raise _Invalid("missing_field", "userId or anonymousId is required")
    if record_type == RecordType.TRACK:
        name = event.get("event")
        if not isinstance(name, str) or not name:
            raise _Invalid("missing_field", "track needs 'event', the event's name")
    elif record_type == RecordType.GROUP:
        _require_id(event, "groupId")
    elif record_type == RecordType.ALIAS:
        _require_id(event, "previousId")
        _require_id(event, "userId")
    for key in _OBJECT_FIELDS:
        value = event.get(key)
        if value is not None and not isinstance(value, dict):
            raise _Invalid("invalid_field", f"{key} must be a JSON object")
    for key in ("name", "category"):
        value = event.get(key)
        if value is not None and not isinstance(value, str):
            raise _Invalid("invalid_field", f"{key} must be a string")
    message_id = event.get("messageId")
    if message_id is not None and (
        isinstance(message_id, bool) or not isinstance(message_id, _ID_TYPES)
    ):
        raise _Invalid("invalid_field", "messageId must be a string")
    return event


def enrich(
    event: dict[str, Any],
    record_type: str,
    *,
    source: str,
    received: datetime,
    ip: str | None,
    sent_at: Any = None,
) -> dict[str, Any]:
    """Add the server-set fields, as Segment does.

    `timestamp = receivedAt - (sentAt - originalTimestamp)` corrects the client's clock.
    """
    event["type"] = record_type
    event.pop("writeKey", None)
    message_id = event.get("messageId")
    event["messageId"] = str(message_id) if message_id not in (None, "") else str(uuid.uuid4())
    original = _parse_time(event.get("timestamp"), "timestamp")
    sent = _parse_time(event.get("sentAt", sent_at), "sentAt")
    if original is None:
        timestamp = received
    elif sent is not None:
        timestamp = received - (sent - original)
    else:
        timestamp = original
    if original is not None:
        event["originalTimestamp"] = utc_text(original)
    if sent is not None:
        event["sentAt"] = utc_text(sent)
    event["timestamp"] = utc_text(timestamp)
    event["receivedAt"] = utc_text(received)
    context = event.get("context")
    if context is None:
        context = event["context"] = {}
    if ip and "ip" not in context:
        context["ip"] = ip
    event["source"] = source
    return event


def accept(
    items: list[Any],
    *,
    record_type: str | None,
    source: str,
    ip: str | None,
    defaults: Mapping[str, Any] | None = None,
    allowed_types: frozenset[str] | None = None,
) -> Parsed:
    """Validate and enrich `items`; `record_type=None` takes each item's own `type` (batch)."""
    received = datetime.now(UTC)
    parsed = Parsed(received_at=utc_text(received))
    defaults = defaults or {}
    for index, item in enumerate(items):
        try:
            kind = record_type or (item.get("type") if isinstance(item, dict) else None)
            if kind not in _RECORD_TYPES:
                raise _Invalid(
                    "invalid_type", f"type must be one of {', '.join(_RECORD_TYPES)}, got {kind!r}"
                )
            if allowed_types is not None and kind not in allowed_types:
                raise _Invalid("type_not_allowed", f"this source does not accept {kind} events")
            event = validate(item, kind)
            for key in _BATCH_DEFAULTS:
                if key in defaults and key not in event and isinstance(defaults[key], dict):
                    event[key] = dict(defaults[key])
            enrich(
                event, kind, source=source, received=received, ip=ip, sent_at=defaults.get("sentAt")
            )
            payload = orjson.dumps(event)
            if len(payload) > MAX_ENRICHED_BYTES:
                raise _Invalid(
                    "event_too_large",
                    f"event is {len(payload)} bytes; the limit is {MAX_EVENT_BYTES}",
                )
        except _Invalid as exc:
            parsed.rejected.append(Rejection(index, exc.code, exc.message, item))
            continue
        parsed.by_type.setdefault(kind, []).append(payload)
    return parsed


_RECORD_TYPES = tuple(t.value for t in RecordType)


def deadletters(parsed: Parsed, source: str) -> list[bytes]:
    """The rejected events of a request as dead-letter records (payload and reason)."""
    return [
        orjson.dumps(
            {
                "reason": f"{r.code}: {r.message}",
                "index": r.index,
                "source": source,
                "receivedAt": parsed.received_at,
                "payload": r.payload,
            }
        )
        for r in parsed.rejected
    ]
