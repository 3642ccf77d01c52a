"""Parse, validate and enrich Segment payloads. Pure functions: no Ray, no I/O.

Limits are Segment's: 32 KB per event, 500 KB per batch request, 2,500 events per batch;
plus a cap on JSON nesting and on header size, so hostile input costs little.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from core.model import RecordType

if TYPE_CHECKING:
    from ingress.enrich import Enrichment
    from ingress.plans import TrackingPlan

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
#: Serialized size an accepted event may reach once enriched (server fields and a
#: tracking-plan annotation added).
MAX_ENRICHED_BYTES = MAX_EVENT_BYTES + 4096
#: Deepest JSON nesting accepted in a body (orjson alone allows 1024 and writes 255).
MAX_DEPTH = 64
#: Total size of a request's header names and values (HAProxy's and h11's default, 16 KiB).
MAX_HEADER_BYTES = 16 * 1024

_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
# Plain strings: comparing a record type with an enum member goes through the enum (a
# tenth of `validate`'s time).
TRACK, GROUP, ALIAS = RecordType.TRACK.value, RecordType.GROUP.value, RecordType.ALIAS.value
#: Ids are strings; integers are taken too (as text) up to JavaScript's safe 2**53 - 1,
#: past which JSON parsers lose digits silently.
MAX_ID_INT = 2**53 - 1
#: Longest time text taken; ISO-8601 with microseconds and an offset is 32 characters.
MAX_TIME_CHARS = 64
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
    violations: list[dict[str, str]] = field(default_factory=list)  # of the tracking plan


@dataclass
class Parsed:
    """The accepted events of one request, serialized and grouped by record type."""

    by_type: dict[str, list[bytes]] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)  # messageIds, as `by_type`
    rejected: list[Rejection] = field(default_factory=list)
    received_at: str = ""
    dropped: int = 0  # answered 200, not stored (an enricher such as `bot` in drop mode)

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
    data = parse_json_value(body)
    if not isinstance(data, dict):
        raise IngressError(
            400, "invalid_json", f"request body must be a JSON object, not {type(data).__name__}"
        )
    return data


def parse_json_value(body: bytes) -> Any:
    """Any JSON value within the nesting limit, or a 400 saying what is wrong with it."""
    if not body.strip():
        raise IngressError(400, "invalid_json", "request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngressError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if _depth_exceeds(body, data, MAX_DEPTH):
        raise IngressError(
            400, "too_deep", f"JSON nesting is deeper than {MAX_DEPTH} levels; flatten the event"
        )
    return data


#: Every byte but the quote and the brackets, deleted by `bytes.translate`.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"{}[]')))
_OPENS_CLOSES = bytes.maketrans(b"[]", b"{}")


def _depth_exceeds(body: bytes, data: Any, limit: int) -> bool:
    """Whether `body`, JSON that parsed into `data`, nests deeper than `limit`."""
    found = depth_from_bytes(body, limit)
    return _nested_deeper(data, limit) if found is None else found


def depth_from_bytes(body: bytes, limit: int) -> bool | None:
    """Whether the brackets of JSON `body` nest deeper than `limit`, found in the bytes
    with C-fast `bytes` methods (a third of the time of a walk over the parsed tree);
    None when brackets inside strings leave it to that walk.

    Escapes go first (a `\\"` is no quote). What is left of the strings is their quotes
    and the brackets inside them: an empty string's `""` goes, and where two strings
    with nothing between them lose the quotes they share, their contents join one
    string. Brackets inside strings are rare. Else one pass of `replace` takes away the
    innermost pairs: a body nests as deep as the passes that empty it.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    shape = body.translate(None, _NOT_STRUCTURE)
    if shape.count(b"{") + shape.count(b"[") <= limit:  # nearly every single event
        return False
    shape = shape.replace(b'""', b"")
    if b'"' in shape:
        return None
    shape = shape.translate(_OPENS_CLOSES)
    for _ in range(limit):
        if not shape:
            return False
        shape = shape.replace(b"{}", b"")
    return bool(shape)


_CONTAINERS = (dict, list)


def _nested_deeper(value: Any, limit: int) -> bool:
    level = [value]
    for _ in range(limit):  # one level at a time, in comprehensions: ~1x orjson.loads
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if isinstance(child, _CONTAINERS)
        ]
        if not level:
            return False
    return True


def utc_text(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a `Z`, as every server-set time is written."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat, not strftime: strftime writes year 1 as "1", which no reader parses.
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


@functools.lru_cache(maxsize=4096)
def _parsed_time(value: str) -> tuple[datetime, str] | None:
    """`(moment in UTC, its text)` for an ISO-8601 string, or None. Cached: a batch's
    events share their `sentAt`, and SDKs resend the same timestamps on retries."""
    try:
        moment = datetime.fromisoformat(value.upper())  # RFC 3339 allows a lowercase t and z
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # hours from year 1 or past 9999, which Python cannot hold in UTC
        moment = (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)
    return moment, utc_text(moment)


def _parse_time(value: Any, name: str) -> tuple[datetime, str] | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Invalid("invalid_timestamp", f"{name} must be an ISO-8601 string")
    if len(value) > MAX_TIME_CHARS:  # never a cache key: 4,096 of 32 KB would hold 128 MB
        raise Invalid("invalid_timestamp", f"{name} {_clip(value)} is not ISO-8601")
    parsed = _parsed_time(value)
    if parsed is None:
        raise Invalid("invalid_timestamp", f"{name} {_clip(value)} is not ISO-8601")
    return parsed


class Invalid(Exception):
    def __init__(
        self, code: str, message: str, violations: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or []


def _clip(value: Any, chars: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _id_text(value: Any) -> str | None:
    """An id as text (a string, or an integer: JSON's 5 and 5.0 alike), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is int and -MAX_ID_INT <= value <= MAX_ID_INT:
        return str(value)
    return None


def _require_id(event: dict[str, Any], key: str) -> None:
    text = _id_text(event.get(key))
    if not text:
        raise Invalid("missing_field", f"{key} is required (a non-empty string)")
    event[key] = text


def validate(raw: Any, record_type: str) -> dict[str, Any]:
    """Check the fields Segment requires for `record_type`; returns a copy to enrich."""
    if not isinstance(raw, dict):
        raise Invalid("invalid_event", "each event must be a JSON object")
    # The ids first: a stored event's JSON begins with its partition key (sinks read it there).
    event: dict[str, Any] = {"userId": None, "anonymousId": None}
    event.update(raw)
    has_id = False
    for key in ("userId", "anonymousId"):
        value = event[key]
        if type(value) is str and value:  # nearly always: no call
            has_id = True
            continue
        if value is None or value == "":
            del event[key]
            continue
        text = _id_text(value)
        if text is None:
            raise Invalid("invalid_field", f"{key} must be a string")
        event[key] = text
        has_id = True
    if not has_id:
        raise Invalid("missing_field", "userId or anonymousId is required")
    if record_type == TRACK:
        name = event.get("event")
        if not isinstance(name, str) or not name:
            raise Invalid("missing_field", "track needs 'event', the event's name")
    elif record_type == GROUP:
        _require_id(event, "groupId")
    elif record_type == ALIAS:
        _require_id(event, "previousId")
        _require_id(event, "userId")
    for key in _OBJECT_FIELDS:
        value = event.get(key)
        if value is not None and not isinstance(value, dict):
            raise Invalid("invalid_field", f"{key} must be a JSON object")
    for key in ("name", "category"):
        value = event.get(key)
        if value is not None and not isinstance(value, str):
            raise Invalid("invalid_field", f"{key} must be a string")
    message_id = event.get("messageId")
    if message_id is not None and type(message_id) is not str:
        text = _id_text(message_id)
        if text is None:
            raise Invalid("invalid_field", "messageId must be a string")
        event["messageId"] = text
    return event


def derived_message_id(item: dict[str, Any], source: str) -> str:
    """An id for an event sent without one, made from its content (its own timestamp
    included) and source: an SDK's retry of the same body gets the same id, so the
    duplicate can be removed downstream."""
    canonical = orjson.dumps(item, option=orjson.OPT_SORT_KEYS) + source.encode()
    digest = hashlib.blake2b(canonical, digest_size=16).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


class Times:
    """The server-set times of one request's events (Segment's): what each event's
    `timestamp` and `sentAt` make of them, worked out once per distinct pair of texts.
    A request's events nearly always share both, so most events take a dict lookup."""

    def __init__(self, received: datetime, sent_at: Any) -> None:
        self.received = received
        self.received_text = utc_text(received)
        self.sent_at = sent_at  # the batch's own, for events without theirs
        self.known: dict[tuple[str | None, str | None], tuple[str | None, str | None, str]] = {}

    def of(self, original: Any, sent: Any) -> tuple[str | None, str | None, str]:
        """`(originalTimestamp, sentAt, timestamp)` texts of an event that came with these
        values (None: absent); raises `Invalid` for a value that is not a time."""
        key = (original, sent)
        try:
            return self.known[key]
        except KeyError:
            pass
        except TypeError:  # an object or a list where a time goes: not cached, refused below
            return self._work_out(original, sent)
        found = self.known[key] = self._work_out(original, sent)
        return found

    def _work_out(self, original: Any, sent: Any) -> tuple[str | None, str | None, str]:
        """`timestamp = receivedAt - (sentAt - originalTimestamp)` corrects the client's
        clock."""
        original_at = _parse_time(original, "timestamp")
        sent_at = _parse_time(sent, "sentAt")
        received = self.received
        timestamp = received if original_at is None else original_at[0]
        if original_at is not None and sent_at is not None:
            skew = sent_at[0] - original_at[0]
            try:
                # No skew (an event sent as made, as most are): the request's own time and text.
                timestamp = received - skew if skew else received
            except OverflowError:  # a client clock millennia off: the server's is the best guess
                timestamp = received
        return (
            None if original_at is None else original_at[1],
            None if sent_at is None else sent_at[1],
            self.received_text if timestamp is received else utc_text(timestamp),
        )


def add_server_fields(
    event: dict[str, Any], record_type: str, *, source: str, times: Times
) -> None:
    """Add the server-set fields but `context`'s, as Segment does (see `Times`)."""
    event["type"] = record_type
    event.pop("writeKey", None)
    original, sent, timestamp = times.of(event.get("timestamp"), event.get("sentAt", times.sent_at))
    if original is not None:
        event["originalTimestamp"] = original
    if sent is not None:
        event["sentAt"] = sent
    event["timestamp"] = timestamp
    event["receivedAt"] = times.received_text
    event["source"] = source


def server_context(
    sent: Any, ip: str | None, violations: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """The event's `context` as stored: a copy of what the client `sent` (that stays intact
    for dead letters), with the request's address and, in `context.sluice` (Sluice's own),
    the tracking-plan `violations`, if any."""
    context = dict(sent or {})
    context.pop("sluice", None)  # only Sluice writes there
    if violations:
        context["sluice"] = {"violations": violations}
    if ip and "ip" not in context:
        context["ip"] = ip
    return context


def accept(
    items: list[Any],
    *,
    record_type: str | None,
    source: str,
    ip: str | None,
    defaults: Mapping[str, Any] | None = None,
    allowed_types: frozenset[str] | None = None,
    plan: TrackingPlan | None = None,
    reject_violations: bool = False,
    enrichment: Enrichment | None = None,
) -> Parsed:
    """Validate and enrich `items`; `record_type=None` takes each item's own `type` (batch).

    With a `plan`, events that break it are rejected (`reject_violations`) or accepted
    with the violations in `context.sluice.violations`.
    """
    defaults = defaults or {}
    times = Times(datetime.now(UTC), defaults.get("sentAt"))
    parsed = Parsed(received_at=times.received_text)
    # The events that take the batch's own `context` all store the same one when what
    # enriches it reads the context alone: it is made and serialised once per request.
    shares = isinstance(defaults.get("context"), dict) and (
        enrichment is None or enrichment.context_only
    )
    shared: Any = None  # that context as JSON, or _DROPPED when enrichment drops it
    for index, item in enumerate(items):
        try:
            kind = record_type or (item.get("type") if isinstance(item, dict) else None)
            if kind not in RECORD_TYPES:
                raise Invalid(
                    "invalid_type",
                    f"type must be one of {', '.join(RECORD_TYPES)}, got {_clip(kind)}",
                )
            if allowed_types is not None and kind not in allowed_types:
                raise Invalid("type_not_allowed", f"this source does not accept {kind} events")
            event = validate(item, kind)
            if not event.get("messageId"):
                event["messageId"] = derived_message_id(item, source)
            violations = plan.violations(kind, event) if plan is not None else []
            if violations and reject_violations:
                raise Invalid(
                    "tracking_plan_violation",
                    f"{kind} event breaks the tracking plan: "
                    + "; ".join(f"{v['path']}: {v['message']}" for v in violations),
                    violations,
                )
            inherits = shares and "context" not in event and not violations
            if inherits and shared is _DROPPED:
                parsed.dropped += 1
                continue
            reuse = inherits and shared is not None
            for key in _BATCH_DEFAULTS:
                if key in defaults and key not in event and isinstance(defaults[key], dict):
                    event[key] = shared if key == "context" and reuse else dict(defaults[key])
            add_server_fields(event, kind, source=source, times=times)
            if not reuse:
                event["context"] = server_context(event.get("context"), ip, violations)
                if enrichment is not None:
                    enriched = enrichment(event)
                    if enriched is None:
                        parsed.dropped += 1
                        shared = _DROPPED if inherits else shared
                        continue
                    event = enriched
            try:
                payload = orjson.dumps(event)
            except orjson.JSONEncodeError as exc:  # not expected after parse_json; never a 500
                raise Invalid("invalid_event", f"event cannot be stored as JSON: {exc}") from exc
            if len(payload) > MAX_ENRICHED_BYTES:
                raise Invalid(
                    "event_too_large",
                    f"event is {len(payload)} bytes; the limit is {MAX_EVENT_BYTES}",
                )
            if inherits and shared is None:
                shared = orjson.Fragment(orjson.dumps(event["context"]))
        except Invalid as exc:
            parsed.rejected.append(Rejection(index, exc.code, exc.message, item, exc.violations))
            continue
        parsed.by_type.setdefault(kind, []).append(payload)
        parsed.ids.setdefault(kind, []).append(str(event["messageId"]))
    return parsed


RECORD_TYPES = tuple(t.value for t in RecordType)
_DROPPED = object()


def _without_secrets(payload: Any) -> Any:
    # A single event's body carries the write key when it is not in the Basic header.
    if isinstance(payload, dict) and "writeKey" in payload:
        return {k: v for k, v in payload.items() if k != "writeKey"}
    return payload


def deadletters(parsed: Parsed, source: str) -> list[bytes]:
    """The rejected events of a request as dead-letter records (payload and reason)."""
    return [
        orjson.dumps(
            {
                "reason": f"{r.code}: {r.message}",
                "index": r.index,
                "source": source,
                "receivedAt": parsed.received_at,
                "payload": _without_secrets(r.payload),
            }
        )
        for r in parsed.rejected
    ]
