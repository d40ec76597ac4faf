"""Audio on the video wire: AudioTrack arithmetic, trimming with the frames, re-timing, replace, drop."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from nodes.video import load_video, save_video
from nodes.video.audio import AudioSegment, AudioTrack, render
from tests.image.helpers import FakeContext
from tests.video.conftest import make_clip, stream_durations

TOL = 0.025  # one AAC frame


def test_track_arithmetic():
    a = AudioTrack((AudioSegment("x.mp4", start=1.0, duration=4.0),))
    assert a.duration == 4.0
    t = a.trim(1.0, 2.0)
    assert t.segments == (AudioSegment("x.mp4", start=2.0, duration=2.0),)
    assert a.trim(5.0, 1.0) is None and a.trim(1.0, 0.0) is None
    fast = a.retimed(2.0)
    assert fast.duration == 2.0 and fast.trim(0.5, 1.0).segments[0].start == pytest.approx(2.0)
    both = a + AudioTrack.silence(1.0)
    assert both.duration == 5.0 and (both + None) is both
    r = both.reversed()
    assert r.segments[0].path == "" and r.segments[1].reverse
    # the first output second of the reversed file segment is the source's last second
    piece = r.trim(1.0, 1.0).segments[0]
    assert (piece.start, piece.duration, piece.reverse) == (pytest.approx(4.0), pytest.approx(1.0), True)
    assert AudioTrack.silence(2.0).retimed(4.0).duration == 0.5


def test_render_lengths_are_exact(tmp_path):
    p = make_clip(tmp_path / "t.mp4", n=48, tone=440)
    tr = AudioTrack.of_file(p)
    assert tr is not None and tr.duration == pytest.approx(2.0, abs=0.03)
    for track in (tr.trim(0.25, 1.0), tr.trim(0.0, 1.0).retimed(3.0), tr.trim(0, 0.5).reversed()
                  + AudioTrack.silence(0.25), tr.trim(0, 1).retimed(0.3)):
        x = np.concatenate(list(render(track, 44100, "mono")), axis=1)
        assert x.shape == (1, round(track.duration * 44100))
    loud = np.concatenate(list(render(tr.trim(0.5, 0.5).retimed(2.0), 48000, "stereo")), axis=1)
    assert 0.2 < np.abs(loud).max() < 0.4


def test_of_file_without_audio_is_none(tmp_path):
    assert AudioTrack.of_file(make_clip(tmp_path / "silent.mp4", n=4)) is None


@pytest.mark.parametrize("codec", ["h264", "vp9"])
@pytest.mark.parametrize("start,max_frames,stride,fps", [(7, 20, 1, 0), (0, 0, 2, 0), (5, 30, 1, 60), (3, 0, 1, 10)])
def test_saved_audio_lasts_as_long_as_the_video(tmp_path, codec, start, max_frames, stride, fps):
    p = make_clip(tmp_path / "tone.mp4", n=60, tone=440)
    lv = load_video(p, start=start, max_frames=max_frames, stride=stride)
    out = save_video(lv.video, "a", codec=codec, fps=fps, ctx=FakeContext(tmp_path / "out"))
    vdur, adur = stream_durations(out)
    assert adur is not None and abs(adur - vdur) <= TOL


def test_audio_file_replaces_and_keep_audio_false_drops(tmp_path):
    p = make_clip(tmp_path / "v.mp4", n=24)
    tone = make_clip(tmp_path / "tone.mp4", n=96, tone=220)
    v = load_video(p).video
    assert v.audio is None
    out = save_video(v, "r", audio_file=tone, ctx=FakeContext(tmp_path / "o"))
    vdur, adur = stream_durations(out)
    assert adur == pytest.approx(vdur, abs=TOL)
    out = save_video(load_video(tone).video, "d", keep_audio=False, ctx=FakeContext(tmp_path / "o"))
    assert stream_durations(out)[1] is None


def test_missing_audio_file_is_one_line(tmp_path):
    v = load_video(make_clip(tmp_path / "v.mp4", n=4)).video
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        save_video(v, "x", audio_file=pathlib.Path(tmp_path / "none.wav"), ctx=FakeContext(tmp_path / "o"))
