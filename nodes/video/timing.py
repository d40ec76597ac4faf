"""Timing nodes: Crossfade, Concat, Trim, Select Every Nth and Time Remap.

Every node here returns a lazy `Video`: output frame i is an index into the inputs (or a mix of
two of their frames), computed when a consumer pulls it, so memory stays flat however long the
clips are. The sound follows the pictures: each output's `audio` is the inputs' `AudioTrack`
trimmed, re-timed, reversed, concatenated or padded with silence so that its duration is exactly
frames / fps (a clip without sound stays silent; concatenated with one that has sound, its part
becomes silence).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np

from nodes.image.util import check_image, resize
from nodes.registry import node
from nodes.types import Range, Video
from nodes.video.audio import AudioTrack

_EPS = 1e-9


# --- helpers shared with the other video nodes ---------------------------------------------------
def need_clip(video: Any, port: str, title: str) -> Video:
    """`video` as a Video with frames and a frame rate, or a one-line error naming the port."""
    if video is None:
        raise ValueError(f"{title}: '{port}' needs a clip")
    if not isinstance(video, Video):
        video = Video.from_batch(check_image(video, port))
    if len(video) <= 0:
        raise ValueError(f"{title}: the clip on '{port}' has no frames")
    if not (video.fps > 0 and math.isfinite(video.fps)):
        raise ValueError(f"{title}: the clip on '{port}' has a frame rate of {video.fps:g} fps; "
                         "give it one > 0 (Images to Video or Load Video set it)")
    return video


def fit(track: AudioTrack | None, duration: float) -> AudioTrack | None:
    """`track` cut or padded with silence to exactly `duration` seconds (None stays None)."""
    if track is None:
        return None
    if duration <= _EPS:
        return AudioTrack.silence(0.0)
    cut = track.trim(0.0, duration)
    if cut is None:
        return AudioTrack.silence(duration)
    short = duration - cut.duration
    return cut + AudioTrack.silence(short) if short > 1e-7 else cut


def piece(track: AudioTrack | None, start: float, duration: float) -> AudioTrack | None:
    """`duration` seconds of `track` from `start` (silence where the track has none); None stays None."""
    if track is None:
        return None
    if duration <= _EPS:
        return AudioTrack.silence(0.0)
    return fit(track.trim(start, duration) or AudioTrack.silence(duration), duration)


def clip_audio(video: Video, start: int, count: int, out_fps: float) -> AudioTrack | None:
    """The sound of frames start .. start+count-1 of `video` played at `out_fps` (re-timed when it
    differs from the clip's rate), exactly count / out_fps seconds long; None if it has no sound."""
    if video.audio is None:
        return None
    part = piece(video.audio, start / video.fps, count / video.fps)
    speed = out_fps / video.fps
    if part is not None and abs(speed - 1.0) > 1e-9:
        part = part.retimed(speed)
    return fit(part, count / out_fps)


def join_audio(parts: list[tuple[AudioTrack | None, float]]) -> AudioTrack | None:
    """Sounds played one after the other (each (track, seconds)); None when none has sound,
    silence for the parts that have none when some do."""
    if all(t is None for t, _ in parts):
        return None
    out: AudioTrack | None = None
    for track, seconds in parts:
        seg = track if track is not None else AudioTrack.silence(seconds)
        out = seg if out is None else out + seg
    return out


def matched(video: Video, size: tuple[int, int], channels: int) -> Callable[[int], np.ndarray]:
    """Frame getter of `video` resized to `size` (w, h) and given `channels` (alpha added or dropped)."""
    w, h = size

    def get(i: int) -> np.ndarray:
        f = video.frame(i)
        if f.shape[2] != w or f.shape[1] != h:
            f = resize(f[0], w, h)[None]
        c = f.shape[3]
        if c > channels:
            f = f[..., :channels]
        elif c < channels:
            f = np.concatenate([f, np.ones((*f.shape[:3], channels - c), np.float32)], axis=-1)
        return f.astype(np.float32, copy=False)

    return get


def _check_count(value: int, port: str, title: str, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{title}: '{port}' must be an integer >= {low}, got {value!r}")
    return int(value)


# --- Crossfade -------------------------------------------------------------------------------------
class FadeCurve(str, enum.Enum):
    """How the mix weight of B rises across the overlap."""

    LINEAR = "linear"
    EASE = "ease"


def fade_weight(n: int, length: int, curve: FadeCurve) -> float:
    """B's weight in overlap frame n (0-based) of `length`: w = (n+1)/(length+1), eased by smoothstep."""
    w = (n + 1) / (length + 1)
    if FadeCurve(curve) is FadeCurve.EASE:
        w = w * w * (3.0 - 2.0 * w)
    return w


@node("imagebash.video.crossfade", title="Crossfade", category="video")
def crossfade(a: Video, b: Video, length: Annotated[int, Range(0, 100_000)] = 12,
              curve: FadeCurve = FadeCurve.LINEAR) -> Video:
    """Play clip A, dissolve into clip B over `length` frames, then play the rest of B.

    The output has len(A) + len(B) - length frames at A's frame rate and size (B is resized to A
    and played frame for frame). Overlap frame n (n = 0 .. length-1) is
    A[len(A) - length + n] * (1 - w) + B[n] * w with w = (n + 1) / (length + 1) for `linear`, so
    neither clip's own last or first frame repeats; `ease` uses smoothstep(w) = w²(3 - 2w).
    The sound is A's up to the middle of the overlap, then B's from there (a cut, not a fade),
    so it lasts exactly as long as the frames.

    Args:
        a: The first clip.
        b: The clip to dissolve into (resized to A's size if it differs).
        length: Frames of overlap (0 = a plain cut); at most the length of the shorter clip.
        curve: linear, or ease (slow start and end).
    """
    title = "Crossfade"
    a = need_clip(a, "a", title)
    b = need_clip(b, "b", title)
    length = _check_count(length, "length", title, 0)
    for port, clip in (("a", a), ("b", b)):
        if length > len(clip):
            raise ValueError(f"{title}: 'length' = {length} is longer than clip '{port}' ({len(clip)} frames)")
    curve = FadeCurve(curve)
    la, lb = len(a), len(b)
    start = la - length  # first overlap frame in the output
    get_a = matched(a, a.size, a.channels)
    get_b = matched(b, a.size, a.channels)
    weights = [fade_weight(n, length, curve) for n in range(length)] if length <= 4096 else None

    def frame(i: int) -> np.ndarray:
        if i < start:
            return get_a(i)
        if i >= la:
            return get_b(i - start)
        n = i - start
        w = weights[n] if weights is not None else fade_weight(n, length, curve)
        return get_a(i) * np.float32(1.0 - w) + get_b(n) * np.float32(w)

    fps = a.fps
    cut = start + length / 2.0  # the sound cuts from A to B in the middle of the overlap
    audio = None
    if a.audio is not None or b.audio is not None:
        head = piece(a.audio, 0.0, cut / fps) if a.audio is not None else AudioTrack.silence(cut / fps)
        tail_frames = lb - length / 2.0
        if b.audio is not None:
            tail = piece(b.audio, (length / 2.0) / b.fps, tail_frames / b.fps)
            if abs(fps / b.fps - 1.0) > 1e-9:
                tail = tail.retimed(fps / b.fps)
            tail = fit(tail, tail_frames / fps)
        else:
            tail = AudioTrack.silence(tail_frames / fps)
        audio = head + tail
    return Video(la + lb - length, fps, a.size, frame, a.channels, audio=audio)


# --- Concat ----------------------------------------------------------------------------------------
@node("imagebash.video.concat", title="Concat Videos", category="video")
def concat(a: Video, b: Video, c: Video | None = None, d: Video | None = None) -> Video:
    """Play clips one after the other: A, then B, then C and D when they are linked.

    Every clip is resized to A's size (and given A's channels) and played frame for frame at A's
    frame rate; a clip of another rate has its sound re-timed to stay in sync. The sound is the
    clips' sounds in order, silence for a clip without any (no sound at all if none has any).

    Args:
        a: The first clip (sets the size and frame rate).
        b: The second clip.
        c: An optional third clip.
        d: An optional fourth clip.
    """
    title = "Concat Videos"
    clips = [need_clip(a, "a", title), need_clip(b, "b", title)]
    for port, v in (("c", c), ("d", d)):
        if v is not None:
            clips.append(need_clip(v, port, title))
    first = clips[0]
    fps = first.fps
    getters = [matched(v, first.size, first.channels) for v in clips]
    starts = np.cumsum([0] + [len(v) for v in clips])
    total = int(starts[-1])

    def frame(i: int) -> np.ndarray:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        return getters[k](i - int(starts[k]))

    audio = join_audio([(clip_audio(v, 0, len(v), fps), len(v) / fps) for v in clips])
    return Video(total, fps, first.size, frame, first.channels, audio=audio)


# --- Trim ------------------------------------------------------------------------------------------
@node("imagebash.video.trim", title="Trim Video", category="video")
def trim(video: Video, start: Annotated[int, Range(0, 100_000_000)] = 0,
         end: Annotated[int, Range(-100_000_000, 100_000_000)] = 0,
         count: Annotated[int, Range(0, 100_000_000)] = 0) -> Video:
    """Keep a range of frames (and the sound that plays with them).

    Frames `start` up to (not including) `end` are kept; `count`, when set, keeps at most that
    many from `start`. Everything is counted in frames from 0.

    Args:
        video: The clip.
        start: The first frame kept.
        end: The frame after the last one kept (0 = to the end; negative = counted from the end:
            -1 drops the last frame).
        count: Keep at most this many frames (0 = no limit).
    """
    title = "Trim Video"
    video = need_clip(video, "video", title)
    n = len(video)
    start = _check_count(start, "start", title, 0)
    count = _check_count(count, "count", title, 0)
    stop = n if end == 0 else (n + int(end) if end < 0 else min(int(end), n))
    if count:
        stop = min(stop, start + count)
    if start >= n:
        raise ValueError(f"{title}: 'start' = {start} is past the clip's last frame ({n - 1})")
    if stop <= start:
        raise ValueError(f"{title}: nothing is left: 'end' = {end} is not after 'start' = {start} "
                         f"(the clip has {n} frames)")
    length = stop - start
    return Video(length, video.fps, video.size, lambda i: video.frame(start + i), video.channels,
                 audio=clip_audio(video, start, length, video.fps))


# --- Select every nth ------------------------------------------------------------------------------
@node("imagebash.video.select_nth", title="Select Every Nth Frame", category="video")
def select_nth(video: Video, n: Annotated[int, Range(1, 1000)] = 2,
               offset: Annotated[int, Range(0, 100_000_000)] = 0, keep_fps: bool = False) -> Video:
    """Keep frames offset, offset + n, offset + 2n, ...

    By default the result has the frame rate divided by n, so it lasts as long as the source and
    its sound is unchanged (a lower-rate copy). With `keep_fps` it keeps the source's frame rate
    and plays n times as fast (a fast-forward), the sound re-timed to match.

    Args:
        video: The clip.
        n: Keep one frame in n.
        offset: The first frame kept.
        keep_fps: Keep the frame rate (fast-forward) instead of dividing it by n.
    """
    title = "Select Every Nth Frame"
    video = need_clip(video, "video", title)
    n = _check_count(n, "n", title, 1)
    offset = _check_count(offset, "offset", title, 0)
    if offset >= len(video):
        raise ValueError(f"{title}: 'offset' = {offset} is past the clip's last frame ({len(video) - 1})")
    length = -(-(len(video) - offset) // n)
    span = length * n  # source frames the output covers (the last kept frame stands for n of them)
    audio = piece(video.audio, offset / video.fps, span / video.fps)
    if keep_fps:
        fps = video.fps
        if audio is not None and n != 1:
            audio = audio.retimed(float(n))
    else:
        fps = video.fps / n
    return Video(length, fps, video.size, lambda i: video.frame(offset + i * n), video.channels,
                 audio=fit(audio, length / fps))


# --- Time remap ------------------------------------------------------------------------------------
class Timeline:
    """A frame index map (output frame -> source frame) with the sound that goes with it."""

    def __init__(self, length: int, source: Callable[[int], int], audio: AudioTrack | None) -> None:
        self.length = length
        self.source = source
        self.audio = audio


def remap_timeline(length: int, fps: float, audio: AudioTrack | None, speed: float = 1.0,
                   reverse: bool = False, ping_pong: bool = False, freeze_at: int = -1,
                   freeze_frames: int = 0, title: str = "Time Remap") -> Timeline:
    """The index map and sound of Time Remap, applied in order: speed, reverse, ping-pong, freeze.

    speed s: output frame j shows source frame floor(j * s) (the source frame on screen at that
    output frame's start time); ceil(length / s) frames. reverse: j -> length-1-j. ping_pong:
    0 .. n-1 then n-2 .. 0 (2n-1 frames; the turn frame is not repeated). freeze: frame
    `freeze_at` (of the timeline so far) is shown 1 + freeze_frames times, with silence under the
    held frames.
    """
    if not (0.1 - 1e-9 <= speed <= 10.0 + 1e-9) or not math.isfinite(speed):
        raise ValueError(f"{title}: 'speed' must be between 0.1 and 10, got {speed:g}")
    tl = Timeline(length, lambda j: j, fit(audio, length / fps))
    if abs(speed - 1.0) > 1e-12:
        prev = tl
        n = max(1, math.ceil(prev.length / speed - 1e-9))
        s = float(speed)
        last = prev.length - 1
        track = prev.audio.retimed(s) if prev.audio is not None else None
        tl = Timeline(n, lambda j, p=prev.source: p(min(math.floor(j * s + 1e-9), last)),
                      fit(track, n / fps))
    if reverse:
        prev = tl
        tl = Timeline(prev.length, lambda j, p=prev.source, m=prev.length: p(m - 1 - j),
                      prev.audio.reversed() if prev.audio is not None else None)
    if ping_pong and tl.length > 1:
        prev = tl
        m = prev.length
        back = piece(prev.audio, 0.0, (m - 1) / fps)
        tl = Timeline(2 * m - 1, lambda j, p=prev.source, m=m: p(j if j < m else 2 * m - 2 - j),
                      prev.audio + back.reversed() if prev.audio is not None and back is not None else None)
    if freeze_frames > 0:
        prev = tl
        if not 0 <= freeze_at < prev.length:
            raise ValueError(f"{title}: 'freeze_at' = {freeze_at} is not a frame of the clip "
                             f"(0 .. {prev.length - 1} after speed, reverse and ping-pong)")
        f, k = freeze_at, freeze_frames

        def held(j: int, p: Callable[[int], int] = prev.source) -> int:
            return p(j if j <= f else (f if j <= f + k else j - k))

        audio_out = None
        if prev.audio is not None:
            cut = (f + 1) / fps
            audio_out = (piece(prev.audio, 0.0, cut) + AudioTrack.silence(k / fps)
                         + piece(prev.audio, cut, (prev.length - f - 1) / fps))
        tl = Timeline(prev.length + k, held, audio_out)
    if tl.audio is not None:
        tl.audio = fit(tl.audio, tl.length / fps)
    return tl


@node("imagebash.video.time_remap", title="Time Remap", category="video")
def time_remap(video: Video, speed: Annotated[float, Range(0.1, 10.0, step=0.05)] = 1.0,
               reverse: bool = False, ping_pong: bool = False,
               freeze_at: Annotated[int, Range(0, 100_000_000)] = 0,
               freeze_frames: Annotated[int, Range(0, 100_000)] = 0) -> Video:
    """Change a clip's timing: speed it up or slow it down, play it backwards, bounce it, hold a frame.

    The steps apply in this order, at the clip's own frame rate:
    speed (> 1 faster: frames are dropped; < 1 slower: frames repeat; output frame j shows source
    frame floor(j * speed), ceil(frames / speed) frames), then reverse, then ping-pong (forward then
    backward without showing the turn frame twice: 2n - 1 frames), then the freeze (frame
    `freeze_at` of the result held for `freeze_frames` more frames). The sound follows: re-timed by
    the speed, reversed, mirrored, and silent while a frame is held. For smooth slow motion use
    Frame Interpolate.

    Args:
        video: The clip.
        speed: Playback speed: 2 = twice as fast (half the frames), 0.5 = half speed.
        reverse: Play backwards.
        ping_pong: Play forward, then backward (a seamless bounce).
        freeze_at: The frame to hold (counted after speed, reverse and ping-pong).
        freeze_frames: How many extra frames to hold it for (0 = no freeze).
    """
    title = "Time Remap"
    video = need_clip(video, "video", title)
    tl = remap_timeline(len(video), video.fps, video.audio, float(speed), bool(reverse), bool(ping_pong),
                        int(freeze_at), _check_count(freeze_frames, "freeze_frames", title, 0), title)
    return Video(tl.length, video.fps, video.size, lambda i: video.frame(tl.source(i)), video.channels,
                 audio=tl.audio)
