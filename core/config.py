"""Configuration: sinks and their batch policies, sources and their write keys, where
logs live.

Built from a YAML file (`--config`), command-line flags and environment variables, in
that order of precedence from lowest to highest.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from core.model import RecordType

SINK_SCHEMES = ("file", "s3", "kinesis", "webhook+http", "webhook+https")
#: Sink settings besides the batch policy (URI query or the sink's mapping in YAML).
LAYOUTS = ("raw", "tables")
#: What a source does with events that break its tracking plan.
PLAN_MODES = ("off", "warn", "reject")
# Source names become partition directories (`source=NAME`): keep them path-safe.
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# A browser origin, optionally with one leading `*.` for any subdomain.
_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?/?")


class ConfigError(ValueError):
    """A configuration a user wrote that Sluice cannot run with; the message says what to fix."""


@dataclass(frozen=True)
class BatchPolicy:
    """When a producer cuts a batch for a sink: whichever limit is reached first."""

    max_events: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 5.0
    max_in_flight: int = 4  # batches being written at once; commits stay in log order

    @classmethod
    def default_for(cls, scheme: str) -> BatchPolicy:
        """Kinesis and webhooks want low latency; object stores want large files."""
        if scheme.startswith("webhook"):
            # In order per user: one batch at a time, as for Kinesis. Large batches (each
            # goes out as many POSTs) spread the work per batch; `max_age_s` keeps them
            # prompt when few events come.
            return cls(
                max_events=20_000, max_bytes=16 * 1024 * 1024, max_age_s=1.0, max_in_flight=1
            )
        if scheme == "kinesis":
            # One batch at a time: a failed batch retried after a later one landed
            # would put a user's events out of order in their shard.
            return cls(max_events=500, max_bytes=4 * 1024 * 1024, max_age_s=0.2, max_in_flight=1)
        # Files of up to 8 MiB of events, one at a time per log: each batch in flight sits
        # in Ray's object store, whose pages stay resident once touched. At full speed
        # six producers' batches took 105 MiB less than with 16 MiB and two (and 250 MiB
        # more with 64 MiB and four), at the same throughput: one consumer writes them.
        return cls(max_events=100_000, max_bytes=8 * 1024 * 1024, max_age_s=10.0, max_in_flight=1)

    def updated(self, values: dict[str, Any]) -> BatchPolicy:
        """A copy with `max_events`, `max_bytes`, `max_age_s` taken from `values` where given."""
        known = {"max_events": int, "max_bytes": int, "max_age_s": float, "max_in_flight": int}
        unknown = set(values) - set(known)
        if unknown:
            raise ConfigError(
                f"unknown batch policy setting(s) {sorted(unknown)}; use {sorted(known)}"
            )
        try:
            changes = {k: known[k](v) for k, v in values.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"batch policy values must be numbers: {exc}") from exc
        policy = replace(self, **changes)
        if (
            min(policy.max_events, policy.max_bytes, policy.max_in_flight) < 1
            or policy.max_age_s < 0
        ):
            raise ConfigError(f"batch policy limits must be positive, got {policy}")
        return policy


@dataclass(frozen=True)
class SinkFilters:
    """Which events a sink takes; an empty tuple takes every value."""

    types: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: Any) -> SinkFilters:
        known = {"types", "events", "sources"}
        if not isinstance(value, dict) or set(value) - known:
            raise ConfigError(f"filters: a mapping of {sorted(known)} to lists, got {value!r}")
        out = {}
        for key, items in value.items():
            items = [items] if isinstance(items, str) else items
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ConfigError(f"filters.{key} must be a list of names, got {items!r}")
            out[key] = tuple(items)
        return cls(**out)

    def keeps(self, event: dict[str, Any]) -> bool:
        return (
            (not self.types or event.get("type") in self.types)
            and (not self.events or event.get("event") in self.events)
            and (not self.sources or event.get("source") in self.sources)
        )


@dataclass(frozen=True)
class SinkSpec:
    """One destination: `file:///abs/dir`, `s3://bucket/prefix`, `kinesis://stream` or
    `webhook+https://host/path`."""

    uri: str
    policy: BatchPolicy
    consumers: int = 1
    filters: SinkFilters | None = None
    transform: str = ""  # module:function, event in, event (or None: dropped) out
    # False: when the log fills while this sink is behind, its batches are dead-lettered
    # instead of holding the other sinks back with 503s.
    critical: bool = True
    layout: str = "raw"  # file/s3: "tables" adds one typed table per event
    headers: tuple[tuple[str, str], ...] = ()  # webhook: sent with every POST
    max_columns: int = 500  # typed tables: columns per table; more keys go to `_rejected`
    timeout_s: float = 10.0  # webhook: per request
    post_events: int = 500  # webhook: events per POST (a batch goes out as several)
    post_bytes: int = 500 * 1024  # webhook: bytes of JSON per POST
    post_lanes: int = 4  # webhook: POSTs at once, each lane a share of the users in order

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme

    @property
    def sink_id(self) -> str:
        """Stable name of this sink's cursor in every producer's log."""
        digest = hashlib.sha1(self.uri.encode()).hexdigest()[:10]
        return f"{self.scheme}-{digest}"

    @property
    def location(self) -> tuple[str, str]:
        """`(netloc, path)` of the URI without its query string."""
        parts = urlsplit(self.uri)
        return parts.netloc, parts.path

    @classmethod
    def parse(cls, text: str, base_dir: Path, options: dict[str, Any] | None = None) -> SinkSpec:
        """Parse a sink URI; query parameters (`?max_events=500`) set its batch policy."""
        parts = urlsplit(text)
        if parts.scheme not in SINK_SCHEMES:
            raise ConfigError(
                f"sink {text!r}: scheme must be one of {', '.join(SINK_SCHEMES)} "
                "(for example file://./data, s3://bucket/prefix, kinesis://stream)"
            )
        values: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        values.update(options or {})
        consumers = int(values.pop("consumers", 1))
        extra = _sink_settings(text, parts.scheme, values)
        policy = BatchPolicy.default_for(parts.scheme).updated(values)
        if parts.scheme == "file":
            # file://./rel and file://rel are relative to where `sluice serve` started.
            raw = parts.netloc + parts.path
            path = Path(raw) if raw.startswith("/") else (base_dir / raw)
            uri = "file://" + str(path.resolve())
        else:
            if not parts.netloc:
                raise ConfigError(f"sink {text!r}: name the bucket or stream after '//'")
            uri = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        return cls(uri=uri, policy=policy, consumers=max(1, consumers), **extra)


def _sink_settings(text: str, scheme: str, values: dict[str, Any]) -> dict[str, Any]:
    """Take the settings of a sink that are not its batch policy out of `values`."""
    extra: dict[str, Any] = {}
    if "filters" in values:
        extra["filters"] = SinkFilters.parse(values.pop("filters"))
    if "transform" in values:
        transform = values.pop("transform")
        if not isinstance(transform, str) or ":" not in transform:
            raise ConfigError(f"sink {text!r}: transform must be module:function")
        extra["transform"] = transform
    if "critical" in values:
        critical = values.pop("critical")
        if isinstance(critical, str):
            critical = critical.lower() not in ("false", "0", "no")
        extra["critical"] = bool(critical)
    if "layout" in values:
        layout = values.pop("layout")
        if layout not in LAYOUTS or scheme not in ("file", "s3"):
            raise ConfigError(f"sink {text!r}: layout is raw or tables, on file:// and s3:// sinks")
        extra["layout"] = layout
    if "headers" in values:
        headers = values.pop("headers")
        if not isinstance(headers, dict) or not scheme.startswith("webhook"):
            raise ConfigError(f"sink {text!r}: headers is a mapping, for webhook sinks")
        extra["headers"] = tuple((str(k), str(v)) for k, v in headers.items())
    if "max_columns" in values:
        extra["max_columns"] = int(values.pop("max_columns"))
    for name in ("post_events", "post_bytes", "post_lanes"):
        if name in values:
            extra[name] = int(values.pop(name))
            if extra[name] < 1 or not scheme.startswith("webhook"):
                raise ConfigError(f"sink {text!r}: {name} is a positive number, for webhooks")
    if "timeout_s" in values:
        extra["timeout_s"] = float(values.pop("timeout_s"))
    return extra


@dataclass(frozen=True)
class WriteKey:
    """A write key and the source whose events it sends."""

    key: str
    source: str = "default"

    @classmethod
    def parse(cls, text: str) -> WriteKey:
        """`KEY` or `KEY:SOURCE`."""
        key, _, source = text.partition(":")
        if not key:
            raise ConfigError(f"write key {text!r} is empty; use KEY or KEY:SOURCE")
        return cls(key=key, source=_source_name(source or "default"))


def _source_name(name: Any) -> str:
    if not isinstance(name, str) or not _SOURCE_NAME.fullmatch(name):
        raise ConfigError(
            f"source name {name!r} must be 1-100 letters, digits, '_', '.' or '-' "
            "(it names a directory: source=NAME)"
        )
    return name


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `events_per_s` on average, up to `burst` events at once."""

    events_per_s: float
    burst: float

    @classmethod
    def parse(cls, value: Any, source: str) -> RateLimit:
        """`{events_per_s: N, burst: M}` (burst defaults to one second's worth) or just `N`."""
        values = value if isinstance(value, dict) else {"events_per_s": value}
        unknown = set(values) - {"events_per_s", "burst"}
        if unknown:
            raise ConfigError(
                f"source {source}: unknown rate_limit setting(s) {sorted(unknown)}; "
                "use events_per_s and burst"
            )
        try:
            rate = float(values["events_per_s"])
            burst = float(values.get("burst", max(rate, 1.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"source {source}: rate_limit needs numbers, e.g. "
                f"{{events_per_s: 100, burst: 500}} ({exc})"
            ) from exc
        if not rate > 0 or not burst >= 1:
            raise ConfigError(
                f"source {source}: rate_limit needs events_per_s > 0 and burst >= 1, "
                f"got {rate} and {burst}"
            )
        return cls(events_per_s=rate, burst=burst)


@dataclass(frozen=True)
class Source:
    """Where events come from (a site, an app): its rules. Its keys are in `Config.write_keys`."""

    name: str
    record_types: tuple[str, ...] = ()  # the types it may send; empty: every type
    rate_limit: RateLimit | None = None  # None: unlimited
    tracking_plan: str = "off"  # off | warn | reject
    # Browser origins that may send for it (`https://shop.example`, `https://*.example`);
    # empty: any origin, as at Segment, where write keys are public in web pages.
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def parse(cls, item: Any) -> tuple[Source, list[WriteKey]]:
        """One entry of the YAML `sources:` list, and the write keys it names."""
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"sources: each entry is a mapping with a 'name', got {item!r}")
        name = _source_name(item["name"])
        known = {
            "name",
            "write_keys",
            "record_types",
            "rate_limit",
            "tracking_plan",
            "allowed_origins",
        }
        unknown = set(item) - known
        if unknown:
            raise ConfigError(
                f"source {name}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        raw_keys = item.get("write_keys") or []
        raw_keys = [raw_keys] if isinstance(raw_keys, str) else raw_keys
        if not isinstance(raw_keys, list) or not all(isinstance(k, str) and k for k in raw_keys):
            raise ConfigError(f"source {name}: write_keys must be a list of non-empty strings")
        types = item.get("record_types") or []
        all_types = [t.value for t in RecordType]
        if not isinstance(types, list) or not set(types) <= set(all_types):
            raise ConfigError(
                f"source {name}: record_types must be a list of {', '.join(all_types)}, "
                f"got {types!r}"
            )
        mode = item.get("tracking_plan", "off")
        mode = "off" if mode is False else mode  # YAML reads a bare `off` as false
        if mode not in PLAN_MODES:
            raise ConfigError(
                f"source {name}: tracking_plan must be one of {', '.join(PLAN_MODES)}, got {mode!r}"
            )
        origins = item.get("allowed_origins") or []
        origins = [origins] if isinstance(origins, str) else origins
        if not isinstance(origins, list) or not all(
            isinstance(o, str) and _ORIGIN.fullmatch(o) for o in origins
        ):
            raise ConfigError(
                f"source {name}: allowed_origins must be a list of origins such as "
                f"https://shop.example or https://*.example.com, got {origins!r}"
            )
        limit = item.get("rate_limit")
        source = cls(
            name=name,
            record_types=tuple(types),
            rate_limit=None if limit is None else RateLimit.parse(limit, name),
            tracking_plan=mode,
            allowed_origins=tuple(o.rstrip("/").lower() for o in origins),
        )
        return source, [WriteKey(key=k, source=name) for k in raw_keys]


@dataclass(frozen=True)
class Config:
    """Everything `sluice serve` needs; passed whole to the supervisor and ingress."""

    host: str = "127.0.0.1"
    port: int = 8000
    sinks: tuple[SinkSpec, ...] = ()
    write_keys: tuple[WriteKey, ...] = ()
    sources: tuple[Source, ...] = ()  # one per source a write key names
    tracking_plans: str = ""  # directory of JSON Schema documents; see README
    # Its *.json files as (relative path, text), read once so they travel to every replica.
    tracking_plan_files: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    body_timeout_s: float = 10.0  # a request body slower than this gets 408 (slowloris)
    # Where browsers reach this Sluice (`https://collect.example.com`), for the settings
    # analytics.js loads; empty: the scheme and host each settings request came to.
    public_url: str = ""
    # Enrichers in order: built-in names or module:function; None: the defaults
    # (ingress/enrich/__init__.py). geoip_db: a MaxMind .mmdb; empty: offline countries.
    enrich: tuple[str, ...] | None = None
    geoip_db: str = ""
    geoip_ip: str = "keep"  # keep | truncate | drop, after the lookup
    bots: str = "flag"  # flag | drop events from crawlers
    log_dir: str = ""  # may hold `{node}`: the Ray node id, for nodes sharing one disk
    log_capacity_bytes: int = 512 * 1024 * 1024
    segment_bytes: int = 16 * 1024 * 1024
    fsync: bool | None = None  # None: fsync when the log is not in shared memory
    ingress_replicas: int | None = None  # None: one per core of the machine running `serve`
    max_replicas_per_node: int | None = None  # 1 with ingress_replicas = nodes: one per node
    ws_max_in_flight: int = 256  # JSON-RPC frames of one WebSocket being stored at once
    # The debugger page and traces; admin_token guards them (empty: one made at start).
    debugger: bool = True
    admin_token: str = ""
    trace_bytes: int = 16 * 1024 * 1024  # recent batches kept per log for traces
    # A messageId seen from the same source within this many seconds is answered 200 and
    # not stored again (0: off); a window holds up to dedup_capacity ids (ingress/dedup.py).
    dedup_window: float = 86_400.0
    dedup_capacity: int = 10_000_000
    generated_key: bool = field(default=False, compare=False)
    generated_admin_token: bool = field(default=False, compare=False)

    @property
    def log_path(self) -> Path:
        """The log directory as configured (before `{node}` is filled in)."""
        return Path(self.log_dir or f"/dev/shm/sluice/{self.port}")

    def node_log_path(self, node_id: str) -> Path:
        """The log directory on node `node_id`: replicas there write under it, its producers
        read there."""
        return Path(str(self.log_path).replace("{node}", node_id[:12]))

    @property
    def replicas(self) -> int:
        """Ingress replicas to run: as configured, else one per core."""
        return self.ingress_replicas or max(1, os.cpu_count() or 1)

    @property
    def deadletter_sink(self) -> SinkSpec | None:
        """The first file or S3 sink: dead letters go under its `_deadletter/`."""
        for spec in self.sinks:
            if spec.scheme in ("file", "s3"):
                return spec
        return None

    def source(self, name: str) -> Source:
        """The rules of source `name` (defaults when the config does not list it)."""
        for source in self.sources:
            if source.name == name:
                return source
        return Source(name=name)

    def should_fsync(self) -> bool:
        if self.fsync is not None:
            return self.fsync
        return not str(self.log_path.resolve()).startswith("/dev/shm")


# Numeric settings: (integers only, smallest allowed value, whether it may equal it).
_NUMBERS: dict[str, tuple[bool, float, bool]] = {
    "body_timeout_s": (False, 0, False),
    "log_capacity_bytes": (True, 1, True),
    "segment_bytes": (True, 1, True),
    "ingress_replicas": (True, 1, True),
    "max_replicas_per_node": (True, 1, True),
    "ws_max_in_flight": (True, 1, True),
    "trace_bytes": (True, 0, True),
    "dedup_window": (False, 0, True),
    "dedup_capacity": (True, 1, True),
}


def _check_numbers(settings: dict[str, Any]) -> None:
    """Refuse a numeric setting of the wrong kind or range now, not in a replica later."""
    for name, (integer, least, inclusive) in _NUMBERS.items():
        optional = Config.__dataclass_fields__[name].default is None
        if name not in settings or (optional and settings[name] is None):
            continue
        value = settings[name]
        kinds = int if integer else int | float
        number = not isinstance(value, bool) and isinstance(value, kinds)
        if not number or not (value >= least if inclusive else value > least):
            kind = "a whole number" if integer else "a number"
            bound = f">= {least:g}" if inclusive else f"> {least:g}"
            raise ConfigError(f"{name} must be {kind} {bound}, got {value!r}")


def _check_enrichment(settings: dict[str, Any], base: Path) -> None:
    enrich = settings.get("enrich")
    if enrich is not None:
        if not isinstance(enrich, list) or not all(isinstance(e, str) and e for e in enrich):
            raise ConfigError(
                "enrich must be a list of enricher names (useragent, campaign, referrer, bot, "
                f"geoip) or module:function, got {enrich!r}"
            )
        settings["enrich"] = tuple(enrich)
    if settings.get("geoip_db"):
        settings["geoip_db"] = str((base / str(settings["geoip_db"])).resolve())
    for name, choices in (("geoip_ip", ("keep", "truncate", "drop")), ("bots", ("flag", "drop"))):
        if name in settings and settings[name] not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {settings[name]!r}")


def load(
    config_file: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    sinks: list[str] | None = None,
    write_keys: list[str] | None = None,
    log_dir: str | None = None,
    admin_token: str | None = None,
    base_dir: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Merge the YAML file, flags and `SLUICE_WRITE_KEYS` into a `Config`."""
    env = os.environ if environ is None else environ
    base = (base_dir or Path.cwd()).resolve()
    data: dict[str, Any] = {}
    if config_file:
        try:
            data = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping at the top level")

    sink_specs: list[SinkSpec] = []
    if sinks:
        sink_specs = [SinkSpec.parse(s, base) for s in sinks]
    else:
        for item in data.get("sinks") or []:
            if isinstance(item, str):
                sink_specs.append(SinkSpec.parse(item, base))
            elif isinstance(item, dict) and "uri" in item:
                options = {k: v for k, v in item.items() if k != "uri"}
                options.update(options.pop("batch", None) or {})
                sink_specs.append(SinkSpec.parse(item["uri"], base, options))
            else:
                raise ConfigError(
                    f"sinks: each entry is a URI or a mapping with 'uri', got {item!r}"
                )
    if not sink_specs:
        sink_specs = [SinkSpec.parse("file://./data", base)]
    if len({s.uri for s in sink_specs}) != len(sink_specs):
        raise ConfigError("the same sink URI is given twice")

    keys = [WriteKey.parse(k) for k in write_keys or []]
    keys += [WriteKey.parse(k) for k in env.get("SLUICE_WRITE_KEYS", "").split(",") if k.strip()]
    for item in data.get("write_keys") or []:
        keys.append(WriteKey.parse(item) if isinstance(item, str) else WriteKey(**item))
    sources: dict[str, Source] = {}
    for item in data.get("sources") or []:
        source, source_keys = Source.parse(item)
        if source.name in sources:
            raise ConfigError(f"sources: {source.name} is listed twice")
        sources[source.name] = source
        keys += source_keys
    generated = not keys
    if generated:
        keys = [WriteKey(key=secrets.token_urlsafe(18))]
    keys = list(dict.fromkeys(keys))
    owners: dict[str, str] = {}
    for k in keys:
        if owners.setdefault(k.key, k.source) != k.source:
            raise ConfigError(
                f"a write key is given to both {owners[k.key]} and {k.source}; "
                "each key sends for one source"
            )
        sources.setdefault(k.source, Source(name=k.source))
    for source in sources.values():
        if source.name not in owners.values():
            raise ConfigError(
                f"source {source.name} has no write key; add write_keys to it "
                f"(or pass --write-key KEY:{source.name})"
            )
    plans_dir = data.get("tracking_plans") or ""
    plan_files: list[tuple[str, str]] = []
    if plans_dir:
        root = (base / str(plans_dir)).resolve()
        plans_dir = str(root)
        if not root.is_dir():
            raise ConfigError(f"tracking_plans: {plans_dir} is not a directory")
        try:
            for path in sorted(root.rglob("*.json")):
                plan_files.append((path.relative_to(root).as_posix(), path.read_text()))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"tracking_plans: cannot read {plans_dir}: {exc}") from exc
    strict = [s.name for s in sources.values() if s.tracking_plan != "off"]
    if strict and not plans_dir:
        raise ConfigError(
            f"source(s) {', '.join(strict)} check a tracking plan: set tracking_plans: DIR"
        )

    merged = ("sinks", "write_keys", "sources", "tracking_plans")
    internal = ("generated_key", "generated_admin_token", "tracking_plan_files")
    known = {f for f in Config.__dataclass_fields__ if f not in merged + internal}
    unknown = set(data) - known - set(merged)
    if unknown:
        raise ConfigError(
            f"unknown config setting(s) {sorted(unknown)}; known: {sorted(known | set(merged))}"
        )
    settings = {k: v for k, v in data.items() if k in known}
    _check_numbers(settings)
    _check_enrichment(settings, base)
    config = Config(**settings)
    token = admin_token or env.get("SLUICE_ADMIN_TOKEN") or config.admin_token
    if not isinstance(token, str):
        raise ConfigError(f"admin_token must be a string, got {token!r}")
    if token and any(token == k.key for k in keys):
        raise ConfigError("admin_token is also a write key; give the debugger a token of its own")
    generated_token = config.debugger and not token
    if generated_token:
        token = secrets.token_urlsafe(18)
    if not isinstance(config.debugger, bool):
        raise ConfigError(f"debugger must be true or false, got {config.debugger!r}")
    chosen_log_dir = log_dir or config.log_dir
    if chosen_log_dir:
        chosen_log_dir = str((base / chosen_log_dir).resolve())
    return replace(
        config,
        host=host or config.host,
        port=int(port if port is not None else config.port),
        sinks=tuple(sink_specs),
        write_keys=tuple(keys),
        sources=tuple(sources.values()),
        tracking_plans=plans_dir,
        tracking_plan_files=tuple(plan_files),
        log_dir=chosen_log_dir,
        generated_key=generated,
        admin_token=token,
        generated_admin_token=generated_token,
    )
