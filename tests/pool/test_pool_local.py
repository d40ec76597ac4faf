"""A pool of in-process engines (and one `imagebash serve`): the same pixels as one engine, an
engine that drops out mid-run, all engines gone, engines refused before the run."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.client import LocalEngine
from app.engine.executor import Engine
from app.engine.pool import preflight, run_pool
from tests.pool import helpers


@pytest.fixture(scope="module")
def reg():
    return helpers.registry()


@pytest.fixture
def engines(reg):
    made = [LocalEngine(reg), LocalEngine(reg)]
    yield made
    for e in made:
        e.shutdown()


def _one(reg, graph, node):
    return np.asarray(Engine(reg).run(graph, targets=[node]).output(node), dtype=np.float32)


def test_seed_sweep_same_pixels_and_one_output(reg, engines, tmp_path):
    g = helpers.sweep(count=7)
    events = []
    r = run_pool(g, engines, reg, output_dir=tmp_path, per_engine=2, on_progress=events.append)
    assert r.error is None and r.plan.mode == "seeds"
    np.testing.assert_array_equal(r.joined(), _one(reg, helpers.sweep(count=7, save=False), "b"))
    assert len(r.files) == 7 and all(f.endswith(".png") for f in r.files)  # one Save, here, in order
    assert events[-1].items_done == 7 and sum(events[-1].per_engine.values()) == len(r.plan.shards)
    assert set(r.per_engine) == {"local", "local#2"}


def test_frame_range_same_pixels_no_seams(reg, engines, tmp_path):
    clip = helpers.make_clip(tmp_path / "c.mkv", frames=20)
    r = run_pool(helpers.clip_graph(clip, save=True), engines, reg, output_dir=tmp_path / "out", per_engine=3)
    assert r.error is None and len(r.plan.shards) == 6
    one = Engine(reg).run(helpers.clip_graph(clip), targets=["w"]).output("w").to_batch()
    np.testing.assert_array_equal(r.joined(), one)
    assert len(r.files) == 1 and r.files[0].endswith(".mkv")  # one video file
    from nodes.video.reader import open_video

    back = open_video(r.files[0]).to_batch()
    assert back.shape == one.shape


def test_engine_dropping_out_moves_its_shards(reg, engines, tmp_path):
    flaky = helpers.Flaky(engines[1], ok=1)
    events = []
    r = run_pool(helpers.sweep(count=8, save=False), [engines[0], flaky], reg, output_dir=tmp_path,
                 per_engine=4, on_progress=events.append)
    assert r.error is None and r.gone == ["flaky"]
    np.testing.assert_array_equal(r.joined(), _one(reg, helpers.sweep(count=8, save=False), "b"))
    assert sum(r.per_engine.values()) == len(r.plan.shards) and r.per_engine["flaky"] == 1
    assert any("left the pool" in e.message for e in events)


def test_all_engines_gone_keeps_what_finished(reg, engines, tmp_path):
    r = run_pool(helpers.sweep(count=8), [helpers.Flaky(engines[0], 1, "a"), helpers.Flaky(engines[1], 2, "b")],
                 reg, output_dir=tmp_path, per_engine=4)
    assert r.error and "every engine left the pool" in r.error and "3 of 8 shards" in r.error
    assert str(r.parts_dir) in r.error and len(list(r.parts_dir.glob("part_0_*.npy"))) == 3
    assert len(r.files) == 3  # the finished images were saved too


def test_node_failure_stops_the_run(reg, engines, tmp_path):
    g = helpers.sweep(count=4, save=False)
    g.set_param("b", "radius", 99999)  # out of range: the engine refuses the workflow
    r = run_pool(g, engines, reg, output_dir=tmp_path)
    assert r.error and r.gone == []


def test_preflight_names_a_missing_model(reg, engines):
    from app.graph.model import NodeInstance

    g = helpers.sweep()
    g.add_node(NodeInstance("m", "imagebash.diffusion.load_model", params={"checkpoint": "nowhere.safetensors"}))
    ok, lines = preflight(engines[:1], g)
    assert ok == [] and len(lines) == 1 and "nowhere.safetensors" in lines[0] and lines[0].startswith("local")


def test_a_serve_engine_in_the_pool(reg, engines, tmp_path):
    """One local engine and one real `imagebash serve` (8-bit frames over the wire: same PNG bytes)."""
    from app.engine.remote import RemoteEngine
    from tests.server.conftest import ServerProcess

    srv = ServerProcess(tmp_path, tmp_path / "srv").start()
    remote = RemoteEngine(srv.url, srv.token)
    bad = RemoteEngine(srv.url, "wrong-token-" + "y" * 20)
    try:
        ok, lines = preflight([engines[0], remote, bad], helpers.sweep())
        assert ok == [engines[0], remote]
        assert len(lines) == 1 and srv.url in lines[0] and "refused the token" in lines[0]
        r = run_pool(helpers.sweep(count=6, save=False), [engines[0], remote], reg, output_dir=tmp_path / "o",
                     per_engine=2)
        assert r.error is None and r.per_engine[srv.url] >= 1
        np.testing.assert_array_equal(r.joined(), _one(reg, helpers.sweep(count=6, save=False), "b"))
    finally:
        remote.shutdown()
        bad.shutdown()
        srv.stop()
