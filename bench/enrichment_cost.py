"""What enrichment costs per event, stage by stage, without Ray: the replica's work
(`ingress.events.accept`, enrichers and serialising), the Parquet consumer's columns
(`sinks.columns`) and the Parquet write, for the bench's browser events with the
default enrichers and with `enrich: []`.

    python -m bench.enrichment_cost
"""

from __future__ import annotations

import io
import random
import timeit
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow.parquet as pq

from bench.payloads import EventPool
from core.config import Config
from ingress import events
from ingress.enrich import Enrichment
from sinks import columns
from sinks.base import Batch

REQUESTS = 100


def _best(run: Callable[[], object], number: int = 3) -> float:
    return min(timeit.repeat(run, number=number, repeat=3)) / number


def _measure(name: str, config: Config, bodies: list[dict[str, Any]]) -> None:
    enrichment = Enrichment.from_config(config)

    def accept() -> list[bytes]:
        tracks: list[bytes] = []
        for data in bodies:
            parsed = events.accept(
                data["batch"],
                record_type=None,
                source="web",
                ip="1.2.3.4",
                defaults=data,
                enrichment=enrichment,
            )
            tracks += parsed.by_type["track"]
        return tracks

    replica = _best(accept, 1) * 1e6 / (len(bodies) * 100)
    tracks = accept()
    batch = Batch.of("bench", "track", 0, tracks)
    table = columns.to_table(columns.decode_batch(batch)[0])
    consumer = _best(lambda: columns.to_table(columns.decode_batch(batch)[0]))
    parquet = _best(lambda: pq.write_table(table, io.BytesIO(), compression="zstd"))
    size = sum(map(len, tracks)) / len(tracks)
    print(
        f"{name:>18}: a track event {size:.0f} bytes; µs per event: replica {replica:.2f} "
        f"(all types), columns {consumer * 1e6 / len(tracks):.2f}, "
        f"Parquet {parquet * 1e6 / len(tracks):.2f}"
    )


def main() -> None:
    pool = EventPool(random.Random(1))
    ids = [[f"id-{r}-{i}" for i in range(100)] for r in range(REQUESTS)]
    bodies = [orjson.loads(pool.batch(batch_ids)) for batch_ids in ids]
    _measure("default enrichers", Config(), bodies)
    _measure("enrich: []", Config(enrich=()), bodies)


if __name__ == "__main__":
    main()
