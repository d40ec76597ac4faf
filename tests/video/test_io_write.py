"""Save Video: every codec round-trips, FFV1 exactly, ProRes and VP9 keep alpha, GIF/WebP loop, temp names."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image as PILImage

from nodes.types import Cancelled, Video
from nodes.video import VideoCodec, images_to_video, open_video, save_video
from tests.image.helpers import FakeContext
from tests.video.conftest import number_frame, read_number


def _numbered(n: int = 60, w: int = 32, h: int = 32) -> Video:
    return Video(n, 24.0, (w, h), lambda i: (number_frame(i, w, h).astype(np.float32) / 255)[None])


@pytest.mark.parametrize("codec", [c for c in VideoCodec if c not in (VideoCodec.MJPG,)])
def test_round_trip_each_codec(tmp_path, codec):
    path = save_video(_numbered(), "rt", codec=codec, ctx=FakeContext(tmp_path))
    v = open_video(pathlib.Path(path))
    assert len(v) == 60
    got = [read_number(v.frame(i)) for i in range(0, 60, 6)]
    assert max(abs(g - w) for g, w in zip(got, range(0, 60, 6), strict=True)) <= 1


def test_mjpg_legacy_codec_still_works(tmp_path):
    path = save_video(_numbered(20), "m", codec="mjpg", ctx=FakeContext(tmp_path))
    assert path.endswith(".avi") and len(open_video(pathlib.Path(path))) == 20


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_ffv1_is_exact(tmp_path, bit_depth):
    rng = np.random.default_rng(bit_depth)
    scale = 65535 if bit_depth == 16 else 255
    frames = (rng.integers(0, scale + 1, (60, 24, 32, 3)) / scale).astype(np.float32)
    path = save_video(images_to_video(frames, fps=30), "l", codec="ffv1", bit_depth=bit_depth,
                      ctx=FakeContext(tmp_path))
    assert path.endswith(".mkv")
    back = open_video(pathlib.Path(path))
    assert len(back) == 60
    for i in (0, 17, 59):
        assert np.array_equal(np.round(back.frame(i)[0] * scale), np.round(frames[i] * scale))


def test_prores4444_keeps_alpha(tmp_path):
    frames = np.zeros((5, 16, 16, 4), np.float32)
    frames[..., 0] = 0.5
    frames[..., 3] = np.linspace(0.1, 0.9, 5)[:, None, None]
    path = save_video(images_to_video(frames, fps=10), "p", codec="prores4444", ctx=FakeContext(tmp_path))
    v = open_video(pathlib.Path(path))
    assert v.channels == 4
    assert v.frame(4)[0, ..., 3].mean() == pytest.approx(0.9, abs=0.01)


def test_vp9_keeps_alpha_and_reads_it_back(tmp_path):
    """yuva420p in WebM: the reader decodes with libvpx-vp9 (FFmpeg's own vp9 decoder drops alpha)."""
    frames = np.zeros((12, 32, 32, 4), np.float32)
    frames[..., 0] = np.linspace(0.0, 1.0, 12)[:, None, None]
    frames[..., 3] = np.linspace(0.0, 1.0, 32)[None, None, :]  # a horizontal alpha ramp
    frames[:, :8, :, 3] = 0.25
    ctx = FakeContext(tmp_path)
    path = save_video(images_to_video(frames, fps=12), "va", codec="vp9", crf=10, ctx=ctx)
    assert not any("alpha dropped" in m for m in ctx.logs)
    v = open_video(pathlib.Path(path))
    assert v.channels == 4 and len(v) == 12
    for i in (11, 0, 6):  # backwards, from the top, forwards: every decoder restart keeps alpha
        f = v.frame(i)[0]
        assert np.abs(f[8:, :, 3] - frames[i, 8:, :, 3]).mean() < 0.03
        assert f[:8, :, 3].mean() == pytest.approx(0.25, abs=0.03)
        assert f[8:, :, 0].mean() == pytest.approx(frames[i, 8:, :, 0].mean(), abs=0.03)


def test_alpha_into_h264_is_dropped_with_a_note(tmp_path):
    ctx = FakeContext(tmp_path)
    save_video(images_to_video(np.ones((2, 8, 8, 4), np.float32)), "a", codec="h264", ctx=ctx)
    assert any("alpha dropped" in m for m in ctx.logs)


@pytest.mark.parametrize("codec,loop", [("gif", 0), ("gif", 3), ("webp", 0), ("webp", 2)])
def test_gif_and_webp_frame_count_and_loop(tmp_path, codec, loop):
    path = save_video(_numbered(12), "anim", codec=codec, loop=loop, ctx=FakeContext(tmp_path))
    with PILImage.open(path) as im:
        assert im.n_frames == 12 and im.info.get("loop") == loop
    assert len(open_video(pathlib.Path(path))) == 12


def test_webp_lossless_is_exact(tmp_path):
    frames = (np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)) / 255).astype(np.float32)
    path = save_video(images_to_video(frames), "w", codec="webp", lossless=True, ctx=FakeContext(tmp_path))
    v = open_video(pathlib.Path(path))
    assert np.array_equal(np.round(v.frame(2)[0] * 255), np.round(frames[2] * 255))


def test_odd_size_is_padded_with_a_note(tmp_path):
    ctx = FakeContext(tmp_path)
    path = save_video(images_to_video(np.full((3, 15, 21, 3), 0.5, np.float32)), "o", codec="h265", ctx=ctx)
    assert open_video(pathlib.Path(path)).size == (22, 16)
    assert any("padded to 22x16" in m for m in ctx.logs)


def test_cancel_leaves_nothing_under_the_final_name(tmp_path):
    ctx = FakeContext(tmp_path / "out", cancel_after=5)
    with pytest.raises(Cancelled):
        save_video(_numbered(30), "c", codec="h264", ctx=ctx)
    assert list((tmp_path / "out").iterdir()) == []


def test_writes_under_a_temporary_name_then_renames(tmp_path, monkeypatch):
    import os

    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append((pathlib.Path(a), pathlib.Path(b))), real(a, b)))
    path = pathlib.Path(save_video(_numbered(4), "t", ctx=FakeContext(tmp_path)))
    (src, dst), = seen
    assert dst == path and src.parent == path.parent and src.suffix == path.suffix and src != path
    assert not src.exists() and path.stat().st_size > 0


def test_frames_are_pulled_one_at_a_time(tmp_path):
    pulled = []

    def get(i):
        pulled.append(i)
        return (number_frame(i).astype(np.float32) / 255)[None]

    save_video(Video(10, 24.0, (32, 32), get), "p", ctx=FakeContext(tmp_path))
    assert pulled == list(range(10))


def test_float_to_int_rounds_and_clamps_like_nan_to_num():
    from nodes.video.writer import _to_int

    x = np.array([np.nan, -np.inf, np.inf, -0.2, 0.0, 0.5 / 255, 0.5, 1.0, 1.2], np.float32)
    assert _to_int(x, False).tolist() == [0, 0, 255, 0, 0, 1, 128, 255, 255]
    assert _to_int(x, True).tolist() == [0, 0, 65535, 0, 0, 129, 32768, 65535, 65535]
    for scale, dtype in ((255, np.uint8), (65535, np.uint16)):
        levels = np.arange(scale + 1).astype(dtype)
        buf = np.empty(levels.shape, np.float32)
        assert np.array_equal(_to_int(levels.astype(np.float32) / np.float32(scale), scale > 255, buf), levels)
