"""`SeenIds`: the node's Bloom-filter seen-set, in files every replica maps."""

from __future__ import annotations

import time
from pathlib import Path

from ingress.dedup import FP_RATE, SeenIds


def test_ids_are_seen_after_add_by_another_instance_and_per_source(tmp_path: Path) -> None:
    one = SeenIds(tmp_path, window_s=3600, capacity=100_000)
    few, many = ["a", "b"], [f"id-{i}" for i in range(1000)]
    assert one.seen(one.keys("web", few)) == [False, False]
    assert not any(one.seen(one.keys("web", many)))
    one.add(one.keys("web", few))
    one.add(one.keys("web", many))
    # Another replica (or the service after a restart) maps the same files.
    other = SeenIds(tmp_path, window_s=3600, capacity=100_000)
    assert other.seen(other.keys("web", few)) == [True, True]
    assert all(other.seen(other.keys("web", many)))
    assert other.seen(other.keys("ios", few)) == [False, False]  # per source
    assert other.seen(other.keys("web", ["a", "new"])) == [True, False]


def test_no_false_positives_among_many_new_ids(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path, window_s=3600, capacity=200_000)
    seen.add(seen.keys("web", [f"old-{i}" for i in range(100_000)]))
    fresh = seen.seen(seen.keys("web", [f"new-{i}" for i in range(100_000)]))
    assert sum(fresh) <= 1  # expected 100,000 x FP_RATE at half capacity: ~0
    assert FP_RATE <= 1e-6


def test_an_id_is_forgotten_after_two_windows(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path, window_s=0.5, capacity=1000)
    seen.add(seen.keys("web", ["x"]))
    assert seen.seen(seen.keys("web", ["x"])) == [True]
    time.sleep(1.05)  # two slices later
    assert seen.seen(seen.keys("web", ["x"])) == [False]
    assert len(list(tmp_path.glob("*.bloom"))) <= 2  # old slices are deleted


def test_a_full_slice_takes_no_more_ids(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path, window_s=3600, capacity=10)
    seen.add(seen.keys("web", [f"a{i}" for i in range(10)]))
    seen.add(seen.keys("web", ["late"]))
    assert seen.seen(seen.keys("web", ["late", "a3"])) == [False, True]
