"""Video nodes: encode and decode real files, lazy frames through the engine, frame ranges."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from app.engine import Engine
from nodes.image.util import check_image
from nodes.registry import default_registry
from nodes.types import Cancelled, Video
from nodes.video import VideoCodec, images_to_video, load_video, save_video, video_to_images
from tests.image.helpers import FakeContext, make_graph, open_handles


def _ramp(n: int = 12, h: int = 48, w: int = 64) -> np.ndarray:
    """Frames whose brightness rises with the frame number (easy to check after lossy codecs)."""
    frames = np.zeros((n, h, w, 3), np.float32)
    frames[...] = np.linspace(0.1, 0.9, n, dtype=np.float32)[:, None, None, None]
    frames[:, :, : w // 4, 0] = 1.0  # a red band on the left
    return frames


def _read_all(path: str) -> list[np.ndarray]:
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


@pytest.mark.parametrize("codec,ext", [(VideoCodec.MP4V, ".mp4"), (VideoCodec.H264, ".mp4"),
                                       (VideoCodec.MJPG, ".avi"), (VideoCodec.VP8, ".webm")])
def test_save_and_load_round_trip(ctx, codec, ext):
    frames = _ramp()
    path = save_video(images_to_video(frames, fps=12.0), "clip", codec=codec, ctx=ctx)
    assert path.endswith(ext) and pathlib.Path(path).resolve().parent == ctx.output_dir.resolve()
    assert len(_read_all(path)) == 12
    loaded = load_video(pathlib.Path(path))
    assert loaded.fps == pytest.approx(12.0) and len(loaded.video) == 12 and loaded.video.size == (64, 48)
    back = video_to_images(loaded.video)
    assert back.shape == (12, 48, 64, 3)
    assert np.abs(back[:, :, 32:].mean(axis=(1, 2, 3)) - frames[:, :, 32:].mean(axis=(1, 2, 3))).max() < 0.04
    assert back[:, 10, 5, 0].min() > 0.85


def test_h264_pads_odd_sizes(ctx):
    path = save_video(Video.from_batch(_ramp(3, 15, 21)), "odd", codec=VideoCodec.H264, ctx=ctx)
    assert load_video(pathlib.Path(path)).video.size == (22, 16)


def test_load_range_stride_and_random_access(ctx):
    path = pathlib.Path(save_video(Video.from_batch(_ramp(12)), "r", codec=VideoCodec.MJPG, ctx=ctx))
    lv = load_video(path, start=2, max_frames=4, stride=2)
    assert len(lv.video) == 4 and lv.fps == pytest.approx(12.0)
    means = [lv.video.frame(i)[0, :, 32:].mean() for i in (3, 0, 2, 1)]  # out of order: seeks
    expected = np.linspace(0.1, 0.9, 12)[[8, 2, 6, 4]]
    assert np.allclose(means, expected, atol=0.03)
    picked = video_to_images(lv.video, start=1, count=2, step=2)
    assert picked.shape[0] == 2 and abs(picked[1, :, 32:].mean() - np.linspace(0.1, 0.9, 12)[8]) < 0.03


def test_a_video_file_is_not_held_open(ctx):
    import gc

    from nodes.video import FrameReader

    path = pathlib.Path(save_video(Video.from_batch(_ramp(5)), "held", codec=VideoCodec.MJPG, ctx=ctx))
    video = load_video(path).video
    video.frame(1)
    assert open_handles(path) >= 1  # sequential reads keep one capture open
    video_to_images(video)
    assert open_handles(path) == 0  # released after the last frame
    assert abs(video.frame(4)[0, :, 32:].mean() - 0.9) < 0.03 and open_handles(path) == 0
    video.frame(0)  # reopened on demand
    assert open_handles(path) >= 1
    del video
    gc.collect()
    assert open_handles(path) == 0  # and released when the Video goes away
    reader = FrameReader(path)
    reader.frame(2)
    assert open_handles(path) >= 1
    reader.close()
    assert open_handles(path) == 0
    assert reader.frame(3).shape == (1, 48, 64, 3)


def test_missing_and_broken_video_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        load_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"bad\.mp4"):
        load_video(bad)


def test_cancel_stops_encoding_and_leaves_no_partial_file(tmp_path):
    ctx = FakeContext(tmp_path / "out", cancel_after=3)
    with pytest.raises(Cancelled):
        save_video(Video.from_batch(_ramp(20)), "c", ctx=ctx)
    assert ctx.checks == 4
    assert list((tmp_path / "out").iterdir()) == []


def test_engine_streams_video_through_image_nodes(tmp_path):
    src = save_video(Video.from_batch(_ramp(10)), "src", codec=VideoCodec.MJPG, ctx=FakeContext(tmp_path / "in"))
    g = make_graph({
        "clip": ("video.load", {"path": src}),
        "inv": ("image.invert", {}),
        "small": ("image.resize", {"width": 32, "height": 24, "mode": "stretch"}),
        "save": ("video.save", {"filename_prefix": "graded", "codec": "mjpg"}),
    }, ["clip.video -> inv.image", "inv.image -> small.image", "small.image -> save.video"])
    result = Engine(default_registry()).run(g, output_dir=tmp_path / "out")
    assert result.ok, result.errors
    frames = _read_all(result.output("save"))
    assert len(frames) == 10 and frames[0].shape == (24, 32, 3)
    first = frames[0][:, 16:].mean() / 255
    last = frames[-1][:, 16:].mean() / 255
    assert first == pytest.approx(0.9, abs=0.04) and last == pytest.approx(0.1, abs=0.04)


def test_images_to_video_and_back_through_the_engine(tmp_path):
    g = make_graph({
        "bg": ("image.gradient", {"width": 16, "height": 8}),
        "vid": ("video.from_images", {"fps": 5}),
        "frames": ("video.to_images", {}),
    }, ["bg.image -> vid.image", "vid.video -> frames.video"])
    result = Engine(default_registry()).run(g, targets=["frames", "vid"])
    assert result.ok, result.errors
    assert isinstance(result.output("vid"), Video) and result.output("vid").fps == 5
    assert check_image(result.output("frames")).shape == (1, 8, 16, 3)


def test_save_image_fed_a_video_writes_a_numbered_sequence(tmp_path):
    src = save_video(Video.from_batch(_ramp(5)), "src", codec=VideoCodec.MJPG, ctx=FakeContext(tmp_path / "in"))
    g = make_graph({
        "clip": ("video.load", {"path": src}),
        "save": ("image.save", {"filename_prefix": "seq/frame"}),
    }, ["clip.video -> save.image"])
    result = Engine(default_registry()).run(g, output_dir=tmp_path / "out")
    assert result.ok, result.errors
    names = sorted(p.name for p in (tmp_path / "out" / "seq").iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(1, 6)]
