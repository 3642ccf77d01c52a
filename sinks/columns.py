"""From log records to Arrow columns, once per batch: the Parquet schema and the decoder.

Events are decoded with one typed `msgspec` pass over the whole batch, which keeps each
free-form part (`properties`, `traits`, `context`, `integrations`) as the JSON text the
replica wrote: no per-event `orjson` decode and re-encode. Times are parsed in Arrow.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import Sequence

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
    ]
)


class StoredEvent(msgspec.Struct):
    """The fields of an enriched event (as ingress wrote it) that become columns."""

    messageId: str | None = None
    type: str | None = None
    event: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    timestamp: str | None = None
    originalTimestamp: str | None = None
    sentAt: str | None = None
    receivedAt: str = ""
    source: str | None = None
    name: str | None = None
    category: str | None = None
    groupId: str | None = None
    previousId: str | None = None
    properties: msgspec.Raw = msgspec.Raw()
    traits: msgspec.Raw = msgspec.Raw()
    context: msgspec.Raw = msgspec.Raw()
    integrations: msgspec.Raw = msgspec.Raw()


_DECODER = msgspec.json.Decoder(list[StoredEvent])
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


def decode(payloads: Sequence[bytes]) -> list[StoredEvent]:
    """The events of a batch's payloads, in one pass."""
    return _DECODER.decode(b"[" + b",".join(payloads) + b"]")


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


def to_table(events: Sequence[StoredEvent]) -> pa.Table:
    """Arrow table with `SCHEMA`."""
    arrays = []
    for field in SCHEMA:
        name = field.name
        if name in _STRINGS:
            key = _STRINGS[name]
            arrays.append(pa.array([getattr(e, key) for e in events], pa.string()))
        elif name in _TIMES:
            key = _TIMES[name]
            arrays.append(_times([getattr(e, key) or None for e in events]))
        else:
            arrays.append(_json_text([getattr(e, name) for e in events]))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)
