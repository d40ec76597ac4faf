"""Timing nodes: exact frame index maps, exact mixes, and sound that lasts as long as the frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.engine import Engine
from app.graph import io
from nodes.registry import Registry, node
from nodes.types import Video
from nodes.video import timing
from nodes.video.audio import AudioSegment, AudioTrack

FPS = 10.0


def numbered(n: int, fps: float = FPS, size: tuple[int, int] = (32, 32), sound: bool = True,
             offset: int = 0, channels: int = 3) -> Video:
    """Frame i is filled with (offset + i) / 1000 (exact in float32); the sound is a fake file."""
    w, h = size

    def frame(i: int) -> np.ndarray:
        return np.full((1, h, w, channels), (offset + i) / 1000.0, np.float32)

    audio = AudioTrack((AudioSegment("nowhere.wav", duration=n / fps),)) if sound else None
    return Video(n, fps, size, frame, channels, audio=audio)


def ids(video: Video) -> list[int]:
    """The source frame number each output frame shows."""
    return [round(float(video.frame(i)[0, 0, 0, 0]) * 1000) for i in range(len(video))]


def same_duration(video: Video) -> None:
    assert video.audio is not None
    assert video.audio.duration == pytest.approx(len(video) / video.fps, abs=1e-6)


# --- Crossfade -------------------------------------------------------------------------------------
@pytest.mark.parametrize("curve", list(timing.FadeCurve))
def test_crossfade_overlap_frames_are_the_exact_mix(curve):
    rng = np.random.default_rng(0)
    fa = rng.random((12, 32, 32, 3), dtype=np.float32)
    fb = rng.random((9, 32, 32, 3), dtype=np.float32)
    a, b = Video.from_batch(fa, FPS), Video.from_batch(fb, FPS)
    out = timing.crossfade(a, b, length=4, curve=curve)
    assert len(out) == 12 + 9 - 4 and out.fps == FPS and out.size == (32, 32)
    for i in range(8):
        np.testing.assert_array_equal(out.frame(i)[0], fa[i])
    for n in range(4):
        w = (n + 1) / 5
        if curve is timing.FadeCurve.EASE:
            w = w * w * (3 - 2 * w)
        expect = fa[8 + n] * np.float32(1 - w) + fb[n] * np.float32(w)
        np.testing.assert_array_equal(out.frame(8 + n)[0], expect)
    for i in range(12, 17):
        np.testing.assert_array_equal(out.frame(i)[0], fb[i - 8])
    assert out.audio is None  # neither clip has sound


def test_crossfade_resizes_b_and_cuts_the_sound_in_the_overlap():
    a = numbered(10)
    b = numbered(6, size=(48, 16), offset=500)
    out = timing.crossfade(a, b, length=2)
    assert out.frame(len(out) - 1).shape == (1, 32, 32, 3)
    assert ids(out)[:8] == list(range(8)) and ids(out)[-4:] == [502, 503, 504, 505]
    same_duration(out)
    head, tail = out.audio.segments
    assert head.start == 0 and head.duration == pytest.approx(0.9)  # A up to the overlap's middle
    assert tail.start == pytest.approx(0.1) and tail.duration == pytest.approx(0.5)


def test_crossfade_b_at_another_rate_has_its_sound_retimed():
    out = timing.crossfade(numbered(10), numbered(10, fps=20.0), length=0)
    assert len(out) == 20 and out.fps == FPS
    same_duration(out)
    assert out.audio.segments[-1].speed == pytest.approx(0.5)


def test_crossfade_bad_lengths_say_which_port():
    with pytest.raises(ValueError, match=r"^Crossfade: 'length' = 8 is longer than clip 'b' \(5 frames\)$"):
        timing.crossfade(numbered(10), numbered(5), length=8)
    with pytest.raises(ValueError, match="Crossfade: the clip on 'a' has no frames"):
        timing.crossfade(numbered(0), numbered(5), length=1)
    zero_fps = Video(3, 0.0, (8, 8), lambda i: np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="Crossfade: the clip on 'b' has a frame rate of 0 fps"):
        timing.crossfade(numbered(3), zero_fps, length=1)


# --- Concat ----------------------------------------------------------------------------------------
def test_concat_plays_clips_in_order_with_silence_for_a_mute_clip():
    a, b, c = numbered(4), numbered(3, size=(16, 16), offset=100, sound=False), numbered(2, offset=200)
    out = timing.concat(a, b, c)
    assert ids(out) == [0, 1, 2, 3, 100, 101, 102, 200, 201]
    assert out.frame(5).shape == (1, 32, 32, 3)
    same_duration(out)
    assert [s.path for s in out.audio.segments] == ["nowhere.wav", "", "nowhere.wav"]
    assert out.audio.segments[1].duration == pytest.approx(0.3)
    assert timing.concat(numbered(2, sound=False), numbered(2, sound=False)).audio is None


def test_concat_matches_channels_to_the_first_clip():
    out = timing.concat(numbered(2, channels=4), numbered(2, offset=10))
    assert out.channels == 4 and out.frame(3).shape == (1, 32, 32, 4)
    assert float(out.frame(3)[0, 0, 0, 3]) == 1.0


# --- Trim ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, expect", [
    ({"start": 3}, list(range(3, 20))),
    ({"start": 3, "end": 7}, [3, 4, 5, 6]),
    ({"start": 3, "count": 2}, [3, 4]),
    ({"end": -2}, list(range(18))),
    ({"start": 15, "end": 100}, [15, 16, 17, 18, 19]),
])
def test_trim_keeps_the_range_and_its_sound(kw, expect):
    out = timing.trim(numbered(20), **kw)
    assert ids(out) == expect
    same_duration(out)
    assert out.audio.segments[0].start == pytest.approx(expect[0] / FPS)


def test_trim_that_leaves_nothing_says_so():
    with pytest.raises(ValueError, match=r"Trim Video: 'start' = 20 is past the clip's last frame \(19\)"):
        timing.trim(numbered(20), start=20)
    with pytest.raises(ValueError, match="Trim Video: nothing is left"):
        timing.trim(numbered(20), start=5, end=5)


# --- Select every nth ------------------------------------------------------------------------------
def test_select_nth_lowers_the_rate_and_keeps_the_sound():
    src = numbered(20)
    out = timing.select_nth(src, n=3, offset=1)
    assert ids(out) == [1, 4, 7, 10, 13, 16, 19]
    assert out.fps == pytest.approx(FPS / 3)
    same_duration(out)
    assert out.audio.segments[0].speed == 1.0


def test_select_nth_keep_fps_is_a_fast_forward():
    out = timing.select_nth(numbered(20), n=4, keep_fps=True)
    assert ids(out) == [0, 4, 8, 12, 16] and out.fps == FPS
    same_duration(out)
    assert out.audio.segments[0].speed == pytest.approx(4.0)


# --- Time remap ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, expect", [
    ({"speed": 2.0}, [0, 2, 4, 6, 8]),
    ({"speed": 3.0}, [0, 3, 6, 9]),
    ({"speed": 0.5}, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]),
    ({"speed": 1.5}, [0, 1, 3, 4, 6, 7, 9]),
    ({"reverse": True}, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    ({"ping_pong": True}, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    ({"freeze_at": 2, "freeze_frames": 3}, [0, 1, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9]),
    ({"speed": 2.0, "reverse": True, "ping_pong": True}, [8, 6, 4, 2, 0, 2, 4, 6, 8]),
    ({"speed": 2.0, "reverse": True, "freeze_at": 4, "freeze_frames": 2}, [8, 6, 4, 2, 0, 0, 0]),
])
def test_time_remap_frame_index_map(kw, expect):
    out = timing.time_remap(numbered(10), **kw)
    assert ids(out) == expect
    assert out.fps == FPS


@pytest.mark.parametrize("speed", [0.1, 0.3, 0.5, 1.0, 1.7, 2.0, 3.0, 10.0])
@pytest.mark.parametrize("reverse, ping_pong, freeze", [(False, False, 0), (True, False, 0), (False, True, 0),
                                                        (True, True, 4), (False, False, 7)])
def test_time_remap_sound_lasts_as_long_as_the_frames(speed, reverse, ping_pong, freeze):
    src = numbered(23)
    out = timing.time_remap(src, speed=speed, reverse=reverse, ping_pong=ping_pong,
                            freeze_at=0, freeze_frames=freeze)
    expect = math.ceil(23 / speed - 1e-9)
    expect = (2 * expect - 1 if ping_pong else expect) + freeze
    assert len(out) == expect
    same_duration(out)


def test_time_remap_sound_is_reversed_retimed_and_silent_while_frozen():
    out = timing.time_remap(numbered(10), speed=2.0, reverse=True, freeze_at=1, freeze_frames=3)
    segs = out.audio.segments
    assert all(s.reverse for s in segs if s.path) and all(s.speed == 2.0 for s in segs if s.path)
    silent = [s for s in segs if not s.path]
    assert len(silent) == 1 and silent[0].duration == pytest.approx(0.3)
    assert out.audio.trim(0, 0.2).segments[0].path == "nowhere.wav"  # sound under frames 0 and 1


def test_time_remap_bad_values_name_the_port():
    with pytest.raises(ValueError, match=r"^Time Remap: 'speed' must be between 0.1 and 10, got 0$"):
        timing.time_remap(numbered(5), speed=0.0)
    with pytest.raises(ValueError, match="Time Remap: 'freeze_at' = 9 is not a frame of the clip"):
        timing.time_remap(numbered(5), freeze_at=9, freeze_frames=1)
    with pytest.raises(ValueError, match="Time Remap: the clip on 'video' has a frame rate of 0 fps"):
        timing.time_remap(Video(3, 0.0, (8, 8), lambda i: np.zeros((1, 8, 8, 3), np.float32)))
    with pytest.raises(ValueError, match="Time Remap: the clip on 'video' has no frames"):
        timing.time_remap(numbered(0))


def test_outputs_are_lazy():
    pulled: list[int] = []

    def frame(i: int) -> np.ndarray:
        pulled.append(i)
        return np.full((1, 8, 8, 3), i / 1000.0, np.float32)

    src = Video(10_000, FPS, (8, 8), frame)
    out = timing.time_remap(timing.trim(timing.concat(src, src), start=100), speed=2.0, ping_pong=True)
    assert len(out) == 2 * 9950 - 1 and pulled == []
    out.frame(9949)
    assert pulled == [(100 + 9949 * 2) - 10_000]


# --- through the engine -----------------------------------------------------------------------------
def _registry() -> Registry:
    reg = Registry(load_packs=False)

    @node("test.numbered", registry=reg, category="test")
    def numbered_clip(frames: int = 10, offset: int = 0) -> Video:
        """A numbered clip with a fake sound track."""
        return numbered(frames, offset=offset)

    reg.add_module(timing)
    return reg


def test_timing_nodes_run_through_the_engine():
    doc = {"format": "imagebash/1", "nodes": [
        {"id": "a", "type": "test.numbered", "params": {"frames": 12}},
        {"id": "b", "type": "test.numbered", "params": {"frames": 6, "offset": 100}},
        {"id": "x", "type": "imagebash.video.crossfade", "params": {"length": 2, "curve": "ease"}},
        {"id": "r", "type": "imagebash.video.time_remap", "params": {"speed": 2.0, "reverse": True}},
        {"id": "bad", "type": "imagebash.video.crossfade", "params": {"length": 7}},
    ], "links": [
        {"from": ["a", "video"], "to": ["x", "a"]}, {"from": ["b", "video"], "to": ["x", "b"]},
        {"from": ["x", "video"], "to": ["r", "video"]},
        {"from": ["a", "video"], "to": ["bad", "a"]}, {"from": ["b", "video"], "to": ["bad", "b"]},
    ]}
    result = Engine(_registry()).run(io.graph_from_dict(doc), ["r", "bad"])
    out = result.output("r")
    assert isinstance(out, Video) and len(out) == 8
    w = (1 / 3) ** 2 * (3 - 2 / 3)  # ease weight of overlap frame 0 (output frame 10)
    np.testing.assert_allclose(out.frame(2)[0, 0, 0, 0], 0.010 * (1 - w) + 0.100 * w, rtol=1e-6)
    assert ids(out)[:2] == [104, 102] and ids(out)[3:] == [8, 6, 4, 2, 0]
    same_duration(out)
    assert result.errors["bad"] == "Crossfade: 'length' = 7 is longer than clip 'b' (6 frames)"
