"""Typed tables: one Parquet table per event, one typed column per property.

`?layout=tables` on a file or S3 sink writes, beside the raw tree,
`{prefix}/tables/{source}/{table}/dt=YYYY-MM-DD/{batch-id}.parquet`, where `table` is
the snake_cased event name of a track event (`Order Completed` -> `order_completed`) and
`identifies`, `pages`, `screens`, `groups`, `aliases` for the other types, as Segment's
warehouses name them.

Columns: the common fields, then each top-level property (track, page, screen) or trait
(identify, group) as a column of its own, nested objects flattened one level with `_`
(`address.city` -> `address_city`; deeper values and arrays as JSON text). Names are
snake_cased and made safe; a name taken already (by a common field or another key) gets
`_2`, `_3`, ... in the order keys were first seen, and keeps it.

Each table has a registry, `_schema.json` beside its partitions, that only ever widens:
a new key adds a column with the type its values have (bool, int64, float64, timestamp
for ISO-8601 text, string, json); int64 widens to float64; a value that cannot be stored
in its column's type (text where a number was) stays with its event in the `_rejected`
JSON column, and is counted. Past `max_columns` the remaining keys go there too. The
registry is updated under a lock on local disks, and read back after writing on S3, so
concurrent consumers do not lose a column.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs

from core import model
from sinks.base import write_parquet

TABLE_OF_TYPE = {
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
_TS = pa.timestamp("us", tz="UTC")
_TYPES = {
    "bool": pa.bool_(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "timestamp": _TS,
    "string": pa.string(),
    "json": pa.string(),
}
#: Common columns: name -> (event field, type).
COMMON = {
    "message_id": ("messageId", "string"),
    "type": ("type", "string"),
    "event": ("event", "string"),
    "user_id": ("userId", "string"),
    "anonymous_id": ("anonymousId", "string"),
    "timestamp": ("timestamp", "timestamp"),
    "sent_at": ("sentAt", "timestamp"),
    "received_at": ("receivedAt", "timestamp"),
    "source": ("source", "string"),
    "name": ("name", "string"),
    "category": ("category", "string"),
    "group_id": ("groupId", "string"),
    "previous_id": ("previousId", "string"),
    "context": ("context", "json"),
}
REJECTED = "_rejected"
REGISTRY = "_schema.json"
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?")
_UNSAFE = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake(name: str) -> str:
    """`Order Completed` -> `order_completed`; `firstName` -> `first_name`; safe as a
    column, table or directory name."""
    text = _UNSAFE.sub("_", _CAMEL.sub("_", name).lower()).strip("_")[:120] or "unnamed"
    return f"_{text}" if text[0].isdigit() else text


def table_name(event: dict[str, Any]) -> str:
    kind = str(event.get("type"))
    if kind == "track":
        return snake(str(event.get("event") or "unnamed_event"))
    return TABLE_OF_TYPE.get(kind, snake(kind))


def kind_of(value: Any) -> str | None:
    """The column type a value asks for (None: null, fits any)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if -(2**63) <= value < 2**63 else "string"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "timestamp" if len(value) <= 40 and _ISO.fullmatch(value) else "string"
    return "json"


_WIDER = {("int64", "float64"), ("timestamp", "string")}  # ISO text is text too


def fits(kind: str | None, column: str) -> bool:
    """Whether a value of `kind` can be stored in a column of type `column`."""
    return kind is None or kind == column or column == "json" or (kind, column) in _WIDER


def _free_form(event: dict[str, Any]) -> dict[str, Any]:
    part = (
        event.get("traits")
        if event.get("type") in ("identify", "group")
        else event.get("properties")
    )
    return part if isinstance(part, dict) else {}


def flattened(event: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(key path, value) of each property or trait, nested objects one level down."""
    for key, value in _free_form(event).items():
        if isinstance(value, dict) and value:
            for inner, item in value.items():
                yield f"{key}.{inner}", item
        else:
            yield key, value


class Registry:
    """One table's columns: key path -> column name, column name -> type."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.paths: dict[str, str] = dict(data.get("paths", {}))
        self.types: dict[str, str] = dict(data.get("types", {}))

    def to_json(self) -> bytes:
        return orjson.dumps({"paths": self.paths, "types": self.types}, option=orjson.OPT_INDENT_2)

    def merged(self, other: Registry) -> Registry:
        """Both registries' columns; a type widened if either widened it."""
        out = Registry({"paths": self.paths, "types": self.types})
        for path, name in other.paths.items():
            out.paths.setdefault(path, name)
        for name, kind in other.types.items():
            mine = out.types.get(name)
            if mine is None or (mine, kind) == ("int64", "float64"):
                out.types[name] = kind
        return out

    def column_for(self, path: str, limit: int) -> str | None:
        """The column of key `path`, added if new (None: past `limit` columns)."""
        name = self.paths.get(path)
        if name is not None:
            return name
        if len(self.paths) >= limit:
            return None
        base = snake(path.replace(".", "_"))
        taken = set(self.paths.values()) | set(COMMON) | {REJECTED}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        self.paths[path] = name
        return name


class TableWriter:
    """Writes the typed tables of a file or S3 sink (`root` is the sink's prefix)."""

    def __init__(self, fs: pafs.FileSystem, root: str, max_columns: int = 500) -> None:
        self.fs = fs
        self.root = f"{root}/tables"
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self.max_columns = max_columns

    def write(self, batch_id: str, events: list[dict[str, Any]]) -> tuple[list[str], int]:
        """Write `events` into their tables: the keys written and the values rejected."""
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            day, _ = model.hour_partition(str(event.get("receivedAt", ""))[:13])
            groups[(str(event.get("source") or "default"), table_name(event), day)].append(event)
        keys, rejected = [], 0
        for (source, table, day), rows in sorted(groups.items()):
            directory = f"{self.root}/{snake(source)}/{table}"
            registry = self._update_registry(directory, rows)
            data, count = self._table(registry, rows)
            rejected += count
            key = f"{directory}/dt={day}/{batch_id}.parquet"
            write_parquet(self.fs, key, data)
            keys.append(key)
        return keys, rejected

    # -- the registry --------------------------------------------------------------

    def _proposal(self, registry: Registry, rows: list[dict[str, Any]]) -> Registry:
        """`registry` with the columns and widenings these rows ask for."""
        proposed = Registry({"paths": registry.paths, "types": registry.types})
        kinds: dict[str, list[str]] = defaultdict(list)
        for event in rows:
            for path, value in flattened(event):
                name = proposed.column_for(path, self.max_columns)
                kind = kind_of(value)
                if name is not None and kind is not None:
                    kinds[name].append(kind)
        for name, seen in kinds.items():
            current = proposed.types.get(name)
            if current is None:
                distinct = set(seen)
                proposed.types[name] = "float64" if distinct == {"int64", "float64"} else seen[0]
            elif current == "int64" and "float64" in seen:
                proposed.types[name] = "float64"
        return proposed

    def _update_registry(self, directory: str, rows: list[dict[str, Any]]) -> Registry:
        path = f"{directory}/{REGISTRY}"
        if self.local:
            self.fs.create_dir(directory, recursive=True)
            with open(f"{directory}/.{REGISTRY}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                registry = self._proposal(self._read(path), rows)
                self._write_registry(path, registry)
                return registry
        for _ in range(5):  # S3: no lock; write, read back, merge again if someone else wrote
            registry = self._proposal(self._read(path), rows)
            self._write_registry(path, registry)
            stored = self._read(path)
            if stored.paths == registry.paths and stored.types == registry.types:
                return registry
        return registry.merged(self._read(path))

    def _read(self, path: str) -> Registry:
        try:
            with self.fs.open_input_stream(path) as f:
                return Registry(orjson.loads(f.read()))
        except (FileNotFoundError, OSError, orjson.JSONDecodeError):
            return Registry()

    def _write_registry(self, path: str, registry: Registry) -> None:
        if not self.local:
            with self.fs.open_output_stream(path) as out:
                out.write(registry.to_json())
            return
        tmp = f"{path}.tmp"
        with self.fs.open_output_stream(tmp) as out:
            out.write(registry.to_json())
        self.fs.move(tmp, path)

    # -- the rows ------------------------------------------------------------------

    def _table(self, registry: Registry, rows: list[dict[str, Any]]) -> tuple[pa.Table, int]:
        columns: dict[str, list[Any]] = {name: [] for name in COMMON}
        used = sorted(
            {registry.paths[p] for e in rows for p, _ in flattened(e) if p in registry.paths}
        )
        for name in used:
            columns[name] = []
        columns[REJECTED] = []
        rejected_count = 0
        for event in rows:
            for name, (field, kind) in COMMON.items():
                columns[name].append(_cell(event.get(field), kind))
            values: dict[str, Any] = {}
            rejected: dict[str, Any] = {}
            for path, value in flattened(event):
                key_column = registry.paths.get(path)
                column = registry.types.get(key_column) if key_column else None
                if (
                    key_column is None
                    or (column is None and value is not None)
                    or (column is not None and not fits(kind_of(value), column))
                ):
                    rejected[path] = value
                elif column is not None:
                    values[key_column] = _cell(value, column)
            for name in used:
                columns[name].append(values.get(name))
            rejected_count += len(rejected)
            columns[REJECTED].append(orjson.dumps(rejected).decode() if rejected else None)
        kinds = {name: kind for name, (_, kind) in COMMON.items()}
        kinds.update({name: registry.types.get(name, "string") for name in used})
        kinds[REJECTED] = "json"
        arrays = [pa.array(values, type=_TYPES[kinds[name]]) for name, values in columns.items()]
        return pa.table(arrays, names=list(columns)), rejected_count


def _cell(value: Any, kind: str) -> Any:
    """`value` as Arrow takes it for a column of `kind` (it fits: see `fits`)."""
    if value is None:
        return None
    if kind == "json":
        return orjson.dumps(value).decode()
    if kind == "timestamp":
        with contextlib.suppress(ValueError, TypeError):
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return None
    if kind == "float64":
        return float(value)
    if kind == "string" and not isinstance(value, str):
        return str(value)
    return value
