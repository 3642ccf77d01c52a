"""From log records to Arrow columns, once per batch: the Parquet schema and the decoder.

Events are decoded with typed `msgspec` passes over the whole batch: one keeps each
free-form part (`properties`, `traits`, `context`, `integrations`) as the JSON text the
replica wrote, with no decode and re-encode; one reads the few places in `context` the
enrichers fill, for their columns. Times are parsed in Arrow.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

_TS = pa.timestamp("us", tz="UTC")

#: Columns of every Parquet file, in order. Free-form parts are JSON text.
SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("type", pa.string()),
        ("event", pa.string()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("timestamp", _TS),
        ("original_timestamp", _TS),
        ("sent_at", _TS),
        ("received_at", _TS),
        ("source", pa.string()),
        ("name", pa.string()),
        ("category", pa.string()),
        ("group_id", pa.string()),
        ("previous_id", pa.string()),
        ("properties", pa.string()),
        ("traits", pa.string()),
        ("context", pa.string()),
        ("integrations", pa.string()),
        # What the enrichers found (ingress/enrich/), also inside `context`; null when unknown.
        ("ua_browser", pa.string()),
        ("ua_os", pa.string()),
        ("ua_device", pa.string()),
        ("is_bot", pa.bool_()),
        ("geo_country", pa.string()),
        ("geo_city", pa.string()),
        ("utm_source", pa.string()),
        ("utm_medium", pa.string()),
        ("utm_campaign", pa.string()),
        ("referrer_medium", pa.string()),
        ("referrer_source", pa.string()),
    ]
)


class StoredEvent(msgspec.Struct):
    """The fields of an enriched event (as ingress wrote it) that become columns. Ingress
    makes ids and times text; a client may still send, say, a number as a screen's
    `event`, so the text columns take any JSON value and `_text` makes it a string."""

    messageId: Any = None
    type: Any = None
    event: Any = None
    userId: Any = None
    anonymousId: Any = None
    timestamp: Any = None
    originalTimestamp: Any = None
    sentAt: Any = None
    receivedAt: str = ""
    source: Any = None
    name: Any = None
    category: Any = None
    groupId: Any = None
    previousId: Any = None
    properties: msgspec.Raw = msgspec.Raw()
    traits: msgspec.Raw = msgspec.Raw()
    context: msgspec.Raw = msgspec.Raw()
    integrations: msgspec.Raw = msgspec.Raw()


_ENCODE = msgspec.json.encode


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    # msgspec, not orjson: JSON integers past 64 bits are valid here too.
    return _ENCODE(value).decode() if isinstance(value, dict | list) else str(value)


_DECODER = msgspec.json.Decoder(list[StoredEvent])


class _Context(msgspec.Struct):
    """The places in `context` the enrichers write to (clients may send them too, in any
    shape: `Any`, checked below)."""

    browser: Any = None
    os: Any = None
    device: Any = None
    bot: Any = None
    location: Any = None
    campaign: Any = None
    referrer: Any = None


class _Enriched(msgspec.Struct):
    context: _Context | None = None


_ENRICHED = msgspec.json.Decoder(list[_Enriched])
#: Column -> (place in context, key there).
_ENRICHED_COLUMNS = {
    "ua_browser": ("browser", "name"),
    "ua_os": ("os", "name"),
    "ua_device": ("device", "model"),
    "geo_country": ("location", "country"),
    "geo_city": ("location", "city"),
    "utm_source": ("campaign", "source"),
    "utm_medium": ("campaign", "medium"),
    "utm_campaign": ("campaign", "name"),
    "referrer_medium": ("referrer", "medium"),
    "referrer_source": ("referrer", "source"),
}


def _text_at(context: _Context | None, place: str, key: str) -> str | None:
    value = getattr(context, place) if context is not None else None
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


_STRINGS = {
    "message_id": "messageId",
    "type": "type",
    "event": "event",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "source": "source",
    "name": "name",
    "category": "category",
    "group_id": "groupId",
    "previous_id": "previousId",
}
_TIMES = {
    "timestamp": "timestamp",
    "original_timestamp": "originalTimestamp",
    "sent_at": "sentAt",
    "received_at": "receivedAt",
}
_JSON = ("properties", "traits", "context", "integrations")


class Decoded:
    """A batch's events: the columns' fields, and what the enrichers put in `context`."""

    def __init__(self, payloads: Sequence[bytes]) -> None:
        text = b"[" + b",".join(payloads) + b"]"
        self.events = _DECODER.decode(text)
        self.contexts = [e.context for e in _ENRICHED.decode(text)]

    def __len__(self) -> int:
        return len(self.events)


def decode(payloads: Sequence[bytes]) -> Decoded:
    """The events of a batch's payloads, in two typed passes (no per-event dicts)."""
    return Decoded(payloads)


def decode_or_split(payloads: Sequence[bytes]) -> tuple[Decoded, list[tuple[int, str]]]:
    """`decode`, or, when some payload cannot be decoded, the others decoded and the
    positions and reasons of those that cannot (for the dead letters): one bad event
    never holds a batch back."""
    try:
        return Decoded(payloads), []
    except msgspec.MsgspecError:
        pass
    good: list[bytes] = []
    bad: list[tuple[int, str]] = []
    for index, payload in enumerate(payloads):
        try:
            Decoded([payload])
        except msgspec.MsgspecError as exc:
            bad.append((index, f"cannot be written as a Parquet row: {exc}"))
        else:
            good.append(payload)
    return Decoded(good), bad


def _times(texts: list[str | None]) -> pa.Array:
    # Parsed once per distinct text: a request's events share receivedAt, most share
    # their timestamp too.
    encoded = pa.array(texts, pa.string()).dictionary_encode()
    return pc.take(pc.cast(encoded.dictionary, _TS), encoded.indices)


def _json_text(raws: list[msgspec.Raw]) -> pa.Array:
    # Offsets and one joined buffer: no Python object per value. An absent part is null.
    offsets = array.array("i", itertools.accumulate(map(len, raws), initial=0))
    data = b"".join(raws)
    text = pa.Array.from_buffers(
        pa.string(), len(raws), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def to_table(decoded: Decoded) -> pa.Table:
    """Arrow table with `SCHEMA`."""
    events, contexts = decoded.events, decoded.contexts
    arrays = []
    for field in SCHEMA:
        name = field.name
        if name in _ENRICHED_COLUMNS:
            place, key = _ENRICHED_COLUMNS[name]
            arrays.append(pa.array([_text_at(c, place, key) for c in contexts], pa.string()))
            continue
        if name == "is_bot":
            bots = [c.bot if c is not None and isinstance(c.bot, bool) else None for c in contexts]
            arrays.append(pa.array(bots, pa.bool_()))
            continue
        if name in _STRINGS:
            key = _STRINGS[name]
            arrays.append(pa.array([_text(getattr(e, key)) for e in events], pa.string()))
        elif name in _TIMES:
            key = _TIMES[name]
            arrays.append(_times([_text(getattr(e, key)) or None for e in events]))
        else:
            arrays.append(_json_text([getattr(e, name) for e in events]))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)
