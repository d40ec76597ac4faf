"""Deflicker, Temporal Blend, Colour Lock and Warped Init, run through the real engine."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nodes.types import Model, Video
from nodes.video.metrics import mean_luma_jump, mean_psnr, warping_error
from tests.benchmarks.flicker_rows import add_flicker, make_registry, moving_clip, run_node, texture

LUMA = np.array([0.2126, 0.7152, 0.0722])
V = "imagebash.video."


@pytest.fixture(scope="module")
def reg():
    return make_registry()


@pytest.fixture(scope="module")
def clips():
    clean = moving_clip(24, 128)
    return Video.from_batch(clean), Video.from_batch(add_flicker(clean))


def _frames(video: Video) -> np.ndarray:
    return np.concatenate([video.frame(i) for i in range(len(video))])


# Temporal Blend -----------------------------------------------------------------------------------
def test_temporal_blend_cuts_the_warping_error_and_raises_psnr(reg, clips):
    clean, flick = clips
    out = run_node(V + "temporal_blend", {}, {"frames": flick, "source": clean}, reg)
    assert isinstance(out, Video) and len(out) == len(flick) and out.size == flick.size
    steady = Video.from_batch(_frames(out))
    ratio = warping_error(steady, clean) / warping_error(flick, clean)
    gain = mean_psnr(steady, clean) - mean_psnr(flick, clean)
    assert ratio <= 0.7, ratio
    assert gain >= 3.0, gain
    np.testing.assert_array_equal(steady.frame(0), flick.frame(0))  # nothing to blend with at frame 0


def test_temporal_blend_without_source_reads_motion_from_the_frames(reg, clips):
    clean, flick = clips
    out = Video.from_batch(_frames(run_node(V + "temporal_blend", {"strength": 0.5}, {"frames": flick}, reg)))
    assert warping_error(out, clean) < 0.7 * warping_error(flick, clean)


def test_temporal_blend_resets_at_a_scene_cut(reg):
    a = moving_clip(4, 64, seed=3)
    b = 1.0 - moving_clip(4, 64, seed=4) * 0.3  # another shot: a much brighter histogram
    clip = Video.from_batch(np.concatenate([a, b]))
    out = run_node(V + "temporal_blend", {"strength": 0.9}, {"frames": clip}, reg)
    np.testing.assert_array_equal(out.frame(4), clip.frame(4))  # the first frame after the cut is untouched
    assert not np.array_equal(out.frame(5), clip.frame(5))


def test_frames_pulled_out_of_order_match_in_order(reg, clips):
    clean, flick = clips
    in_order = _frames(run_node(V + "temporal_blend", {}, {"frames": flick, "source": clean}, reg))
    jumpy = run_node(V + "temporal_blend", {}, {"frames": flick, "source": clean}, reg)
    np.testing.assert_allclose(jumpy.frame(5), in_order[5:6], atol=1e-6)
    np.testing.assert_allclose(jumpy.frame(2), in_order[2:3], atol=1e-6)
    np.testing.assert_allclose(jumpy.frame(9), in_order[9:10], atol=1e-6)
    defl = _frames(run_node(V + "deflicker", {}, {"frames": flick}, reg))
    jumpy = run_node(V + "deflicker", {}, {"frames": flick}, reg)
    np.testing.assert_array_equal(jumpy.frame(5), defl[5:6])
    np.testing.assert_array_equal(jumpy.frame(2), defl[2:3])


# Deflicker ----------------------------------------------------------------------------------------
def _gained_clip(gains: list[float]) -> np.ndarray:
    tex = texture(32, 32, seed=7) * 0.6 + 0.1
    return np.stack([np.clip(tex * g, 0, 1) for g in gains]).astype(np.float32)


def _by_hand(clip: np.ndarray, t: int, size: int) -> np.ndarray:
    """ffmpeg's am gain with a centred window cut to the frames that exist, applied to luma."""
    lo, hi = max(t - (size - 1) // 2, 0), min(t + size // 2, len(clip) - 1)
    means = [float((clip[k].reshape(-1, 3).mean(0)) @ LUMA) for k in range(lo, hi + 1)]
    gain = np.mean(means) / float(clip[t].reshape(-1, 3).mean(0) @ LUMA)
    y = clip[t] @ LUMA
    return np.clip(clip[t] + (gain - 1) * y[..., None], 0, 1)


def test_deflicker_at_the_clip_borders_uses_the_frames_that_exist(reg):
    clip = _gained_clip([1.0, 1.3, 0.8, 1.1, 0.9, 1.2, 0.85])
    out = run_node(V + "deflicker", {"size": 5}, {"frames": Video.from_batch(clip)}, reg)
    for t in (0, 1, 3, len(clip) - 1):
        np.testing.assert_allclose(out.frame(t)[0], _by_hand(clip, t, 5), atol=1e-5)


def test_deflicker_flattens_a_luma_ramp_flicker_and_keeps_chroma(reg):
    gains = [0.85 + 0.1 * (i % 4) for i in range(24)]  # a sawtooth of brightness
    clip = Video.from_batch(_gained_clip(gains))
    out = Video.from_batch(_frames(run_node(V + "deflicker", {"size": 8}, {"frames": clip}, reg)))
    assert mean_luma_jump(out) < 0.25 * mean_luma_jump(clip)
    ycc_in = cv2.cvtColor(clip.frame(3)[0], cv2.COLOR_RGB2YCrCb)
    ycc_out = cv2.cvtColor(out.frame(3)[0], cv2.COLOR_RGB2YCrCb)
    # the gain goes on luma only: (R - Y, B - Y) stay (cv2's YCrCb is Rec.601, so allow a little)
    assert np.abs(ycc_out[..., 1:] - ycc_in[..., 1:]).max() < 0.01
    for mode in ("gm", "hm", "median"):
        steady = Video.from_batch(_frames(run_node(V + "deflicker", {"size": 8, "mode": mode}, {"frames": clip}, reg)))
        assert mean_luma_jump(steady) < 0.3 * mean_luma_jump(clip), mode


# Colour Lock --------------------------------------------------------------------------------------
def _lab_stats(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    return lab.mean(0), lab.std(0)


def test_colour_lock_moves_every_frame_to_the_reference(reg):
    clip = moving_clip(4, 48, seed=2) * np.float32([0.6, 0.9, 1.0]) + np.float32([0.2, 0.0, -0.1])
    clip = Video.from_batch(np.clip(clip, 0, 1).astype(np.float32))
    ref = (texture(40, 40, seed=9) * np.float32([1.0, 0.55, 0.4]) + np.float32([0.1, 0.1, 0.05]))[None]
    out = run_node(V + "colour_lock", {}, {"image": clip, "reference": ref}, reg)
    assert isinstance(out, Video) and len(out) == 4
    ref_mean, ref_std = _lab_stats(ref[0])
    for i in range(4):
        before_mean, _ = _lab_stats(clip.frame(i)[0])
        mean, std = _lab_stats(out.frame(i)[0])
        assert np.abs(mean - ref_mean).max() < 1.5 < np.abs(before_mean - ref_mean).max()
        np.testing.assert_allclose(std, ref_std, rtol=0.1, atol=0.5)
    hist = run_node(V + "colour_lock", {"method": "histogram"}, {"image": clip, "reference": ref}, reg)
    q = np.linspace(0.05, 0.95, 7)
    for c in range(3):
        got = np.quantile(hist.frame(1)[0, ..., c], q)
        np.testing.assert_allclose(got, np.quantile(ref[0, ..., c], q), atol=0.01)
    half = run_node(V + "colour_lock", {"strength": 0.5}, {"image": clip, "reference": ref}, reg)
    mid = 0.5 * (clip.frame(0) + out.frame(0))
    np.testing.assert_allclose(half.frame(0), mid, atol=0.02)


# Warped Init --------------------------------------------------------------------------------------
def test_warped_init_runs_img2img_per_frame_on_the_tiny_model(tiny_sd_dir):
    import nodes.diffusion
    from app.engine import EngineSettings
    from app.engine.models import ModelManager

    reg = make_registry(nodes.diffusion)
    src = Video.from_batch(moving_clip(3, 64, seed=5))
    params = {"prompt": "a red house", "steps": 2, "strength": 0.5, "scheduler": "euler", "seed": 3}
    out = run_node(V + "warped_init", params, {"source": src}, reg,
                   links={"model": ("imagebash.diffusion.load_model", "model", {"checkpoint": str(tiny_sd_dir)})},
                   services={"models": ModelManager(EngineSettings(device="cpu"))})
    assert isinstance(out, Video) and len(out) == 3 and out.size == (64, 64)
    frames = _frames(out)
    assert frames.shape == (3, 64, 64, 3) and np.isfinite(frames).all()
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    np.testing.assert_allclose(out.frame(1), frames[1:2], atol=1e-4)  # pulled again: the same frame


def test_warped_init_starts_each_frame_from_the_warped_previous_output(monkeypatch):
    """The init images and seeds Warped Init hands to img2img (img2img replaced by a fake "style")."""
    import nodes.diffusion.generate as generate
    from nodes.registry import node

    calls = []

    def fake_img2img(model, image, prompt, negative, strength, steps, guidance, scheduler, shift, seed, batch,
                     ctx=None):
        calls.append((image.copy(), seed, strength))
        return (image * 0.5 + 0.25).astype(np.float32)  # a "style" that is easy to follow

    monkeypatch.setattr(generate, "img2img", fake_img2img)
    reg = make_registry()

    @node("test.fake_model", registry=reg, category="test")
    def fake_model() -> Model:
        """A model handle nobody opens."""
        return Model("fake", "sd1")

    src = moving_clip(4, 64, step=(2, 0), seed=6)
    out = run_node(V + "warped_init", {"strength": 0.4, "seed": 9}, {"source": Video.from_batch(src)}, reg,
                   links={"model": ("test.fake_model", "model", {})})
    frames = _frames(out)
    assert len(calls) == 4 and [c[1] for c in calls] == [9, 9, 9, 9] and calls[0][2] == pytest.approx(0.4)
    np.testing.assert_allclose(calls[0][0][0], src[0], atol=1e-6)  # frame 0: plain img2img of the source
    # frame t: 0.8 x (previous output moved 2 px along the motion) + 0.2 x source frame t, inside the frame
    expected = 0.8 * (src[1] * 0.5 + 0.25) + 0.2 * src[1]
    np.testing.assert_allclose(calls[1][0][0, 8:-8, 8:-8], expected[8:-8, 8:-8], atol=0.02)
    np.testing.assert_allclose(frames[1], calls[1][0][0] * 0.5 + 0.25, atol=1e-6)
