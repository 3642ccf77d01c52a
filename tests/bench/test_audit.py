"""Lost and duplicated events, counted on a Parquet tree laid out as the file sink does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bench.audit import audit, compare, read_acked, read_sink_ids
from sinks.columns import SCHEMA, decode, to_table


def _event(message_id: str, kind: str = "track") -> dict[str, Any]:
    return {
        "messageId": message_id,
        "type": kind,
        "event": "Order Completed" if kind == "track" else None,
        "userId": "u-1",
        "timestamp": "2026-01-02T03:04:05.000Z",
        "receivedAt": "2026-01-02T03:04:05.000Z",
        "source": "bench",
        "properties": {"revenue": 1},
    }


def _write(root: Path, kind: str, name: str, ids: list[str]) -> None:
    directory = root / f"source=bench/type={kind}/dt=2026-01-02/hr=03"
    directory.mkdir(parents=True, exist_ok=True)
    table = to_table(decode([orjson.dumps(_event(i, kind)) for i in ids]))
    assert table.schema == SCHEMA
    pq.write_table(table, directory / name)


def _acked(directory: Path, *files: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for n, ids in enumerate(files):
        (directory / f"acked-{100 + n}.txt").write_text("".join(f"{i}\n" for i in ids))
    return directory


def test_audit_counts_lost_duplicates_and_unacked(tmp_path: Path) -> None:
    sink = tmp_path / "data"
    _write(sink, "track", "b-0-3.parquet", ["a-0", "a-1", "a-2"])
    _write(sink, "track", "b-3-5.parquet", ["a-2", "b-0"])  # a-2 redelivered
    _write(sink, "identify", "b-0-2.parquet", ["b-1", "late-0"])  # late-0: never acked
    # Neither dead letters nor a file still being written are part of the main tree.
    (sink / "_deadletter/dt=2026-01-02/hr=03").mkdir(parents=True)
    (sink / "_deadletter/dt=2026-01-02/hr=03/x.jsonl").write_text('{"reason": "r"}\n{}\n')
    _write(sink, "track", ".b-9-10.parquet.tmp", ["a-3"])
    acked = _acked(tmp_path / "acked", ["a-0", "a-1", "a-2", "a-3"], ["b-0", "b-1", "b-2"], [])

    result = audit(sink, acked)

    assert result.events_in_sink == 7
    assert result.distinct_in_sink == 6
    assert result.duplicates == 1
    assert result.lost == 2  # a-3 and b-2
    assert result.unacked_in_sink == 1
    assert result.events_deadlettered == 2


def test_nothing_lost_when_every_acked_id_is_in_the_sink(tmp_path: Path) -> None:
    sink = tmp_path / "data"
    ids = [f"p-{n}" for n in range(1000)]
    _write(sink, "page", "b.parquet", ids)
    result = audit(sink, _acked(tmp_path / "acked", ids[:600], ids[600:]))
    assert (result.lost, result.duplicates, result.unacked_in_sink) == (0, 0, 0)


def test_an_empty_or_missing_sink_loses_every_acked_event(tmp_path: Path) -> None:
    acked = _acked(tmp_path / "acked", ["x-1", "x-2"])
    assert len(read_sink_ids(tmp_path / "nowhere")) == 0
    assert audit(tmp_path / "nowhere", acked).lost == 2
    assert len(read_acked(tmp_path / "no-acks")) == 0


def test_compare_in_arrow() -> None:
    result = compare(pa.array(["a", "a", "a", "b"]), pa.array(["a", "c"]))
    assert (result.duplicates, result.lost, result.unacked_in_sink) == (2, 1, 1)
