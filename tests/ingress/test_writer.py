"""`SegmentWriter` with the `WriterTail` that reads it: group commits, order across
writers, torn tails of dead writers, back-pressure, and a log directory that fills.
No Ray: the two sides are plain objects over a real directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from actors.tail import Taken, WriterTail
from core import segments
from ingress.events import IngressError
from ingress.writer import SegmentWriter

MiB = 1024 * 1024


def writer(root: Path, **kw: int) -> SegmentWriter:
    options = {"capacity_bytes": 64 * MiB, "segment_bytes": 4 * MiB, **kw}
    return SegmentWriter(root, **options)


def payloads(tag: str, n: int) -> list[bytes]:
    return [orjson.dumps({"tag": tag, "n": i}) for i in range(n)]


def events(taken: Taken) -> list[bytes]:
    """The events of a take, from the records it hands the producer's log."""
    records, _ = segments.decode(b"".join(taken.parts))
    assert [len(payload) for _, payload in records] == taken.lengths
    return [payload for _, payload in records]


def taken(tail: WriterTail) -> list[bytes]:
    result = tail.take()
    tail.commit(result.positions)
    return events(result)


def test_frames_carry_zlibs_crc32_and_an_older_sluices_records_still_read() -> None:
    # A group's frame is checked with zlib's crc32 (computed by zlib-ng). An older Sluice
    # framed each record alone (stdlib zlib's crc, no count): such records, left in a
    # log directory across an upgrade, are still taken whole, before and after ours.
    stamp, payload = 12345, b'{"event":"e"}'
    data = segments.encode([payload, b"{}"], stamp)
    size, crc, _ = segments.HEADER.unpack_from(data)
    body = data[segments.HEADER.size :]
    assert size == segments.GROUP | len(body)
    assert crc == zlib.crc32(stamp.to_bytes(8, "little") + body)
    old_crc = zlib.crc32(stamp.to_bytes(8, "little") + payload)
    old = segments.HEADER.pack(len(payload), old_crc, stamp) + payload
    assert segments.decode(old * 2 + data)[0] == [(stamp, payload)] * 3 + [(stamp, b"{}")]
    assert segments.decode(old[:-1] + b"x")[0] == []  # a corrupt record is still refused
    assert segments.decode(data[:-1] + b"x")[0] == []  # and a corrupt group, whole
    frames = segments.scan(old + data)
    assert (frames.counts, frames.lengths) == ([1, 2], [len(payload), len(payload), 2])
    assert frames.overheads == [segments.HEADER.size, segments.overhead(2)]


def test_concurrent_requests_share_one_write_and_all_are_taken(tmp_path: Path) -> None:
    w = writer(tmp_path)

    async def requests() -> None:
        await asyncio.gather(*(w.append("track", payloads(f"r{i}", 3)) for i in range(50)))

    asyncio.run(requests())
    files = list((tmp_path / "track" / segments.WRITERS).glob("*/*.seg"))
    records, _ = segments.decode(files[0].read_bytes())
    assert len(records) == 150
    assert len({stamp for stamp, _ in records}) == 1  # one group commit, one write
    assert len(taken(WriterTail(tmp_path / "track"))) == 150


def test_events_acknowledged_by_two_replicas_come_out_in_acknowledgement_order(
    tmp_path: Path,
) -> None:
    first, second = writer(tmp_path), writer(tmp_path)
    sent = []
    for i in range(20):  # a client alternating between replicas, each after the last 200
        one = payloads(f"e{i}", 1)
        asyncio.run((first if i % 2 else second).append("track", one))
        sent += one
    assert taken(WriterTail(tmp_path / "track")) == sent


def test_groups_of_two_writers_merge_by_stamp_with_the_bytes_to_write_in_that_order(
    tmp_path: Path,
) -> None:
    # Group commits written by hand: writer a's groups at stamps 1, 3 (split over two
    # files) and 5; writer b's at 2, 3 (a tie: a goes first) and 4.
    writers = tmp_path / "track" / segments.WRITERS
    files = {
        ("a", 0): [(1, ["a1", "a2"]), (3, ["a3"])],
        ("a", 1): [(3, ["a4"]), (5, ["a5", "a6"])],
        ("b", 0): [(2, ["b1"]), (3, ["b2", "b3"]), (4, ["b4"])],
    }
    for (name, number), groups in files.items():
        (writers / name).mkdir(parents=True, exist_ok=True)
        (writers / name / "pid").write_text(str(os.getpid()))
        data = b"".join(
            segments.encode([e.encode() for e in events], stamp) for stamp, events in groups
        )
        (writers / name / segments.segment_name(number)).write_bytes(data)
    result = WriterTail(tmp_path / "track").take(horizon_ns=10)
    expected = ["a1", "a2", "b1", "a3", "a4", "b2", "b3", "b4", "a5", "a6"]
    assert [p.decode() for p in events(result)] == expected
    records, _ = segments.decode(b"".join(result.parts))  # what the producer's log writes
    assert [stamp for stamp, _ in records] == [1, 1, 2, 3, 3, 3, 3, 4, 5, 5]
    # A horizon cuts between groups: what is stamped at or after it waits.
    assert [p.decode() for p in events(WriterTail(tmp_path / "track").take(horizon_ns=3))] == [
        "a1",
        "a2",
        "b1",
    ]


def test_segments_taken_whole_are_deleted_and_positions_survive_a_reopen(
    tmp_path: Path,
) -> None:
    w = writer(tmp_path, segment_bytes=1000)
    for i in range(20):
        asyncio.run(w.append("page", payloads(f"b{i}", 10)))
    directory = next((tmp_path / "page" / segments.WRITERS).iterdir())
    assert len(segments.segment_numbers(directory)) > 3
    tail = WriterTail(tmp_path / "page")
    assert len(taken(tail)) == 200
    assert len(segments.segment_numbers(directory)) == 1  # the one still being written
    asyncio.run(w.append("page", payloads("after", 5)))
    assert len(taken(WriterTail(tmp_path / "page"))) == 5  # reopened: only what is new


def test_a_torn_record_of_a_killed_writer_is_never_taken(tmp_path: Path) -> None:
    # A replica killed mid-write: its last record is half there, and it never answered.
    script = (
        "import asyncio, os, sys; from pathlib import Path\n"
        "from ingress.writer import SegmentWriter\n"
        "w = SegmentWriter(Path(sys.argv[1]), capacity_bytes=2**26, segment_bytes=2**22)\n"
        "asyncio.run(w.append('track', [b'{\"whole\": 1}', b'{\"whole\": 2}']))\n"
        "fd = w._segments['track'].fd\n"
        "from core import segments\n"
        "os.write(fd, segments.encode([b'{\"torn\": 3}'], 1)[:-4])\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=Path.cwd())
    tail = WriterTail(tmp_path / "track")
    assert taken(tail) == [b'{"whole": 1}', b'{"whole": 2}']
    assert taken(tail) == []
    assert list((tmp_path / "track" / segments.WRITERS).iterdir()) == []  # dead and drained


def publish(root: Path, log: str, held: int, capacity: int, age_s: float = 0.0) -> None:
    state = {
        "seq": time.monotonic_ns(),
        "published_at": time.time() - age_s,
        "held_bytes": held,
        "pending_bytes": 0,
        "capacity_bytes": capacity,
    }
    (root / log).mkdir(parents=True, exist_ok=True)
    segments.write_atomic(root / log / segments.STATE, orjson.dumps(state))


def test_a_full_log_answers_503_with_retry_after(tmp_path: Path) -> None:
    publish(tmp_path, "track", held=1000, capacity=1000)
    w = writer(tmp_path)
    with pytest.raises(IngressError) as refused:
        asyncio.run(w.append("track", payloads("x", 1)))
    assert (refused.value.status, refused.value.code) == (503, "log_full")
    assert refused.value.headers["Retry-After"]
    asyncio.run(w.append("page", payloads("y", 1)))  # other logs are not held back


def test_a_request_of_several_record_types_is_stored_whole_or_refused_whole(
    tmp_path: Path,
) -> None:
    w = writer(tmp_path)
    asyncio.run(w.append_many({"track": payloads("t", 2), "page": payloads("p", 1)}))
    assert taken(WriterTail(tmp_path / "track")) == payloads("t", 2)
    assert taken(WriterTail(tmp_path / "page")) == payloads("p", 1)
    publish(tmp_path, "page", held=1000, capacity=1000)
    time.sleep(0.06)  # past the replica's cache of the state
    with pytest.raises(IngressError) as refused:
        asyncio.run(w.append_many({"track": payloads("t2", 2), "page": payloads("p2", 1)}))
    assert refused.value.code == "log_full"
    assert taken(WriterTail(tmp_path / "track")) == []  # nothing of it written


def test_a_request_is_answered_with_the_failure_of_any_of_its_logs(tmp_path: Path) -> None:
    # Its track events are written, its page events cannot be: no 200 for it, while a
    # request of track events alone in the same write gets its answer.
    w = writer(tmp_path)
    asyncio.run(w.append_many({"track": payloads("t", 1), "page": payloads("p", 1)}))
    os.close(w._segments["page"].fd)  # the page segment's writes now fail (EBADF)

    async def both() -> list[object]:
        return await asyncio.gather(
            w.append_many({"track": payloads("t2", 1), "page": payloads("p2", 1)}),
            w.append_many({"track": payloads("t3", 1)}),
            return_exceptions=True,
        )

    mixed, alone = asyncio.run(both())
    assert isinstance(mixed, IngressError) and mixed.status == 503, mixed
    assert alone is None
    written = taken(WriterTail(tmp_path / "track"))
    assert written == [*payloads("t", 1), *payloads("t2", 1), *payloads("t3", 1)]


def test_a_silent_producer_stops_a_replica_after_a_share_of_the_capacity(
    tmp_path: Path,
) -> None:
    publish(tmp_path, "track", held=0, capacity=40_000, age_s=60)
    w = writer(tmp_path, capacity_bytes=40_000)
    with pytest.raises(IngressError) as refused:
        for _ in range(100):
            asyncio.run(w.append("track", payloads("z", 10)))
            time.sleep(0.06)  # past the replica's cache of the state
    assert refused.value.code == "producer_unavailable"


def test_a_log_with_no_producer_asks_for_one_and_takes_a_share_of_the_capacity(
    tmp_path: Path,
) -> None:
    asked: list[str] = []
    w = SegmentWriter(tmp_path, capacity_bytes=40_000, segment_bytes=MiB, unowned=asked.append)
    accepted = 0
    with pytest.raises(IngressError) as refused:
        for _ in range(100):
            asyncio.run(w.append("_deadletter", payloads("d", 10)))
            accepted += 10
            time.sleep(0.06)  # past the replica's cache of the state
    assert refused.value.code == "producer_unavailable"
    # Asked once (again only after STALE_AFTER_S), and the events taken are all there.
    assert asked == ["_deadletter"]
    assert len(taken(WriterTail(tmp_path / "_deadletter"))) == accepted > 0
    # Once the producer publishes its state, the log takes events again.
    publish(tmp_path, "_deadletter", held=0, capacity=40_000)
    time.sleep(0.06)
    asyncio.run(w.append("_deadletter", payloads("e", 1)))


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, as a full /dev/shm would be (the tests run as root, as CI does)."""
    mount = tmp_path / "shm"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_log_dir_that_fills_refuses_whole_requests_and_keeps_the_rest(
    tiny_tmpfs: Path,
) -> None:
    w = writer(tiny_tmpfs)
    acknowledged: list[bytes] = []
    refused = 0
    for i in range(200):
        batch = [orjson.dumps({"n": i, "k": k, "pad": "x" * 900}) for k in range(10)]
        try:
            asyncio.run(w.append("track", batch))
            acknowledged += batch
        except IngressError as exc:
            assert (exc.status, exc.code) == (503, "log_full")
            refused += 1
    assert refused and acknowledged
    # Every acknowledged event is whole in the file, and nothing half-written follows.
    assert events(WriterTail(tiny_tmpfs / "track").take()) == acknowledged
    for f in (tiny_tmpfs / "track" / segments.WRITERS).glob("*/*.seg"):
        _, ends = segments.decode(f.read_bytes())
        assert not ends or ends[-1] == os.path.getsize(f)
    with contextlib.suppress(OSError):
        w.close()


def test_a_write_that_cannot_be_rolled_back_moves_on_to_the_next_segment(
    tmp_path: Path,
) -> None:
    w = writer(tmp_path)
    asyncio.run(w.append("track", payloads("before", 3)))
    tail = WriterTail(tmp_path / "track")
    assert len(taken(tail)) == 3
    os.close(w._segments["track"].fd)  # the write fails, and so does cutting the file back
    with pytest.raises(IngressError) as refused:
        asyncio.run(w.append("track", payloads("lost", 2)))
    assert (refused.value.status, refused.value.headers["Retry-After"]) == (503, "1")
    asyncio.run(w.append("track", payloads("after", 4)))
    # The next write went to a later segment, which the producer reads: nothing skipped.
    assert [orjson.loads(p)["tag"] for p in taken(tail)] == ["after"] * 4
