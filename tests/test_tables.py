"""Typed tables through the real `sluice serve` with Segment's Python library: properties
that appear, widen (int then float) and conflict (text where a number was), across a
restart; DuckDB reads one table per event with the expected types and every event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import segment.analytics as segment_analytics

from tests.aws import rows_when_landed
from tests.service import WRITE_KEY, Service


def start(workdir: Path, port: int | None = None) -> Service:
    return Service(workdir, sinks=["file://./data?layout=tables&max_age_s=0.2"], port=port).start()


def send(service: Service, calls: list[tuple[str, tuple[Any, ...], str]]) -> set[str]:
    client = segment_analytics.Client(WRITE_KEY, host=service.url, sync_mode=True, max_retries=1)
    errors: list[Exception] = []
    client.on_error = lambda error, _items: errors.append(error)
    for method, args, message_id in calls:
        getattr(client, method)(*args, message_id=message_id)
    client.flush()
    assert errors == []
    return {message_id for *_, message_id in calls}


def landed(workdir: Path, ids: set[str]) -> None:
    assert len(rows_when_landed(f"file://{workdir}/data", ids)) == len(ids)


def table(workdir: Path, name: str) -> duckdb.DuckDBPyRelation:
    files = f"{workdir}/data/tables/web/{name}/**/*.parquet"
    return duckdb.sql(f"select * from read_parquet('{files}', union_by_name=true)")


def test_tables_evolve_and_survive_a_restart(tmp_path: Path) -> None:
    service = start(tmp_path)
    try:
        first = send(
            service,
            [
                (
                    "track",
                    (
                        "u1",
                        "Order Completed",
                        {
                            "revenue": 10,
                            "currency": "USD",
                            "coupon": True,
                            "address": {"city": "Paris", "zip": "75001"},
                            "placedAt": "2026-11-20T10:00:00Z",
                        },
                    ),
                    f"o-{n}",
                )
                for n in range(3)
            ]
            + [
                ("identify", ("u1", {"email": "a@example.com", "age": 30}), "i-1"),
                ("page", ("u1", "Docs", "Install", {"path": "/install"}), "p-1"),
            ],
        )
        landed(tmp_path, first)
        second = send(
            service,
            [("track", ("u2", "Order Completed", {"revenue": 10.5, "items": [1, 2]}), "o-float")],
        )
        landed(tmp_path, second)
        assert service.stop() == 0, service.log_tail()
    finally:
        service.kill()
    schema = orjson.loads((tmp_path / "data/tables/web/order_completed/_schema.json").read_bytes())
    assert schema["types"]["revenue"] == "float64"  # widened

    again = start(tmp_path, port=service.port)
    try:
        third = send(
            again,
            [
                ("track", ("u3", "Order Completed", {"revenue": "ten", "note": "hi"}), "o-text"),
                ("track", ("u3", "Order Completed", {"revenue": 7}), "o-int"),
            ],
        )
        landed(tmp_path, third)
        assert again.stop() == 0, again.log_tail()
    finally:
        again.kill()

    orders = table(tmp_path, "order_completed")
    types = dict(zip(orders.columns, (str(t) for t in orders.types), strict=True))
    assert types["revenue"] == "DOUBLE"
    assert types["coupon"] == "BOOLEAN"
    assert types["address_city"] == "VARCHAR" and types["address_zip"] == "VARCHAR"
    assert types["placed_at"].startswith("TIMESTAMP")
    assert types["received_at"].startswith("TIMESTAMP")
    rows = {
        r[0]: r for r in orders.select("message_id, revenue, _rejected, note, items").fetchall()
    }
    assert set(rows) == {"o-0", "o-1", "o-2", "o-float", "o-text", "o-int"}  # none missing
    assert rows["o-float"][1] == 10.5 and rows["o-int"][1] == 7.0 and rows["o-0"][1] == 10.0
    assert rows["o-text"][1] is None and orjson.loads(rows["o-text"][2]) == {"revenue": "ten"}
    assert rows["o-text"][3] == "hi"  # a new column after the restart
    assert orjson.loads(rows["o-float"][4]) == [1, 2]
    assert table(tmp_path, "identifies").count("*").fetchall() == [(1,)]
    pages = table(tmp_path, "pages").select("message_id, path, name").fetchall()
    assert pages == [("p-1", "/install", "Install")]
    ages = table(tmp_path, "identifies").select("age, email").fetchall()
    assert ages == [(30, "a@example.com")]


@pytest.mark.parametrize(
    ("name", "table_name"),
    [("Order Completed", "order_completed"), ("signUp", "sign_up"), ("3 Items!", "_3_items")],
)
def test_table_names(name: str, table_name: str) -> None:
    from sinks.tables import snake

    assert snake(name) == table_name
