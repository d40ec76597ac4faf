"""Shard plans: a seed sweep, a batch, frame ranges with windowed margins, unsplittable graphs."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.pool import plan_split, shard_graph
from nodes.seeds import parse_seeds, runs
from tests.pool import helpers


@pytest.fixture(scope="module")
def reg():
    return helpers.registry()


def test_seed_list_parsing():
    assert parse_seeds(5, 3) == [5, 6, 7]
    assert parse_seeds(0, 1, "1, 5, 9") == [1, 5, 9]
    assert parse_seeds(0, 1, "10-13,20") == [10, 11, 12, 13, 20]
    assert runs([1, 2, 3, 7, 8, 10]) == [(1, 3), (7, 2), (10, 1)]
    with pytest.raises(ValueError, match="'x'"):
        parse_seeds(0, 1, "1, x")


def test_seed_sweep_rewrites_only_the_seeds_node(reg):
    plan = plan_split(helpers.sweep(count=8), reg, engines=2, per_engine=2)
    assert plan.mode == "seeds" and plan.total == 8
    assert [(s.lo, s.hi) for s in plan.shards] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert [s.overrides for s in plan.shards][1] == {"s": {"base": 12, "count": 2, "seeds": ""}}
    assert plan.cuts == [("b", "image")] and plan.targets == ["b"]
    assert set(plan.work.nodes) == {"s", "n", "b"}  # the Save runs here, once, on the joined batch
    assert plan.finish is not None and "save" in plan.finish.nodes
    g = shard_graph(plan, plan.shards[1])
    assert g.nodes["s"].params["base"] == 12 and g.nodes["n"].params == plan.work.nodes["n"].params


def test_explicit_seed_list_splits_by_stretch(reg):
    plan = plan_split(helpers.sweep(seeds="1, 2, 3, 9, 20, 21"), reg, engines=1, per_engine=1)
    assert [s.overrides["s"]["base"] for s in plan.shards] == [1, 9, 20]
    assert [s.overrides["s"]["count"] for s in plan.shards] == [3, 1, 2]


def test_batch_split_shifts_seeds(reg):
    plan = plan_split(helpers.batch(count=5, seed=3), reg, engines=2, per_engine=1)
    assert plan.mode == "batch"
    assert [s.overrides["n"] for s in plan.shards] == [{"batch_size": 2, "seed": 3}, {"batch_size": 3, "seed": 5}]
    assert "grid" in plan.finish.nodes  # the contact sheet takes the whole batch: it runs here


def test_frame_ranges_carry_window_margins(reg, tmp_path):
    clip = helpers.make_clip(tmp_path / "c.mkv", frames=24)
    plan = plan_split(helpers.clip_graph(clip), reg, engines=2, per_engine=2)
    assert plan.mode == "frames" and plan.total == 24 and plan.margins == (2, 1)
    got = [(s.lo, s.hi, s.overrides["v"]["start"], s.overrides["v"]["max_frames"], s.skip) for s in plan.shards]
    assert got == [(0, 6, 0, 7, 0), (6, 12, 4, 9, 2), (12, 18, 10, 9, 2), (18, 24, 16, 8, 2)]


def test_frame_ranges_respect_start(reg, tmp_path):
    clip = helpers.make_clip(tmp_path / "c.mkv", frames=24)
    plan = plan_split(helpers.clip_graph(clip, start=4, max_frames=10), reg, engines=1, per_engine=2)
    assert plan.total == 10
    assert [(s.overrides["v"]["start"], s.overrides["v"]["max_frames"]) for s in plan.shards] == [(4, 6), (7, 7)]


def test_recursive_windowed_node_runs_unsplit(reg, tmp_path):
    clip = helpers.make_clip(tmp_path / "c.mkv", frames=8)
    plan = plan_split(helpers.clip_graph(clip, windowed="test.ema"), reg, engines=2)
    assert not plan.split and "recursive" in plan.note and "unsplit" in plan.note


def test_whole_batch_node_runs_unsplit(reg):
    from app.graph.model import Link, NodeInstance

    g = helpers.sweep(save=False)
    g.add_node(NodeInstance("norm", "test.normalize"))
    g.connect(Link("b", "image", "norm", "image"))
    plan = plan_split(g, reg, engines=2)
    assert not plan.split and "whole batch" in plan.note


def test_nothing_to_split_has_no_note(reg):
    plan = plan_split(helpers.batch(count=1), reg, engines=2)
    assert not plan.split and plan.note == ""


def test_part_store_adopts_a_workers_files_once(tmp_path):
    """A worker on this machine writes its part files; the first result of a shard is kept, a
    late duplicate's files are removed; 8-bit parts are rounded."""
    from app.engine.pool.joined import PartStore, write_part
    from app.engine.pool.split import Shard

    store = PartStore(tmp_path / "parts", [Shard(0, 0, 2), Shard(1, 2, 3)], 1, dtype="uint8")
    a = np.linspace(0, 1, 2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    first = write_part(store.incoming / "x1.npy", a, "uint8")
    late = write_part(store.incoming / "x2.npy", a, "uint8")
    assert store.accept(0, [first], "a") and not first.exists()
    assert not store.accept(0, [late], "b") and not late.exists()
    assert store.accept(1, [a[:1]], "b") and store.complete
    got = store.batch(0)
    assert got.shape == (3, 4, 4, 3) and np.abs(got[:2] - a).max() <= 0.5 / 255 + 1e-6
