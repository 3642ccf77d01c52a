"""`Consumer`: a file sink's consumer also writes the dead letters kept under it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from actors.consumer import Consumer
from core.config import SinkSpec
from core.model import DEADLETTER
from sinks.base import Batch
from sinks.deadletter import deadletter_spec


def letters(count: int) -> Batch:
    payloads = [
        orjson.dumps(
            {
                "reason": "test",
                "source": "web",
                "receivedAt": "2026-11-25T21:00:00.000Z",
                "payload": {"messageId": f"m-{i}"},
            }
        )
        for i in range(count)
    ]
    return Batch.of("dl-log", DEADLETTER, 0, payloads)


def test_dead_letters_go_under_the_sink_and_only_where_a_dead_letter_sink_is_given(
    tmp_path: Path,
) -> None:
    spec = SinkSpec.parse(f"file://{tmp_path}", tmp_path)
    consumer = Consumer(spec, deadletter_spec(spec))
    consumer.write(letters(3))
    files = list((tmp_path / "_deadletter").rglob("*.jsonl"))
    assert len(files) == 1 and len(files[0].read_bytes().splitlines()) == 3
    assert not list(tmp_path.rglob("*.parquet"))  # not written as events
    with pytest.raises(RuntimeError, match="no dead-letter sink"):
        Consumer(spec).write(letters(1))
