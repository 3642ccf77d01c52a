"""ParquetSink on moto's S3 and on local disk, read back as one Hive-partitioned table."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import boto3
import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from core.config import SinkSpec
from sinks.base import Batch
from sinks.columns import decode, to_table
from sinks.s3 import ParquetSink, open_filesystem
from tests.service import free_port

HOURS = ("2024-05-01T23:59:59.999Z", "2024-05-02T00:00:00.000Z")  # an hour and a day apart
SOURCES = ("web", "ios")


def make_events(count: int) -> list[bytes]:
    """Track events spread over two hours and two sources."""
    return [
        orjson.dumps(
            {
                "type": "track",
                "event": "Signed Up",
                "messageId": f"m-{i}",
                "userId": f"user-{i % 7}",
                "receivedAt": HOURS[i % 2],
                "timestamp": "2024-05-01T23:00:00.000Z",
                "source": SOURCES[(i // 2) % 2],
                "properties": {"plan": "pro", "i": i},
            }
        )
        for i in range(count)
    ]


def expected_partitions(payloads: list[bytes]) -> Counter[tuple[str, str, str, int]]:
    """(source, type, dt, hr) -> events, computed from the events themselves."""
    events = [orjson.loads(p) for p in payloads]
    return Counter(
        (e["source"], e["type"], e["receivedAt"][:10], int(e["receivedAt"][11:13])) for e in events
    )


def partitions_of(table_rows: list[dict[str, object]]) -> Counter[tuple[str, str, str, int]]:
    return Counter(
        (str(r["source"]), str(r["type"]), str(r["dt"]), int(str(r["hr"]))) for r in table_rows
    )


def create_bucket() -> str:
    name = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_s3_batch_reads_back_as_one_partitioned_table(moto_server: str) -> None:
    bucket = create_bucket()
    sink = ParquetSink(SinkSpec.parse(f"s3://{bucket}/events", Path.cwd()))
    payloads = make_events(1000)
    batch = Batch.of("track-0", "track", 0, payloads)
    assert sink.write(batch).rejected == []

    fs, root = open_filesystem(f"s3://{bucket}/events")
    table = ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(payloads)
    assert sorted(table.column("message_id").to_pylist()) == sorted(f"m-{i}" for i in range(1000))
    assert partitions_of(table.to_pylist()) == expected_partitions(payloads)

    # A retried batch overwrites its own files instead of adding to them.
    assert sink.write(batch).rejected == []
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(keys) == len(expected_partitions(payloads)) == 4
    assert all(k.endswith(f"/{batch.batch_id}.parquet") for k in keys)
    assert "events/source=web/type=track/dt=2024-05-02/hr=00/" in "\n".join(keys)
    again = ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive")
    assert again.count_rows() == len(payloads)


def test_file_tree_reads_with_pyarrow_and_duckdb(tmp_path: Path) -> None:
    sink = ParquetSink(SinkSpec.parse("file://./lake", tmp_path))
    payloads = make_events(300)
    assert sink.write(Batch.of("track-0", "track", 0, payloads[:200])).rejected == []
    assert sink.write(Batch.of("track-0", "track", 200, payloads[200:])).rejected == []
    assert sink.write(Batch.of("track-0", "track", 200, payloads[200:])).rejected == []  # retried
    assert not list((tmp_path / "lake").rglob(".*.tmp"))

    table = ds.dataset(tmp_path / "lake", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 300
    assert partitions_of(table.to_pylist()) == expected_partitions(payloads)

    rows = duckdb.sql(
        f"""
        SELECT source, type, dt, hr, count(*) AS n, count(DISTINCT message_id) AS ids,
               epoch_ms(min(received_at)) AS first_ms
        FROM read_parquet('{tmp_path}/lake/**/*.parquet', hive_partitioning = true)
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    # DuckDB types hr as text when values have leading zeros ("00"), so compare as numbers.
    counts = Counter({(s, t, str(d), int(h)): n for s, t, d, h, n, _, _ in rows})
    assert counts == expected_partitions(payloads)
    assert sum(ids for *_, ids, _ in rows) == 300
    hours_ms = {int(datetime.fromisoformat(h).timestamp() * 1000) for h in HOURS}
    assert {first_ms for *_, first_ms in rows} == hours_ms  # UTC kept, milliseconds too


def test_free_form_parts_are_their_json_text_and_absent_ones_null() -> None:
    payloads = [
        orjson.dumps(
            {
                "type": "track",
                "event": "E",
                "messageId": "a",
                "userId": "u",
                "receivedAt": HOURS[0],
                "properties": {"x": [1, 2]},
                "context": {},
            }
        ),
        orjson.dumps(
            {
                "type": "identify",
                "messageId": "b",
                "userId": "u",
                "receivedAt": HOURS[0],
                "traits": {"plan": "pro"},
            }
        ),
    ]
    table = to_table(decode(payloads))
    assert table.column("properties").to_pylist() == ['{"x":[1,2]}', None]
    assert table.column("traits").to_pylist() == [None, '{"plan":"pro"}']
    assert table.column("context").to_pylist() == ["{}", None]
    assert table.column("integrations").null_count == 2


def ensure_bucket(name: str) -> None:
    """Create the bucket on a restarted server (moto keeps in-process state, so it may exist)."""
    try:
        boto3.client("s3").create_bucket(Bucket=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


@pytest.mark.chaos
def test_s3_down_raises_then_the_retry_lands(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # a server of this test's own, so stopping it harms no other test
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    server: ThreadedMotoServer | None = ThreadedMotoServer("127.0.0.1", port, verbose=False)
    server.start()
    try:
        bucket = create_bucket()
        sink = ParquetSink(SinkSpec.parse(f"s3://{bucket}/events", Path.cwd()))
        batch = Batch.of("track-0", "track", 0, make_events(50))

        server.stop()
        server = None
        with pytest.raises(OSError):  # bounded retries: it gives up (pytest's timeout: no hang)
            sink.write(batch)

        server = ThreadedMotoServer("127.0.0.1", port, verbose=False)
        server.start()
        ensure_bucket(bucket)
        assert sink.write(batch).rejected == []
        fs, root = open_filesystem(f"s3://{bucket}/events")
        assert ds.dataset(root, filesystem=fs, format="parquet").count_rows() == 50
    finally:
        if server is not None:
            server.stop()


def test_sink_writes_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """A Ray worker imports only the sink, not the readers that pull in pyarrow.compute."""
    code = (
        "import sys; from pathlib import Path;"
        "from sinks.base import Batch; from sinks.s3 import ParquetSink;"
        "from core.config import SinkSpec;"
        "events = [l.encode() for l in sys.stdin.read().splitlines()];"
        "sink = ParquetSink(SinkSpec.parse('file://./lake', Path.cwd()));"
        "sink.write(Batch.of('track-0', 'track', 0, events))"
    )
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    stdin = b"\n".join(make_events(10)).decode()
    subprocess.run(
        [sys.executable, "-c", code], input=stdin, text=True, cwd=tmp_path, env=env, check=True
    )
    assert ds.dataset(tmp_path / "lake", format="parquet", partitioning="hive").count_rows() == 10


def test_odd_values_are_written_and_an_undecodable_record_is_refused_alone(
    tmp_path: Path,
) -> None:
    # What clients may send where ingress does not check the type (a screen's `event`, a
    # groupId outside group events, integers past 64 bits); and a record that is not JSON.
    odd = orjson.loads(make_events(1)[0]) | {"type": "screen", "event": 123, "messageId": "odd"}
    odd_payload = orjson.dumps(odd)[:-1] + b',"groupId":[18446744073709551616]}'
    payloads = [*make_events(4), odd_payload, b"{"]
    sink = ParquetSink(SinkSpec.parse(f"file://{tmp_path}/lake", Path.cwd()))
    rejected = sink.write(Batch.of("track-0", "track", 0, payloads)).rejected
    assert [r.index for r in rejected] == [5]
    rows = ds.dataset(tmp_path / "lake", format="parquet", partitioning="hive").to_table()
    by_id = {r["message_id"]: r for r in rows.to_pylist()}
    assert len(by_id) == 5
    assert (by_id["odd"]["event"], by_id["odd"]["group_id"]) == ("123", "[18446744073709551616]")


def test_enriched_columns_come_from_each_events_own_context(tmp_path: Path) -> None:
    # Columns are read once per distinct context; a client's own shape of a place
    # (a string where the enrichers write an object) gives null, never a wrong value.
    chrome = {"browser": {"name": "Chrome", "version": "120"}, "bot": False}
    shapes = [
        chrome,
        {"browser": {"name": "Safari"}, "location": {"country": "FR", "city": "Paris"}},
        chrome,
        {"browser": "Firefox", "location": {"city": 7}, "bot": "no"},
        {},
        chrome,
    ]
    base = orjson.loads(make_events(1)[0])
    payloads = [
        orjson.dumps(base | {"messageId": f"m-{i}", "context": context})
        for i, context in enumerate(shapes)
    ]
    sink = ParquetSink(SinkSpec.parse(f"file://{tmp_path}/lake", Path.cwd()))
    assert sink.write(Batch.of("track-0", "track", 0, payloads)).rejected == []
    rows = ds.dataset(tmp_path / "lake", format="parquet", partitioning="hive").to_table()
    by_id = {r["message_id"]: r for r in rows.to_pylist()}
    columns = [
        (by_id[f"m-{i}"]["ua_browser"], by_id[f"m-{i}"]["geo_city"], by_id[f"m-{i}"]["is_bot"])
        for i in range(len(shapes))
    ]
    assert columns == [
        ("Chrome", None, False),
        ("Safari", "Paris", None),
        ("Chrome", None, False),
        (None, None, None),
        (None, None, None),
        ("Chrome", None, False),
    ]
    # Without the odd event every place is as the enrichers write it (the typed pass).
    typed = columns_of([p for i, p in enumerate(payloads) if i != 3])
    assert typed.column("ua_browser").to_pylist() == ["Chrome", "Safari", "Chrome", None, "Chrome"]
    assert typed.column("is_bot").to_pylist() == [False, None, False, None, False]


def columns_of(payloads: list[bytes]) -> pa.Table:
    return to_table(decode(payloads))
