"""End to end: the real `sluice serve`, Segment's own Python library and plain HTTP, a
clean stop, and the Parquet tree read back. Error cases run against the same service.

The tests in this module run in order: the last one stops the service and reads back
everything the earlier ones had answered 200.
"""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pyarrow.dataset as ds
import pytest
import segment.analytics as segment_analytics

from tests.service import WRITE_KEY, Service

ALL_TYPES = ("track", "identify", "page", "screen", "group", "alias")
#: message id -> (type, source) of every event answered 200 in this module.
ACKED: dict[str, tuple[str, str]] = {}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("e2e")
    svc = Service(workdir, write_keys=[f"{WRITE_KEY}:web", "mobile-key:ios"]).start()
    yield svc
    svc.kill()


def one_of_each(prefix: str) -> list[dict[str, object]]:
    base = {"userId": f"{prefix}-user"}
    extra = {
        "track": {"event": "Order Completed", "properties": {"revenue": 9.5, "items": [1, 2]}},
        "identify": {"traits": {"email": "a@example.com"}},
        "page": {"name": "Home", "category": "Docs", "properties": {"path": "/"}},
        "screen": {"name": "Settings"},
        "group": {"groupId": "acme", "traits": {"plan": "pro"}},
        "alias": {"previousId": f"{prefix}-anon"},
    }
    return [
        {"type": t, "messageId": f"{prefix}-{t}-{uuid.uuid4()}", **base, **extra[t]}
        for t in ALL_TYPES
    ]


def assert_still_serving(service: Service) -> None:
    with service.client() as client:
        event = {"userId": "after-error", "event": "Still Here", "messageId": str(uuid.uuid4())}
        answer = client.post("/v1/track", json=event)
        assert answer.status_code == 200, answer.text
        ACKED[event["messageId"]] = ("track", "web")
        assert client.get("/health").status_code == 200


def test_segment_python_library_every_type(service: Service) -> None:
    client = segment_analytics.Client(
        WRITE_KEY, host=service.url, sync_mode=True, max_retries=1, gzip=True
    )
    errors: list[Exception] = []
    client.on_error = lambda error, _items: errors.append(error)
    ids = {}
    ids["track"] = client.track("lib-user", "Signed Up", {"plan": "pro"}, message_id="lib-track-1")[
        1
    ]
    ids["identify"] = client.identify(
        "lib-user", {"email": "x@example.com"}, message_id="lib-identify-1"
    )[1]
    ids["page"] = client.page(
        "lib-user", "Docs", "Install", {"path": "/install"}, message_id="lib-page-1"
    )[1]
    ids["screen"] = client.screen("lib-user", "App", "Home", message_id="lib-screen-1")[1]
    ids["group"] = client.group("lib-user", "acme", {"plan": "pro"}, message_id="lib-group-1")[1]
    ids["alias"] = client.alias("old-anon", "lib-user", message_id="lib-alias-1")[1]
    client.flush()
    assert errors == []
    for kind, message in ids.items():
        ACKED[message["messageId"]] = (kind, "web")


def test_plain_http_single_endpoints_batch_import_and_gzip(service: Service) -> None:
    with service.client() as client:
        for event in one_of_each("single"):
            kind = str(event.pop("type"))
            answer = client.post(f"/v1/{kind}", json=event)
            assert answer.status_code == 200 and answer.json() == {"success": True}
            ACKED[str(event["messageId"])] = (kind, "web")
        batch = one_of_each("batch")
        assert client.post("/v1/batch", json={"batch": batch}).json() == {"success": True}
        imported = one_of_each("import")
        assert client.post("/v1/import", json={"batch": imported}).status_code == 200
        zipped = one_of_each("gzip")
        answer = client.post(
            "/v1/batch",
            content=gzip.compress(orjson.dumps({"batch": zipped})),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        for event in batch + imported + zipped:
            ACKED[str(event["messageId"])] = (str(event["type"]), "web")
    # Write key in the body instead of Basic auth, for another source.
    with service.client(auth=None) as client:
        event = {
            "userId": "m",
            "event": "Opened",
            "messageId": "body-key-1",
            "writeKey": "mobile-key",
        }
        assert client.post("/v1/track", json=event).status_code == 200
        ACKED["body-key-1"] = ("track", "ios")


def test_batch_with_invalid_events_accepts_the_valid_ones(service: Service) -> None:
    good = {"type": "track", "userId": "u", "event": "Good", "messageId": "partial-good"}
    bad = {"type": "track", "userId": "u", "messageId": "partial-bad"}  # no event name
    # One producer per record type; the dead letters' starts with the first one.
    assert len(service.processes("ray::Producer")) == 6
    with service.client() as client:
        answer = client.post("/v1/batch", json={"batch": [bad, good]})
    assert answer.status_code == 200
    deadline = time.monotonic() + 60
    while len(service.processes("ray::Producer")) < 7:
        assert time.monotonic() < deadline, "no dead-letter producer started"
        time.sleep(0.3)
    body = answer.json()
    assert body["success"] is True
    assert [r["index"] for r in body["rejected"]] == [0]
    assert body["rejected"][0]["code"] == "missing_field"
    ACKED["partial-good"] = ("track", "web")


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("wrong key", 401, "invalid_write_key"),
        ("no key", 401, "missing_write_key"),
        ("bad json", 400, "invalid_json"),
        ("oversize event", 413, "payload_too_large"),
        ("oversize batch", 413, "payload_too_large"),
        ("too many events", 400, "too_many_events"),
        ("missing userId", 400, "missing_field"),
        ("missing event name", 400, "missing_field"),
        ("missing groupId", 400, "missing_field"),
        ("missing previousId", 400, "missing_field"),
        ("wrong content type", 415, "unsupported_media_type"),
        ("gzip bomb", 413, "payload_too_large"),
        ("unknown path", 404, "not_found"),
    ],
)
def test_errors_are_json_and_the_service_keeps_serving(
    service: Service, case: str, status: int, code: str
) -> None:
    json_headers = {"Content-Type": "application/json"}
    requests = {
        "wrong key": ("/v1/track", {"auth": ("nope", "")}, {"userId": "u", "event": "e"}),
        "no key": ("/v1/track", {"auth": None}, {"userId": "u", "event": "e"}),
        "bad json": ("/v1/track", {}, b'{"userId": "u", '),
        "oversize event": (
            "/v1/track",
            {},
            {"userId": "u", "event": "e", "properties": {"x": "y" * 40_000}},
        ),
        "oversize batch": (
            "/v1/batch",
            {},
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": "u",
                        "event": "e",
                        "properties": {"x": "y" * 20_000},
                    }
                ]
                * 30
            },
        ),
        "too many events": (
            "/v1/batch",
            {},
            {"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2501},
        ),
        "missing userId": ("/v1/track", {}, {"event": "e"}),
        "missing event name": ("/v1/track", {}, {"userId": "u"}),
        "missing groupId": ("/v1/group", {}, {"userId": "u"}),
        "missing previousId": ("/v1/alias", {}, {"userId": "u"}),
        "wrong content type": (
            "/v1/track",
            {"content_type": "application/x-www-form-urlencoded"},
            b"userId=u",
        ),
        "gzip bomb": ("/v1/batch", {"gzip": True}, b'{"batch": [' + b" " * 5_000_000 + b"]}"),
        "unknown path": ("/v2/track", {}, {"userId": "u"}),
    }
    path, options, payload = requests[case]
    auth = options.get("auth", (WRITE_KEY, ""))
    headers = dict(json_headers)
    if "content_type" in options:
        headers["Content-Type"] = str(options["content_type"])
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    if options.get("gzip"):
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    with service.client(auth=auth) as client:  # type: ignore[arg-type]
        answer = client.post(path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()
    assert error["success"] is False and error["code"] == code and error["message"]
    assert_still_serving(service)


def test_everything_lands_once_after_a_clean_stop(service: Service) -> None:
    assert service.stop() == 0, service.log_tail()
    data = service.workdir / "data"
    table = ds.dataset(
        data, format="parquet", partitioning="hive", exclude_invalid_files=True
    ).to_table()
    rows = table.to_pylist()
    found = [r["message_id"] for r in rows]
    assert len(found) == len(set(found)), "an event landed twice"
    assert set(found) == set(ACKED), f"missing: {set(ACKED) - set(found)}"
    for row in rows:
        kind, source = ACKED[row["message_id"]]
        assert (row["type"], row["source"]) == (kind, source)
        assert row["received_at"] is not None and row["timestamp"] is not None
        assert str(row["dt"]) == row["received_at"].strftime("%Y-%m-%d")
        assert int(row["hr"]) == row["received_at"].hour
    by_id = {r["message_id"]: r for r in rows}
    track = next(r for k, r in by_id.items() if k.startswith("batch-track"))
    assert orjson.loads(track["properties"]) == {"revenue": 9.5, "items": [1, 2]}
    assert track["event"] == "Order Completed" and track["user_id"] == "batch-user"
    assert orjson.loads(track["context"])["ip"] == "127.0.0.1"
    assert next(r for k, r in by_id.items() if k.startswith("batch-group"))["group_id"] == "acme"
    assert (
        next(r for k, r in by_id.items() if k.startswith("batch-alias"))["previous_id"]
        == "batch-anon"
    )
    assert by_id["lib-page-1"]["name"] == "Install" and by_id["lib-page-1"]["category"] == "Docs"
    # DuckDB reads the same tree as one table.
    ((count,),) = duckdb.sql(
        f"select count(*) from read_parquet('{data}/source=*/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert count == len(ACKED)
    # Rejected events are kept with the reason, outside the main tree.
    letters = [
        orjson.loads(line)
        for f in Path(data, "_deadletter").rglob("*.jsonl")
        for line in f.read_bytes().splitlines()
    ]
    assert any(
        letter["payload"].get("messageId") == "partial-bad" and "missing_field" in letter["reason"]
        for letter in letters
    )
    # A clean stop leaves no event behind in the log.
    assert not list(service.log_dir.glob("*/*.seg"))
