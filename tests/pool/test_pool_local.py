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
    # the steady engine answers a little late, so the flaky one surely gets its first shard on a busy machine
    steady = helpers.Flaky(engines[0], ok=10**6, name="steady", delay=0.2)
    events = []
    r = run_pool(helpers.sweep(count=8, save=False), [steady, flaky], reg, output_dir=tmp_path,
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


def test_cancel_stops_handing_out_shards_and_keeps_what_finished(reg, engines, tmp_path):
    import threading

    cancel = threading.Event()

    def progress(p):
        if p.shards_done >= 2:
            cancel.set()

    slow = [helpers.Flaky(e, ok=10**6, name=n, delay=0.3) for e, n in zip(engines, ("a", "b"), strict=True)]
    r = run_pool(helpers.sweep(count=8), slow, reg, output_dir=tmp_path, per_engine=4, on_progress=progress,
                 cancel=cancel)
    done = len(list(r.parts_dir.glob("part_0_*.npy")))
    assert r.cancelled and r.error.startswith(f"cancelled; {done} of 8 shards finished")
    assert 2 <= done < 8 and str(r.parts_dir) in r.error
    assert len(r.files) == done  # the finished images were saved; nothing after the cancel ran


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
        # the in-process engine slowed down, so that the remote one gets a shard on a loaded machine too
        slow = helpers.Flaky(engines[0], ok=99, name="local", delay=0.3)
        r = run_pool(helpers.sweep(count=6, save=False), [slow, remote], reg, output_dir=tmp_path / "o",
                     per_engine=2)
        assert r.error is None and r.per_engine[srv.url] >= 1
        np.testing.assert_array_equal(r.joined(), _one(reg, helpers.sweep(count=6, save=False), "b"))
    finally:
        remote.shutdown()
        bad.shutdown()
        srv.stop()


@pytest.mark.parametrize(("start", "max_frames"), [(0, 0), (5, 13)])
def test_frame_range_keeps_the_clips_sound(reg, engines, tmp_path, start, max_frames):
    """A pooled clip with a sine tone: the saved file's sound lasts as long as its frames (the
    source's sound trimmed to the range), as a one-engine run's does."""
    pytest.importorskip("av")
    from tests.video.conftest import make_clip, stream_durations

    clip = make_clip(tmp_path / "tone.mp4", n=30, fps=24, tone=440.0)
    g = helpers.clip_graph(clip, save=True, start=start, max_frames=max_frames)
    g.set_param("save", "codec", "h264")
    r = run_pool(g, engines, reg, output_dir=tmp_path / "out", per_engine=2)
    assert r.error is None and r.plan.mode == "frames" and len(r.plan.shards) == 4
    frames = max_frames or 30 - start
    assert r.plan.audio is not None and r.plan.audio.duration == pytest.approx(frames / 24)
    [path] = r.files
    video_s, audio_s = stream_durations(path)
    assert video_s == pytest.approx(frames / 24, abs=1e-6)
    # decoded AAC comes in 1024-sample frames (and an encoder delay): within two of them, as the
    # same range saved by one engine
    assert audio_s is not None and audio_s == pytest.approx(video_s, abs=2048 / 48000)


def test_engines_that_hold_the_model_go_first(reg, tmp_path, tiny_sd_ckpt, tiny_sd_dir):
    """An engine that ran a model says it holds it (by path, file name) and goes first; a fresh
    one holds nothing, and asking it builds nothing."""
    from app.engine.pool.runner import EngineWorker, loaded_models, warm_first
    from nodes.registry import default_registry
    from tests.diffusion.conftest import txt2img_graph

    cold, warm = LocalEngine(default_registry()), LocalEngine(default_registry())
    try:
        assert loaded_models(warm) == set()
        assert warm._engine is None  # asking built no engine (no torch import for an idle one)
        graph = txt2img_graph(str(tiny_sd_ckpt), steps=1)
        graph.set_param("load", "config", str(tiny_sd_dir))
        warm.engine.run(graph, targets=["gen"])
        held = loaded_models(warm)
        assert {str(tiny_sd_ckpt), tiny_sd_ckpt.name} <= held
        workers = [EngineWorker(cold, "cold"), EngineWorker(warm, "warm")]
        assert [w.name for w in warm_first(workers, {tiny_sd_ckpt.name})] == ["warm", "cold"]
        assert [w.name for w in warm_first(workers, {str(tiny_sd_ckpt)})] == ["warm", "cold"]
        assert [w.name for w in warm_first(workers, {"other.safetensors"})] == ["cold", "warm"]
    finally:
        cold.shutdown()
        warm.shutdown()
