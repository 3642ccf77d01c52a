"""`SegmentLog`: appends survive a reopen, commits free space, offsets never go back."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from actors import log as log_module
from actors.log import LogFull, SegmentLog
from core import segments


def read(log: SegmentLog, start: int, end: int) -> list[bytes]:
    data, offsets = log.read_joined(start, end)
    return [data[a:b].tobytes() for a, b in itertools.pairwise(offsets.tolist())]


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [f'{{"n":{i}}}'.encode() for i in range(start, start + n)]


def test_append_read_and_reopen(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, ["s3", "kinesis"], segment_bytes=200)
    assert log.append(payloads(10)) == 0
    assert log.append(payloads(5, 10)) == 10
    log.commit("s3", 12)
    log.close()
    again = SegmentLog(tmp_path, ["s3", "kinesis"], segment_bytes=200)
    assert (again.start, again.end) == (0, 15)  # kinesis has committed nothing
    assert read(again, 0, 15) == payloads(15)
    assert again.cursors["s3"].offset == 12 and again.cursors["kinesis"].offset == 0
    assert again.log_id == log.log_id


def test_segments_deleted_once_every_sink_passed_them(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, ["a", "b"], segment_bytes=100)
    for i in range(10):
        log.append(payloads(3, i * 3))
    segments = len(list(tmp_path.glob("*.seg")))
    assert segments > 3
    log.commit("a", 30)
    assert len(list(tmp_path.glob("*.seg"))) == segments  # "b" still needs them
    log.commit("b", 30)
    assert list(tmp_path.glob("*.seg")) == []
    log.close()
    reopened = SegmentLog(tmp_path, ["a", "b"])
    assert reopened.end == 30  # offsets continue after everything was deleted
    assert reopened.append(payloads(1)) == 30


def test_torn_tail_is_dropped(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, ["s"])
    log.append(payloads(3))
    log.close()
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a crash in the middle of a write
    reopened = SegmentLog(tmp_path, ["s"])
    assert read(reopened, 0, reopened.end) == payloads(3)
    assert reopened.append(payloads(1, 3)) == 3
    reopened.close()
    assert read(SegmentLog(tmp_path, ["s"]), 0, 4) == payloads(4)


def test_capacity_refuses_and_keeps_nothing(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, ["s"], capacity_bytes=100)
    log.append([b"x" * 60])
    with pytest.raises(LogFull):
        log.append([b"y" * 60])
    assert log.end == 1
    log.commit("s", 1)
    log.append([b"y" * 60])  # space is back once the sink committed


def test_cut_respects_events_and_bytes(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, ["s"])
    log.append([b"a" * 10] * 100)
    assert log.cut(0, 30, 10_000) == 30
    assert log.cut(0, 100, 55) == 5
    assert log.cut(0, 100, 1) == 1  # always at least one record


def test_new_sink_starts_at_oldest_held_record(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, ["old"])
    log.append(payloads(4))
    log.close()
    both = SegmentLog(tmp_path, ["old", "new"])
    assert both.cursors["new"].offset == 0
    assert os.path.exists(tmp_path / "log.id")


def test_reopened_log_remembers_uncommitted_batch_ranges(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, ["s3"])
    log.append(payloads(30))
    for start, end in ((0, 10), (10, 25), (25, 30)):
        log.record_batch("s3", start, end)
    log.commit("s3", 10)
    log.close()
    again = SegmentLog(tmp_path, ["s3"])
    # Re-sent as the same ranges, so their batch ids (and S3 keys) are the same.
    assert again.unfinished_batches("s3") == [(10, 25), (25, 30)]


def test_ranges_are_read_back_from_the_files_across_segments(tmp_path: Path) -> None:
    # Sizes vary so a record's place in its file depends on every record before it.
    sent = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 37)) for i in range(5000)]
    log = SegmentLog(tmp_path, ["a", "b"], segment_bytes=4096)
    for at in range(0, 5000, 7):
        log.append(sent[at : at + 7])
    assert len(list(tmp_path.glob("*.seg"))) > 20
    log.commit("a", 4500)
    log.commit("b", 4321)  # frees whole segments before it; the one it is in stays
    for start, end in ((4321, 4322), (4321, 5000), (4400, 4999), (4999, 5000)):
        data, offsets = log.read_joined(start, end)
        assert bytes(data) == b"".join(sent[start:end])
        assert offsets.tolist() == [0, *itertools.accumulate(map(len, sent[start:end]))]
    with pytest.raises(IndexError):
        read(log, 0, 10)  # committed by every sink: not held
    log.append([b"after"])
    log.close()
    reopened = SegmentLog(tmp_path, ["a", "b"], segment_bytes=4096)
    assert read(reopened, 4321, 5001) == [*sent[4321:], b"after"]


def test_frames_taken_from_replicas_read_back_whole_and_in_part(tmp_path: Path) -> None:
    # What a producer stores: replicas' group frames as they were written, here mixed
    # with an older Sluice's one-record frames, over more than a read's buffer (1 MiB),
    # so the copy goes a run of payloads at a time across reads and segments.
    sent = [b'{"n":%d,"pad":"%s"}' % (i, b"y" * (i * 13 % 900)) for i in range(6000)]
    parts, at = [], 0
    while at < len(sent):
        size = 1 + at % 40
        if at % 3 == 0:  # an older Sluice's records: a frame each
            for p in sent[at : at + size]:
                crc = segments.crc32(at.to_bytes(8, "little") + p)
                parts.append(segments.HEADER.pack(len(p), crc, at) + p)
        else:
            parts.append(segments.encode(sent[at : at + size], at))
        at += size
    data = b"".join(parts)
    frames = segments.scan(data)
    assert frames.ends[-1] == len(data) and frames.lengths == [len(p) for p in sent]
    log = SegmentLog(tmp_path, ["a"], segment_bytes=1024 * 1024)
    starts = [0, *frames.ends]
    view = memoryview(data)
    # Takes of 50 frames, then one of more frames than a `writev` takes (IOV_MAX, 1,024
    # here): each frame its own view, as a producer merges two writers' frames.
    for chunk in [slice(at, at + 50) for at in range(0, 1000, 50)] + [slice(1000, None)]:
        start = sum(frames.counts[: chunk.start])
        count = sum(frames.counts[chunk])
        ends = frames.ends[chunk]
        log.append_records(
            frames.lengths[start : start + count],
            [view[starts[i] : end] for i, end in enumerate(ends, chunk.start)],
            frames.counts[chunk],
            frames.overheads[chunk],
        )
    assert len(frames.ends) - 1000 > log_module._IOV_MAX
    assert len(list(tmp_path.glob("*.seg"))) > 1
    big = [b'{"big":%d,"pad":"%s"}' % (i, b"z" * 900) for i in range(1500)]
    log.append(big)  # one frame larger than a read's buffer: read straight into place
    sent += big
    for start, end in ((0, 7500), (1, 2), (17, 5999), (2999, 3001), (5990, 7400)):
        assert read(log, start, end) == sent[start:end]
    log.close()
    assert read(SegmentLog(tmp_path, ["a"]), 0, 7500) == sent
