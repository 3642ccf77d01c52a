"""Property-based: generated garbage thrown at every endpoint. Every answer is 2xx or a 4xx
JSON error, never a 5xx; the ingress keeps serving; and the valid events sent alongside
the garbage all land.

Written against the `ingress_target` fixture (tests/ingress/target.py), so the same
properties can run in process or against a real service.
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.ingress.target import IngressTarget, in_process_target, service_target

TYPES = ("track", "identify", "page", "screen", "group", "alias")
POSTS = [f"/v1/{t}" for t in TYPES] + ["/v1/batch", "/v1/import"]
GETS = ["/health", "/metrics", "/openapi.json"]
EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def json_values(*, parseable: bool) -> st.SearchStrategy[Any]:
    """JSON values as clients write them; unless `parseable`, with what orjson refuses
    (NaN, Infinity, lone surrogates, integers past 1e308)."""
    characters = st.characters(exclude_categories=["Cs"]) if parseable else st.characters()
    scalars = (
        st.none()
        | st.booleans()
        | (st.integers(-(10**300), 10**300) if parseable else st.integers())
        | st.floats(allow_nan=not parseable, allow_infinity=not parseable)
        | st.text(characters, max_size=20)
        | st.sampled_from(["", "2024-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "track"])
    )
    keys = st.text(characters, max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )


# Nesting around the cap (64), past what orjson writes (255) and past what it reads (1024).
deep = st.integers(min_value=1, max_value=1500).map(
    lambda n: '{"userId": "u", "event": "e", "properties": {"a": ' + "[" * n + "]" * n + "}}"
)


@pytest.fixture(scope="module", params=["in-process", "service"])
def ingress_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IngressTarget]:
    """Where the garbage goes: the app in process, then the real service (Ray and all)."""
    if request.param == "in-process":
        with in_process_target() as target:
            yield target
    else:
        with service_target(tmp_path_factory.mktemp("hostile")) as target:
            yield target


def valid_event(record_type: str, message_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": record_type,
        "userId": "u-1",
        "messageId": message_id or f"valid-{uuid.uuid4()}",
    }
    event.update(
        {
            "track": {"event": "Order Completed", "properties": {"revenue": 42}},
            "identify": {"traits": {"email": "a@example.com"}},
            "page": {"name": "Home"},
            "screen": {"name": "Main"},
            "group": {"groupId": "acme"},
            "alias": {"previousId": "anon-1"},
        }[record_type]
    )
    return event


def encode(value: Any) -> bytes:
    """Python's json writes what orjson refuses to: big ints, NaN, lone surrogates."""
    return json.dumps(value).encode()


def assert_clean(answer: httpx.Response) -> None:
    """2xx, or a 4xx with Sluice's JSON error; never a 5xx."""
    assert answer.status_code < 500, f"{answer.status_code}: {answer.text[:500]}"
    if answer.status_code >= 400:
        assert answer.headers["content-type"].startswith("application/json"), answer.headers
        error = answer.json()
        assert error["success"] is False and error["code"] and error["message"], error


class Alongside:
    """Sends one valid event after each piece of garbage; checks at the end they all landed."""

    def __init__(self, target: IngressTarget) -> None:
        self.target = target
        self.sent: set[str] = set()

    def send_valid(self) -> None:
        event = valid_event("track")
        answer = self.target.client.post("/v1/track", json=event, auth=(self.target.write_key, ""))
        assert answer.status_code == 200, answer.text
        self.sent.add(event["messageId"])

    def all_landed(self) -> None:
        assert self.target.landed(self.sent) == self.sent


def post(
    target: IngressTarget,
    path: str,
    body: bytes,
    headers: dict[str, Any] | None = None,
    authorized: bool = True,
) -> httpx.Response:
    sent = {"Content-Type": "application/json", **(headers or {})}
    auth = (target.write_key, "") if authorized else None
    return target.client.post(path, content=body, headers=sent, auth=auth)


def test_random_bytes_at_every_endpoint(ingress_target: IngressTarget) -> None:
    alongside = Alongside(ingress_target)

    @EXAMPLES
    @given(
        path=st.sampled_from(POSTS),
        body=st.binary(max_size=3000),
        encoding=st.sampled_from(["", "gzip", "deflate"]),
        compress=st.booleans(),
        authorized=st.booleans(),
    )
    def check(path: str, body: bytes, encoding: str, compress: bool, authorized: bool) -> None:
        if compress and encoding:
            body = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
        headers = {"Content-Encoding": encoding} if encoding else {}
        assert_clean(post(ingress_target, path, body, headers, authorized))
        alongside.send_valid()

    check()
    alongside.all_landed()


def test_random_json_values_at_every_endpoint(ingress_target: IngressTarget) -> None:
    alongside = Alongside(ingress_target)

    @EXAMPLES
    @given(
        path=st.sampled_from(POSTS),
        value=json_values(parseable=False)
        | deep
        | st.dictionaries(st.text(max_size=8), json_values(parseable=False)),
    )
    def check(path: str, value: Any) -> None:
        body = value.encode() if isinstance(value, str) and value.startswith("{") else encode(value)
        assert_clean(post(ingress_target, path, body))
        alongside.send_valid()

    check()
    alongside.all_landed()


FIELDS = [
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "event",
    "name",
    "category",
    "groupId",
    "previousId",
    "timestamp",
    "sentAt",
    "properties",
    "traits",
    "context",
    "integrations",
    "writeKey",
    "source",
]
# Values a JSON parser takes, so the batch around the mutated event stays valid JSON.
mutation = st.tuples(
    st.sampled_from(["set", "delete"]),
    st.sampled_from(FIELDS) | st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
    json_values(parseable=True),
)


def mutate(event: dict[str, Any], mutations: list[tuple[str, str, Any]]) -> dict[str, Any]:
    out = dict(event)
    for action, key, value in mutations:
        if action == "set":
            out[key] = value
        else:
            out.pop(key, None)
    return out


def test_mutated_events_never_take_valid_ones_down(ingress_target: IngressTarget) -> None:
    alongside = Alongside(ingress_target)

    @EXAMPLES
    @given(
        record_type=st.sampled_from(TYPES),
        mutations=st.lists(mutation, min_size=1, max_size=4),
        in_batch=st.booleans(),
    )
    def check(record_type: str, mutations: list[tuple[str, str, Any]], in_batch: bool) -> None:
        broken = mutate(valid_event(record_type), mutations)
        if not in_batch:
            assert_clean(post(ingress_target, f"/v1/{record_type}", encode(broken)))
        else:
            # A valid event in the same batch as the broken one lands all the same.
            companion = valid_event(record_type)
            body = encode({"batch": [broken, companion]})
            answer = post(ingress_target, "/v1/batch", body)
            assert answer.status_code == 200, answer.text
            assert 1 not in {r["index"] for r in answer.json().get("rejected", [])}
            alongside.sent.add(companion["messageId"])
        alongside.send_valid()

    check()
    alongside.all_landed()


header_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1
).filter(lambda name: name.lower() not in ("content-length", "host", "transfer-encoding"))
header_values = st.binary(max_size=200).map(
    lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F).strip()
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/vnd.api+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "",
        "APPLICATION/JSON",
    ]
) | st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=40).map(
    lambda text: text.encode().decode("latin-1")  # as a server sees UTF-8 header bytes
)
encodings = st.sampled_from(["", "gzip", "br", "identity", "gzip, gzip", "x-gzip"]) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz, ", max_size=12
)


def test_random_headers_content_types_and_encodings(ingress_target: IngressTarget) -> None:
    alongside = Alongside(ingress_target)

    @EXAMPLES
    @given(
        path=st.sampled_from(POSTS),
        content_type=content_types,
        encoding=encodings,
        authorization=st.none() | header_values | st.just(b"Basic !!!") | st.just(b"Basic"),
        extra=st.dictionaries(header_names, header_values, max_size=5),
        giant=st.sampled_from([0, 0, 0, 20_000]),
    )
    def check(
        path: str,
        content_type: str,
        encoding: str,
        authorization: bytes | None,
        extra: dict[str, bytes],
        giant: int,
    ) -> None:
        headers: dict[str, Any] = {**extra, "Content-Type": content_type.encode("latin-1")}
        if encoding:
            headers["Content-Encoding"] = encoding
        if authorization is not None:
            headers["Authorization"] = authorization
        if giant:
            headers["X-Giant"] = "g" * giant
        body = encode(
            {"batch": [valid_event("track")]} if path in POSTS[-2:] else valid_event("track")
        )
        try:
            answer = ingress_target.client.post(path, content=body, headers=headers)
        except httpx.LocalProtocolError:
            # Over real HTTP the client refuses to send an illegal header: nothing to test.
            assume(not ingress_target.over_http)
            raise
        assert_clean(answer)
        alongside.send_valid()

    check()
    alongside.all_landed()


def test_every_path_and_method_answers_cleanly(ingress_target: IngressTarget) -> None:
    alongside = Alongside(ingress_target)

    @EXAMPLES
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
        path=st.sampled_from([*POSTS, *GETS, "/", "/v1", "/v2/track"])
        # httpx itself refuses a relative URL starting with "//": not a request to test.
        | st.text(alphabet="/abcv1._%~-", max_size=30).map(lambda p: "/" + p.lstrip("/")),
        query=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    )
    def check(method: str, path: str, query: dict[str, str]) -> None:
        answer = ingress_target.client.request(
            method,
            path,
            params=query,
            content=b"{}",
            headers={"Content-Type": "application/json"},
            auth=(ingress_target.write_key, ""),
        )
        assert answer.status_code < 500, answer.text[:300]
        if answer.status_code >= 400 and method != "HEAD":
            assert_clean(answer)
        alongside.send_valid()

    check()
    alongside.all_landed()
