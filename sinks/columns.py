"""From log records to Arrow columns, once per batch: the Parquet schema and the decoder.

Events are decoded in one typed `msgspec` pass over the whole batch, which keeps each
free-form part (`properties`, `traits`, `context`, `integrations`) as the JSON text the
replica wrote, with no decode and re-encode. The enriched columns are read from the
batch's distinct `context` texts only (a page's events, a session's, share theirs), in a
second typed pass, and spread to the events by Arrow. Text columns go to Arrow as they
are (ingress wrote text) and times are parsed in Arrow, once per distinct text.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sinks.base import Batch, joined

_TS = pa.timestamp("us", tz="UTC")
_NULL = pa.scalar(None, pa.string())

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


_LINES = msgspec.json.Decoder(StoredEvent)


class _Named(msgspec.Struct):
    name: str | None = None


class _Device(msgspec.Struct):
    model: str | None = None


class _Location(msgspec.Struct):
    country: str | None = None
    city: str | None = None


class _Campaign(msgspec.Struct):
    source: str | None = None
    medium: str | None = None
    name: str | None = None


class _Referrer(msgspec.Struct):
    medium: str | None = None
    source: str | None = None


class _Context(msgspec.Struct):
    """The places in `context` the enrichers write to, typed as they write them."""

    browser: _Named | None = None
    os: _Named | None = None
    device: _Device | None = None
    bot: bool | None = None
    location: _Location | None = None
    campaign: _Campaign | None = None
    referrer: _Referrer | None = None


class _AnyContext(msgspec.Struct):
    """The same places in any shape: a client may send them too, as anything."""

    browser: Any = None
    os: Any = None
    device: Any = None
    bot: Any = None
    location: Any = None
    campaign: Any = None
    referrer: Any = None


_CONTEXTS = msgspec.json.Decoder(list[_Context | None])
_ANY_CONTEXTS = msgspec.json.Decoder(list[_AnyContext | None])
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


def _text_in(value: Any, key: str) -> str | None:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


class _Enriched:
    """The enriched columns of a batch, read from its distinct `context`s only: most
    events of a batch share theirs with others (a page's events, a user's session)."""

    def __init__(self, contexts: pa.Array) -> None:
        # Arrow finds the distinct texts (an absent context is null, and stays null).
        encoded = contexts.dictionary_encode()
        self.positions = encoded.indices
        distinct = encoded.dictionary
        lists = pa.ListArray.from_arrays(pa.array([0, len(distinct)], pa.int32()), distinct)
        body = pc.binary_join(lists, ",")[0].as_buffer()  # None when there is none
        text = b"[" + (body.to_pybytes() if body is not None else b"") + b"]"
        self.typed = True
        try:
            self.distinct: list[Any] = _CONTEXTS.decode(text)
        except msgspec.ValidationError:  # some client sent one of the places in its own shape
            self.distinct, self.typed = _ANY_CONTEXTS.decode(text), False
        self.places: dict[str, list[Any]] = {}

    def _place(self, place: str) -> list[Any]:
        found = self.places.get(place)
        if found is None:
            get = attrgetter(place)
            found = self.places[place] = [None if c is None else get(c) for c in self.distinct]
        return found

    def column(self, name: str) -> pa.Array:
        if name == "is_bot":
            bots = [b if type(b) is bool else None for b in self._place("bot")]
            values = pa.array(bots, pa.bool_())
        else:
            place, key = _ENRICHED_COLUMNS[name]
            found = self._place(place)
            if self.typed:
                get = attrgetter(key)
                texts = [None if p is None else get(p) for p in found]
            else:
                texts = [_text_in(p, key) for p in found]
            values = pa.array(texts, pa.string())
        return values if len(values) == len(self.positions) else values.take(self.positions)


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
    """A batch's events, from its payloads one per line: the columns' fields (one typed
    pass), and what the enrichers put in their `context`s."""

    def __init__(self, lines: bytes | memoryview, count: int) -> None:
        # Lines, not a JSON array: msgspec decodes them faster, and a batch's column
        # joins into them without a Python object per event (`sinks.base.joined`).
        self.events = _LINES.decode_lines(lines)
        if len(self.events) != count:  # an empty payload, or one with a line break
            raise msgspec.DecodeError(f"{count} payloads gave {len(self.events)} events")
        self.contexts = _json_text([e.context for e in self.events])
        self.enriched = _Enriched(self.contexts)

    def __len__(self) -> int:
        return len(self.events)


def decode(payloads: Sequence[bytes]) -> Decoded:
    """The events of a batch's payloads, in two typed passes (no per-event dicts)."""
    return Decoded(b"\n".join(payloads), len(payloads))


def decode_batch(batch: Batch) -> tuple[Decoded, list[tuple[int, str]]]:
    """`decode_or_split` of a batch, straight from its Arrow column when all is well."""
    events = batch.events.column(0)
    try:
        return Decoded(joined(events, b"\n"), len(events)), []
    except msgspec.MsgspecError:
        return decode_or_split(batch.payloads())


def decode_or_split(payloads: Sequence[bytes]) -> tuple[Decoded, list[tuple[int, str]]]:
    """`decode`, or, when some payload cannot be decoded, the others decoded and the
    positions and reasons of those that cannot (for the dead letters): one bad event
    never holds a batch back."""
    try:
        return decode(payloads), []
    except msgspec.MsgspecError:
        pass
    good: list[bytes] = []
    bad: list[tuple[int, str]] = []
    for index, payload in enumerate(payloads):
        try:
            decode([payload])
        except msgspec.MsgspecError as exc:
            bad.append((index, f"cannot be written as a Parquet row: {exc}"))
        else:
            good.append(payload)
    return decode(good), bad


def _times(texts: pa.Array) -> pa.Array:
    # Parsed once per distinct text: a request's events share receivedAt, most share
    # their timestamp too.
    encoded = texts.dictionary_encode()
    return pc.take(pc.cast(encoded.dictionary, _TS), encoded.indices)


def _json_text(raws: list[msgspec.Raw]) -> pa.Array:
    # Offsets, one joined buffer and a validity bitmap (an absent part is null, and
    # empty): no Python object per value, and the text is never copied again.
    count = len(raws)
    lengths = np.fromiter(map(len, raws), dtype=np.int32, count=count)
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = lengths > 0
    nulls = count - int(np.count_nonzero(present))
    validity = pa.py_buffer(np.packbits(present, bitorder="little")) if nulls else None
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(raws))]
    return pa.Array.from_buffers(pa.string(), count, buffers, null_count=nulls)


def _strings(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.string())  # ingress wrote text: all of it, nearly always
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([_text(v) for v in values], pa.string())


def partitions(decoded: Decoded, table: pa.Table) -> list[tuple[str, str, list[int] | None]]:
    """`(source, receivedAt's hour text, rows)` of each Parquet partition the batch touches,
    sorted; `rows` is None when the whole batch is one (nearly always). Found by Arrow,
    not by a Python step per event; an event with no source goes under `default`."""
    if not len(decoded):
        return []
    source = table.column("source").combine_chunks()
    source = pc.fill_null(pc.if_else(pc.equal(source, ""), "default", source), "default")
    received = pa.array(list(map(attrgetter("receivedAt"), decoded.events)), pa.string())
    hours = pc.utf8_slice_codeunits(received, 0, 13)
    if pc.count_distinct(source).as_py() == 1 and pc.count_distinct(hours).as_py() == 1:
        return [(source[0].as_py(), hours[0].as_py(), None)]
    rows = pa.array(np.arange(len(decoded)))
    keys = pa.table({"source": source, "hour": hours, "row": rows})
    grouped = keys.group_by(["source", "hour"], use_threads=False).aggregate([("row", "list")])
    found = zip(
        grouped["source"].to_pylist(),
        grouped["hour"].to_pylist(),
        grouped["row_list"].to_pylist(),
        strict=True,
    )
    return sorted((s, h, sorted(r)) for s, h, r in found)


def to_table(decoded: Decoded) -> pa.Table:
    """Arrow table with `SCHEMA`."""
    events = decoded.events
    arrays = []
    for field in SCHEMA:
        name = field.name
        if name in _ENRICHED_COLUMNS or name == "is_bot":
            arrays.append(decoded.enriched.column(name))
        elif name in _STRINGS:
            arrays.append(_strings(list(map(attrgetter(_STRINGS[name]), events))))
        elif name in _TIMES:
            texts = _strings(list(map(attrgetter(_TIMES[name]), events)))
            arrays.append(_times(pc.if_else(pc.equal(texts, ""), _NULL, texts)))
        elif name == "context":
            arrays.append(decoded.contexts)
        else:
            arrays.append(_json_text(list(map(attrgetter(name), events))))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)
