"""The typed-table writer on its own: concurrent writers keep every column, a
max_columns limit sends the rest to `_rejected`, and S3 (moto) works as local disk."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from core.config import SinkSpec
from sinks.base import Batch
from sinks.s3 import ParquetSink, open_filesystem
from sinks.tables import REGISTRY, TableWriter
from tests.aws import create_bucket


def event(n: int, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Clicked",
        "source": "web",
        "messageId": f"m{n}",
        "receivedAt": "2026-11-25T10:00:00.000Z",
        "properties": properties,
    }


def test_concurrent_writers_lose_no_column(tmp_path: Path) -> None:
    def write(worker: int) -> None:
        writer = TableWriter(pafs.LocalFileSystem(), str(tmp_path))
        for n in range(5):
            writer.write(f"b{worker}-{n}", [event(n, {f"k{worker}_{n}": n, "shared": 1})])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry = orjson.loads((tmp_path / "tables/web/clicked" / REGISTRY).read_bytes())
    assert set(registry["types"]) == {"shared", *(f"k{w}_{n}" for w in range(6) for n in range(5))}


def test_past_max_columns_the_rest_goes_to_rejected(tmp_path: Path) -> None:
    writer = TableWriter(pafs.LocalFileSystem(), str(tmp_path), max_columns=3)
    keys, rejected = writer.write("b1", [event(1, {f"p{i}": i for i in range(5)})])
    table = ds.dataset(keys[0]).to_table()
    assert {"p0", "p1", "p2"} <= set(table.column_names) and "p3" not in table.column_names
    assert orjson.loads(table.column("_rejected")[0].as_py()) == {"p3": 3, "p4": 4}
    assert rejected == 2


def test_tables_on_s3(moto_server: str) -> None:
    bucket = create_bucket()
    sink = ParquetSink(SinkSpec.parse(f"s3://{bucket}/events?layout=tables", Path.cwd()))
    payloads = [orjson.dumps(event(n, {"price": n * 1.5, "sku": f"s{n}"})) for n in range(10)]
    delivered = sink.write(Batch.of("log", "track", 0, payloads))
    assert delivered.rejected == []
    fs, root = open_filesystem(f"s3://{bucket}/events")
    table = ds.dataset(
        f"{root}/tables/web/clicked", filesystem=fs, format="parquet", ignore_prefixes=["_", "."]
    ).to_table()
    assert table.num_rows == 10
    assert str(table.schema.field("price").type) == "double"
    assert any(
        key.endswith(".parquet") and "/tables/web/clicked/dt=2026-11-25/" in key
        for key in delivered.locations
    )
