"""`SeenIds`: the node's table of seen fingerprints, in files every replica maps."""

from __future__ import annotations

import time
from pathlib import Path

from ingress.dedup import FP_RATE, SeenIds, _hashes, _pairs_and_fingerprints


def test_ids_are_seen_after_add_by_another_instance_and_per_source(tmp_path: Path) -> None:
    one = SeenIds(tmp_path, window_s=3600, capacity=100_000)
    few, many = ["a", "b"], [f"id-{i}" for i in range(1000)]
    assert one.lookup("web", few).seen == [False, False]
    assert not any(one.lookup("web", many).seen)
    one.add(one.lookup("web", few))
    one.add(one.lookup("web", many))
    # Another replica (or the service after a restart) maps the same files.
    other = SeenIds(tmp_path, window_s=3600, capacity=100_000)
    assert other.lookup("web", few).seen == [True, True]
    assert all(other.lookup("web", many).seen)
    assert other.lookup("ios", few).seen == [False, False]  # per source
    assert other.lookup("web", ["a", "new"]).seen == [True, False]


def test_buckets_and_fingerprints_as_arrays_are_the_python_ones() -> None:
    # Tables written before the arrays came (and by the few-ids path) stay readable.
    ids = [f"id-{i}" for i in range(500)] + ["", "é", "x" * 5000]
    buckets = 1_250_003
    pairs, fingerprints = _pairs_and_fingerprints("web", ids, buckets)
    expected = [
        ((low & 0xFFFFFFFF) % buckets, (low >> 32) % buckets, fp) for low, fp in _hashes("web", ids)
    ]
    rows = pairs.tolist()
    assert [(a, b, fp) for (a, b), fp in zip(rows, fingerprints.tolist(), strict=True)] == expected


def test_few_and_many_ids_share_one_layout_and_only_stored_ids_are_added(
    tmp_path: Path,
) -> None:
    # A few ids are worked out in Python, many with numpy: each sees what the other added.
    seen = SeenIds(tmp_path, window_s=3600, capacity=100_000)
    many = [f"id-{i}" for i in range(100)]
    found = seen.lookup("web", many)
    seen.add(found, [i % 2 == 0 for i in range(100)])  # only the even ones were stored
    assert seen.lookup("web", ["id-0", "id-1", "id-98"]).seen == [True, False, True]
    seen.add(seen.lookup("web", ["x-1", "x-2"]), [False, True])
    assert seen.lookup("web", ["x-1", "x-2", *many]).seen == [
        False,
        True,
        *[i % 2 == 0 for i in range(100)],
    ]


def test_ids_placed_by_lookups_before_either_add_all_go_in(tmp_path: Path) -> None:
    # A lookup says where each id goes; requests in flight together pick the same empty
    # slots (32 buckets: ids of one request share buckets too). Every id still goes in.
    seen = SeenIds(tmp_path, window_s=3600, capacity=200)
    assert seen.buckets == 32
    first = seen.lookup("web", [f"a-{i}" for i in range(50)])
    second = seen.lookup("web", [f"b-{i}" for i in range(50)])
    seen.add(first)
    seen.add(second)
    ids = [f"a-{i}" for i in range(50)] + [f"b-{i}" for i in range(50)]
    assert all(seen.lookup("web", ids).seen)
    (current,) = [s for n, s in seen.slices.items() if n == int(time.time() // 3600)]
    assert current.added == 100
    assert int((current.words != 0).sum()) == 100  # no fingerprint written over another


def test_no_false_positives_among_many_new_ids(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path, window_s=3600, capacity=200_000)
    seen.add(seen.lookup("web", [f"old-{i}" for i in range(100_000)]))
    fresh = seen.lookup("web", [f"new-{i}" for i in range(100_000)]).seen
    assert not any(fresh)  # expected 100,000 x FP_RATE: 3e-13
    assert FP_RATE <= 1e-17


def test_a_million_new_ids_against_a_full_slice_are_all_new(tmp_path: Path) -> None:
    """At capacity: 1,000,000 lookups expect 3e-12 false positives (a Bloom filter of 64
    bits an id expected 0.008; the ids and their hashes are fixed, so this passes or
    fails the same every run)."""
    seen = SeenIds(tmp_path, window_s=3600, capacity=100_000)
    for start in range(0, 100_000, 10_000):
        seen.add(seen.lookup("web", [f"old-{i}" for i in range(start, start + 10_000)]))
    false_positives = 0
    for start in range(0, 1_000_000, 10_000):
        found = seen.lookup("web", [f"new-{i}" for i in range(start, start + 10_000)])
        false_positives += sum(found.seen)
    assert false_positives == 0


def test_an_id_is_forgotten_after_two_windows(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path, window_s=0.5, capacity=1000)
    seen.add(seen.lookup("web", ["x"]))
    assert seen.lookup("web", ["x"]).seen == [True]
    time.sleep(1.05)  # two slices later
    assert seen.lookup("web", ["x"]).seen == [False]
    assert len(list(tmp_path.glob("*.seen"))) <= 2  # old slices are deleted


def test_a_full_slice_takes_no_more_ids(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path, window_s=3600, capacity=10)
    seen.add(seen.lookup("web", [f"a{i}" for i in range(10)]))
    seen.add(seen.lookup("web", ["late"]))
    assert seen.lookup("web", ["late", "a3"]).seen == [False, True]


def test_files_of_another_layout_are_never_read(tmp_path: Path) -> None:
    small = SeenIds(tmp_path, window_s=3600, capacity=1000)
    small.add(small.lookup("web", [f"id-{i}" for i in range(1000)]))
    # Another capacity (or an older Sluice's files): its own files; the old ones go.
    other = SeenIds(tmp_path, window_s=3600, capacity=2000)
    assert not any(other.lookup("web", [f"id-{i}" for i in range(1000)]).seen)
    assert all(str(other.buckets) in p.name for p in tmp_path.glob("*.seen"))
    assert len(list(tmp_path.glob("*.seen"))) == 2


def test_a_slice_near_capacity_remembers_nearly_every_id(tmp_path: Path) -> None:
    """Two buckets an id and the emptier one taken: at capacity (80% of the slots)
    hardly an id finds both of its buckets full, whether added few or many at a time."""
    seen = SeenIds(tmp_path, window_s=3600, capacity=20_000)
    ids = [f"id-{i}" for i in range(20_000)]
    for start in range(0, 19_000, 1000):
        seen.add(seen.lookup("web", ids[start : start + 1000]))
    for start in range(19_000, 20_000, 4):
        seen.add(seen.lookup("web", ids[start : start + 4]))
    remembered = sum(seen.lookup("web", ids).seen)
    assert remembered >= 0.999 * len(ids)
    assert not any(seen.lookup("web", [f"new-{i}" for i in range(20_000)]).seen)


def test_an_older_sluices_bloom_filters_are_deleted(tmp_path: Path) -> None:
    (tmp_path / "20000.1250x512.bloom").write_bytes(b"\xff" * 64)
    SeenIds(tmp_path, window_s=3600, capacity=1000)
    assert not list(tmp_path.glob("*.bloom"))
