"""The event model: record types, the Arrow schema of what lands in Parquet, and the
conversion from enriched Segment events (JSON) to Arrow rows.

Kept import-light: it is imported by ingress replicas, actors and sinks alike.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc


class RecordType(enum.StrEnum):
    """The Segment record types; each has its own producer and log."""

    TRACK = "track"
    IDENTIFY = "identify"
    PAGE = "page"
    SCREEN = "screen"
    GROUP = "group"
    ALIAS = "alias"


#: Where events rejected by validation or by a sink are kept, with the reason.
DEADLETTER = "_deadletter"

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

# Column name -> key in the Segment event, for plain string columns.
_STRING_FIELDS = {
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
_TIME_FIELDS = {
    "timestamp": "timestamp",
    "original_timestamp": "originalTimestamp",
    "sent_at": "sentAt",
    "received_at": "receivedAt",
}
_JSON_FIELDS = ("properties", "traits", "context", "integrations")


def partition_key(event: dict[str, Any]) -> str:
    """The key that keeps one user's events in order: userId, else anonymousId, else messageId."""
    for key in ("userId", "anonymousId", "messageId"):
        value = event.get(key)
        if value:
            return str(value)
    return ""


def shard_of(key: str, shards: int) -> int:
    """The shard of a partition key: stable across processes and restarts."""
    return zlib.crc32(key.encode()) % shards if shards > 1 else 0


def log_name(record_type: str, shard: int, shards: int) -> str:
    """Name of a producer's log: `track`, or `track.3` when record types are sharded."""
    return record_type if shards <= 1 else f"{record_type}.{shard}"


def record_type_of(name: str) -> str:
    """The record type of a log name (`track.3` -> `track`)."""
    return name.partition(".")[0]


def hour_partition(received_at: str) -> tuple[str, str]:
    """`("YYYY-MM-DD", "HH")` of a server-written `receivedAt` (always ISO-8601 in UTC)."""
    return received_at[:10], received_at[11:13]


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value)


def to_table(events: Sequence[dict[str, Any]]) -> pa.Table:
    """Arrow table with `SCHEMA` for enriched events (dicts as ingress wrote them)."""
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for event in events:
        for column, key in _STRING_FIELDS.items():
            columns[column].append(_text(event.get(key)))
        for column, key in _TIME_FIELDS.items():
            columns[column].append(event.get(key))
        for column in _JSON_FIELDS:
            value = event.get(column)
            columns[column].append(None if value is None else orjson.dumps(value).decode())
    arrays = []
    for field in SCHEMA:
        if field.name in _TIME_FIELDS:
            # ISO-8601 text parsed in C++; ingress always writes UTC with a "Z".
            text = pa.array(columns[field.name], pa.string())
            arrays.append(pc.cast(text, field.type))
        else:
            arrays.append(pa.array(columns[field.name], field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def decode(payloads: Iterable[bytes]) -> list[dict[str, Any]]:
    """Parse the JSON payloads of a log range."""
    return [orjson.loads(p) for p in payloads]
