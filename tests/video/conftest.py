"""Small clips written with PyAV for the video I/O tests: frame numbers encoded in the pixels."""

from __future__ import annotations

import pathlib
from fractions import Fraction

import av
import numpy as np
import pytest

SR = 48000


def number_frame(i: int, w: int = 32, h: int = 32) -> np.ndarray:
    """An RGB uint8 frame whose left half reads i*4 (robust to lossy codecs)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = min(255, i * 4)
    a[:, w // 2:, 1] = 200
    return a


def read_number(frame: np.ndarray) -> int:
    """The frame number of `number_frame` from a (1, H, W, C) float frame."""
    w = frame.shape[2]
    v = float(frame[0, 4:-4, 2: w // 2 - 2, :3].mean()) * 255 / 3 * 3
    return round(float(frame[0, 4:-4, 2: w // 2 - 2, 0].mean()) * 255 / 4) if v >= 0 else -1


def make_clip(path: pathlib.Path, n: int = 30, fps: int = 24, size: tuple[int, int] = (32, 32),
              pts_ms: list[int] | None = None, tone: float = 0.0, codec: str = "libx264",
              gop: int = 6) -> pathlib.Path:
    """Write frames 0..n-1 (numbered) and, with tone > 0, a sine tone as long as the video (aac)."""
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height = size
    s.pix_fmt = "yuv420p"
    s.options = {"crf": "10", "preset": "ultrafast", "g": str(gop), "bf": "0"} if codec == "libx264" else {}
    if pts_ms is not None:
        s.codec_context.time_base = Fraction(1, 1000)
    a = None
    if tone:
        a = c.add_stream("aac", rate=SR)
        a.layout = "stereo"
    for i in range(n):
        f = av.VideoFrame.from_ndarray(number_frame(i, *size), format="rgb24")
        if pts_ms is not None:
            f.pts = pts_ms[i]
            f.time_base = Fraction(1, 1000)
        else:
            f.pts = i
        c.mux(s.encode(f))
    c.mux(s.encode(None))
    if a is not None:
        dur = (pts_ms[-1] / 1000 + 1 / fps) if pts_ms else n / fps
        t = np.arange(int(dur * SR)) / SR
        sig = (0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32)
        for k in range(0, len(sig), 1024):
            ch = sig[k:k + 1024]
            fr = av.AudioFrame.from_ndarray(np.stack([ch, ch]), format="fltp", layout="stereo")
            fr.sample_rate = SR
            fr.pts = k
            c.mux(a.encode(fr))
        c.mux(a.encode(None))
    c.close()
    return path


def stream_durations(path: str | pathlib.Path) -> tuple[float, float | None]:
    """(video seconds by frame count / rate, audio seconds by decoded samples) of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for p in c.demux(v) if p.size)
        vdur = n / float(v.average_rate or v.guessed_rate)
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return vdur, None
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(a))
        return vdur, samples / a.codec_context.sample_rate


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "clip.mp4")
