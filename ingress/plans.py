"""Tracking plans: JSON Schema documents that say what an event's properties or traits
must look like. Layout of the directory named by `tracking_plans:`:

    track/<Event Name>.json   properties of track events named <Event Name>
    page/<Name>.json          properties of page events named <Name>
    screen/<Name>.json        properties of screen events named <Name>
    identify.json             traits of identify events
    group.json                traits of group events

An event with no schema in the plan is not checked. Schemas are compiled once, when the
replica starts; format keywords (`"format": "email"`) are annotations only.

`jsonschema` (the reference implementation) checks the schemas and words the violations;
`jsonschema_rs` answers "valid?" on the hot path, about a hundred times faster (where the
two would disagree, say on a corner of regex dialects, the fast one's "valid" stands).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema_rs
import orjson
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from core.config import ConfigError

#: Record type -> (the field its schemas validate, whether schemas are per event name).
PLANNED = {
    "track": ("properties", True),
    "page": ("properties", True),
    "screen": ("properties", True),
    "identify": ("traits", False),
    "group": ("traits", False),
}
#: Violations reported per event, and characters per message: an annotation stays small.
MAX_VIOLATIONS = 5
MAX_MESSAGE_CHARS = 200


class _Schema:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.fast = jsonschema_rs.validator_for(schema, validate_formats=False, offline=True)
        self.worded = validator_for(schema)(schema)  # no format_checker: formats not asserted


class TrackingPlan:
    """The compiled schemas of one directory; `violations()` checks one event."""

    def __init__(self, schemas: dict[tuple[str, str], _Schema]) -> None:
        self._schemas = schemas

    @classmethod
    def load(cls, directory: str | Path) -> TrackingPlan:
        """Read and compile every schema under `directory`; a broken one is a `ConfigError`."""
        root = Path(directory)
        return cls.compile(
            (p.relative_to(root).as_posix(), p.read_text()) for p in sorted(root.rglob("*.json"))
        )

    @classmethod
    def compile(cls, files: Iterable[tuple[str, str]]) -> TrackingPlan:
        """Compile `(relative path, JSON text)` pairs (`Config.tracking_plan_files`)."""
        schemas: dict[tuple[str, str], _Schema] = {}
        for relative, text in files:
            key = _plan_key(PurePosixPath(relative))
            if key is None:
                raise ConfigError(
                    f"tracking plan {relative}: not a known place; use track/<Event Name>.json, "
                    "page/<Name>.json, screen/<Name>.json, identify.json or group.json"
                )
            schemas[key] = _compile(relative, text)
        return cls(schemas)

    def violations(self, record_type: str, event: dict[str, Any]) -> list[dict[str, str]]:
        """How `event` breaks its schema: `[{"path": ..., "message": ...}]`, empty if it fits."""
        field, by_name = PLANNED.get(record_type, ("", False))
        if not field:
            return []
        name = event.get("event" if record_type == "track" else "name") if by_name else ""
        schema = self._schemas.get((record_type, name)) if isinstance(name, str) else None
        if schema is None:
            return []
        instance = event.get(field)
        instance = {} if instance is None else instance
        if schema.fast.is_valid(instance):
            return []
        try:
            return [
                {
                    "path": _short(_path(field, error.absolute_path)),
                    "message": _short(error.message),
                }
                for error in itertools.islice(schema.worded.iter_errors(instance), MAX_VIOLATIONS)
            ]
        except Unresolvable as exc:  # a $ref the load-time check could not see
            return [{"path": field, "message": _short(f"the schema cannot be applied: {exc}")}]


def _plan_key(relative: PurePosixPath) -> tuple[str, str] | None:
    parts = relative.parts
    if len(parts) == 1 and relative.stem in PLANNED and not PLANNED[relative.stem][1]:
        return relative.stem, ""
    if len(parts) == 2 and parts[0] in PLANNED and PLANNED[parts[0]][1]:
        return parts[0], relative.stem
    return None


def _compile(path: str, text: str) -> _Schema:
    try:
        schema = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"tracking plan {path}: cannot read it as JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise ConfigError(f"tracking plan {path}: the schema must be a JSON object")
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"tracking plan {path}: not a valid JSON Schema: {exc.message}") from exc
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = Registry().with_resource("urn:plan", resource).resolver("urn:plan")
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)  # no retrieval configured: nothing is fetched
        except Unresolvable as exc:
            raise ConfigError(
                f"tracking plan {path}: $ref {ref!r} does not resolve; only references "
                f"inside the same document (#/$defs/...) are supported ({exc})"
            ) from exc
    try:
        return _Schema(schema)
    except (ValueError, jsonschema_rs.ReferencingError) as exc:  # e.g. a Python-only regex
        raise ConfigError(f"tracking plan {path}: not a usable JSON Schema: {exc}") from exc


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _path(field: str, path: Any) -> str:
    return ".".join([field, *(str(p) for p in path)])


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
