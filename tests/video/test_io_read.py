"""Frame-exact reading: counts for constant and variable frame rates, ranges, seeks, alpha, 16-bit."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from nodes.video import FrameReader, load_video, open_video, video_info
from tests.video.conftest import av, make_clip, read_number


def test_constant_rate_count_and_numbers(tmp_path):
    p = make_clip(tmp_path / "c.mp4", n=45, fps=24)
    lv = load_video(p)
    assert (lv.frame_count, lv.fps) == (45, pytest.approx(24.0))
    assert lv.duration == pytest.approx(45 / 24)
    assert [read_number(lv.video.frame(i)) for i in range(45)] == list(range(45))


def test_variable_frame_rate_count_exact(tmp_path):
    pts = [0, 40, 50, 130, 140, 141, 300, 310, 420, 500, 505, 700]
    p = make_clip(tmp_path / "vfr.mp4", n=len(pts), pts_ms=pts)
    v = open_video(p)
    assert len(v) == len(pts)
    assert [read_number(v.frame(i)) for i in range(len(pts))] == list(range(len(pts)))
    info = video_info(p)
    assert info.frames == len(pts) and info.duration == pytest.approx(0.7, abs=0.1)


@pytest.mark.parametrize("start,max_frames,stride", [(0, 0, 1), (5, 0, 1), (3, 7, 2), (10, 4, 5), (59, 0, 1),
                                                     (0, 10, 7)])
def test_start_stride_max_frames_give_exact_frames(tmp_path, start, max_frames, stride):
    p = make_clip(tmp_path / "r.mp4", n=60)
    v = open_video(p, start=start, max_frames=max_frames, stride=stride)
    want = list(range(start, 60, stride))
    if max_frames:
        want = want[:max_frames]
    assert [read_number(v.frame(i)) for i in range(len(v))] == want


def test_seeks_backwards_and_forwards(tmp_path):
    p = make_clip(tmp_path / "s.mp4", n=60, gop=6)
    v = open_video(p)
    order = [50, 3, 4, 40, 39, 0, 59, 20, 21, 22, 7]
    assert [read_number(v.frame(i)) for i in order] == order


def test_reader_is_thread_safe(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    p = make_clip(tmp_path / "t.mp4", n=40)
    reader = FrameReader(p)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: read_number(reader.frame(i)), [i % 40 for i in range(0, 120, 7)]))
    assert got == [i % 40 for i in range(0, 120, 7)]


def test_16bit_ffv1_reads_as_exact_float(tmp_path):
    p = tmp_path / "deep.mkv"
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 65536, (3, 16, 24, 3), dtype=np.uint16)
    c = av.open(str(p), "w")
    s = c.add_stream("ffv1", rate=24)
    s.width, s.height, s.pix_fmt = 24, 16, "gbrp16le"
    for f in frames:
        c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb48le")))
    c.mux(s.encode(None))
    c.close()
    v = open_video(p)
    for i in range(3):
        assert np.array_equal(np.round(v.frame(i)[0] * 65535).astype(np.uint16), frames[i])


def test_alpha_source_gives_four_channels(tmp_path):
    p = tmp_path / "a.mov"
    c = av.open(str(p), "w")
    s = c.add_stream("png", rate=Fraction(10))
    s.width, s.height, s.pix_fmt = 16, 16, "rgba"
    for i in range(4):
        a = np.zeros((16, 16, 4), np.uint8)
        a[..., 3] = 60 * i
        c.mux(s.encode(av.VideoFrame.from_ndarray(a, format="rgba")))
    c.mux(s.encode(None))
    c.close()
    v = open_video(p)
    assert v.channels == 4 and len(v) == 4
    assert v.frame(3)[0, ..., 3].mean() == pytest.approx(180 / 255, abs=1e-3)
