"""What reached the sink: the Parquet tree read back and compared with the acked ids.

`lost` counts events answered 2xx whose `messageId` is not in the tree; `duplicates`
counts rows beyond the first of each `messageId` (delivery is at-least-once).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds


@dataclass(frozen=True)
class SinkAudit:
    """The sink tree compared with the ids the load generator saw acknowledged."""

    events_in_sink: int
    distinct_in_sink: int
    lost: int
    duplicates: int
    #: In the tree but never acknowledged: requests cut off when the run ended.
    unacked_in_sink: int
    events_deadlettered: int
    #: The first lost ids, to look for (in the sink's logs, in the acked files).
    lost_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_acked(directory: Path) -> pa.Array:
    """Every id in the `acked-*.txt` files (one a line) the locustfile wrote to `directory`."""
    options = pacsv.ReadOptions(column_names=["message_id"], block_size=16 << 20)
    convert = pacsv.ConvertOptions(
        column_types={"message_id": pa.string()}, strings_can_be_null=False
    )
    # Ids hold no quotes, commas or tabs: read each line whole.
    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False)
    chunks: list[pa.Array] = []
    for path in sorted(directory.glob("acked-*.txt")):
        if path.stat().st_size:
            table = pacsv.read_csv(
                path, read_options=options, parse_options=parse, convert_options=convert
            )
            chunks += table.column("message_id").chunks
    return pa.chunked_array(chunks, pa.string()).combine_chunks()


def read_sink_ids(sink_dir: Path) -> pa.Array:
    """The `message_id` of every row of the Hive-style Parquet tree at `sink_dir`.

    Dead letters (`_deadletter/`) and files being written (`.name.tmp`) are left out.
    """
    if not sink_dir.is_dir():
        return pa.array([], pa.string())
    dataset = ds.dataset(
        # The raw tree only: typed tables (`tables/`) hold the same events again.
        sink_dir,
        format="parquet",
        partitioning="hive",
        ignore_prefixes=[".", "_", "tables"],
    )
    return dataset.to_table(columns=["message_id"]).column("message_id").combine_chunks()


def count_deadletters(sink_dir: Path) -> int:
    """Events kept under `_deadletter/` (JSON lines, one per event)."""
    count = 0
    for path in (sink_dir / "_deadletter").rglob("*.jsonl"):
        with open(path, "rb") as f:
            count += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return count


def compare(sink_ids: pa.Array, acked: pa.Array, deadlettered: int = 0) -> SinkAudit:
    """Lost and duplicated events, by `messageId`, in Arrow (millions of ids are fine)."""
    distinct = pc.unique(sink_ids)
    acked = pc.unique(acked)
    found = 0
    lost_ids: tuple[str, ...] = ()
    if len(acked):
        present = pc.is_in(acked, value_set=distinct)
        found = pc.sum(present).as_py() or 0
        if found < len(acked):
            lost_ids = tuple(acked.filter(pc.invert(present))[:20].to_pylist())
    return SinkAudit(
        events_in_sink=len(sink_ids),
        distinct_in_sink=len(distinct),
        lost=len(acked) - found,
        duplicates=len(sink_ids) - len(distinct),
        unacked_in_sink=len(distinct) - found,
        events_deadlettered=deadlettered,
        lost_ids=lost_ids,
    )


def audit(sink_dir: Path, acked_dir: Path) -> SinkAudit:
    """Compare the tree at `sink_dir` with the ids acknowledged in `acked_dir`."""
    return compare(read_sink_ids(sink_dir), read_acked(acked_dir), count_deadletters(sink_dir))


def _listing(sink_dir: Path) -> tuple[int, int]:
    files = [p for p in sink_dir.rglob("*.parquet") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def audit_when_settled(
    sink_dir: Path, acked_dir: Path, *, settle_s: float = 15.0, timeout_s: float = 120.0
) -> SinkAudit:
    """Audit a sink a running Sluice still writes to (`--target`): wait until nothing is
    lost, or the tree has not changed for `settle_s` (longer than the sink's batch age),
    or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    acked = read_acked(acked_dir)
    listing = (-1, -1)
    changed_at = time.monotonic()
    result: SinkAudit | None = None
    while True:
        now_listing = _listing(sink_dir) if sink_dir.is_dir() else (0, 0)
        if now_listing != listing:
            listing, changed_at = now_listing, time.monotonic()
            result = compare(read_sink_ids(sink_dir), acked, count_deadletters(sink_dir))
            if result.lost == 0:
                return result
        if time.monotonic() - changed_at >= settle_s or time.monotonic() >= deadline:
            assert result is not None
            return result
        time.sleep(1.0)
