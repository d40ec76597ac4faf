"""Audio that travels with a Video: an edit list of source segments, rendered to samples on save.

An `AudioTrack` never holds samples: it is a tuple of `AudioSegment`s (a stretch of one file's
audio stream, or silence, played at a speed and maybe backwards), so trimming, re-timing and
concatenating a clip's sound is exact arithmetic on seconds. `render` decodes it with PyAV (imported
only there) into float32 `(channels, n)` chunks at the output sample rate. Durations are in
seconds; a segment's `start`/`duration` are in SOURCE seconds, `AudioTrack.trim` takes OUTPUT
seconds (what the listener hears).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

_EPS = 1e-9
_CHUNK = 8192  # samples per rendered chunk


@dataclass(frozen=True)
class AudioSegment:
    path: str  # source media file ("" = silence)
    stream: int = 0  # index among that file's audio streams
    start: float = 0.0  # seconds into the source
    duration: float = 0.0  # seconds of source used
    speed: float = 1.0  # playback rate: 2.0 plays twice as fast (half as long)
    reverse: bool = False

    @property
    def out_duration(self) -> float:
        return self.duration / self.speed


@dataclass(frozen=True)
class AudioTrack:
    segments: tuple[AudioSegment, ...]

    @property
    def duration(self) -> float:
        """Output seconds: sum(seg.duration / seg.speed)."""
        return sum(s.out_duration for s in self.segments)

    @property
    def untouched(self) -> AudioSegment | None:
        """The one segment, when the track is a single forward, unscaled stretch of one file."""
        if len(self.segments) == 1:
            s = self.segments[0]
            if s.path and not s.reverse and abs(s.speed - 1.0) < 1e-9:
                return s
        return None

    def trim(self, start: float, duration: float) -> AudioTrack | None:
        """The part from `start` for `duration` OUTPUT seconds; None if that is empty."""
        a, b = max(0.0, start), start + duration
        if b - a <= _EPS:
            return None
        out: list[AudioSegment] = []
        t = 0.0
        for s in self.segments:
            od = s.out_duration
            lo, hi = max(a, t) - t, min(b, t + od) - t
            t += od
            if hi - lo <= _EPS:
                continue
            if s.reverse:
                src = s.start + s.duration - hi * s.speed
            else:
                src = s.start + lo * s.speed
            out.append(replace(s, start=src if s.path else 0.0, duration=(hi - lo) * s.speed))
        return AudioTrack(tuple(out)) if out else None

    def retimed(self, speed: float) -> AudioTrack:
        """Played `speed` times as fast (every segment's speed multiplied)."""
        if speed <= 0:
            raise ValueError(f"audio speed must be > 0, got {speed}")
        return AudioTrack(tuple(replace(s, speed=s.speed * speed) for s in self.segments))

    def reversed(self) -> AudioTrack:
        return AudioTrack(tuple(replace(s, reverse=not s.reverse) for s in reversed(self.segments)))

    def __add__(self, other: AudioTrack | None) -> AudioTrack:
        if other is None:
            return self
        if not isinstance(other, AudioTrack):
            return NotImplemented
        return AudioTrack(self.segments + other.segments)

    def __radd__(self, other: AudioTrack | None) -> AudioTrack:
        if other is None or other == 0:  # sum() starts at 0
            return self
        return NotImplemented

    @classmethod
    def silence(cls, duration: float) -> AudioTrack:
        return cls((AudioSegment("", duration=max(0.0, float(duration))),))

    @classmethod
    def of_file(cls, path: str | pathlib.Path, stream: int = 0, start: float = 0.0,
                duration: float | None = None) -> AudioTrack | None:
        """The file's `stream`-th audio stream from `start` (to the end by default); None if it has none."""
        info = probe_audio(path)
        if stream >= len(info):
            return None
        total = info[stream]["duration"]
        if duration is None:
            duration = max(0.0, total - start) if total else 0.0
        if duration <= _EPS:
            return None
        return cls((AudioSegment(str(path), stream, float(start), float(duration)),))


def probe_audio(path: str | pathlib.Path) -> list[dict]:
    """One dict per audio stream of a media file: codec, sample_rate, channels, duration (s), start (s)."""
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        return []
    try:
        with av.open(str(path)) as c:
            out = []
            for s in c.streams.audio:
                if s.duration is not None and s.time_base is not None:
                    dur = float(s.duration * s.time_base)
                elif c.duration is not None:
                    dur = c.duration / 1_000_000
                else:
                    dur = 0.0
                st = float(s.start_time * s.time_base) if s.start_time is not None and s.time_base else 0.0
                cc = s.codec_context
                out.append({"codec": cc.name, "sample_rate": cc.sample_rate or 0,
                            "channels": cc.channels or 0, "duration": dur, "start": st})
            return out
    except Exception:  # noqa: BLE001 - unreadable file = no audio
        return []


def _channels(layout: str) -> int:
    try:
        import av

        return len(av.AudioLayout(layout).channels)
    except Exception:  # noqa: BLE001
        return {"mono": 1, "stereo": 2}.get(layout, 2)


def _decode(seg: AudioSegment, sample_rate: int, layout: str, channels: int) -> Iterator[np.ndarray]:
    """The source samples of `seg` (forward, at speed 1), exactly round(duration*sr) of them."""
    want = round(seg.duration * sample_rate)
    if not seg.path or want <= 0:
        yield from _silence(want, channels)
        return
    import av

    got = 0
    with av.open(seg.path) as c:
        st = c.streams.audio[seg.stream]
        st.thread_type = "AUTO"
        origin = float(st.start_time * st.time_base) if st.start_time is not None and st.time_base else 0.0
        target = origin + seg.start
        if seg.start > 0.5:
            c.seek(int(max(0.0, target - 0.5) / st.time_base), stream=st, any_frame=False, backward=True)
        rs = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        pos: int | None = None  # sample index (relative to `target`) of the next resampled sample

        def take(frames: list) -> Iterator[np.ndarray]:
            nonlocal got, pos
            for f in frames:
                a = f.to_ndarray().astype(np.float32, copy=False).reshape(-1, f.samples)
                a = a[:channels] if a.shape[0] >= channels else np.repeat(a[:1], channels, 0)
                n = a.shape[1]
                assert pos is not None
                if pos > got:  # a gap (or the source starts late): silence
                    k = min(pos, want) - got
                    if k > 0:
                        yield np.zeros((channels, k), np.float32)
                        got += k
                lo, hi = got - pos, min(n, want - pos)
                pos += n
                if hi > lo >= 0:
                    yield a[:, lo:hi]
                    got += hi - lo

        try:
            for frame in c.decode(st):
                if pos is None:
                    t0 = float(frame.time) if frame.time is not None else origin
                    pos = round((t0 - target) * sample_rate)
                yield from take(rs.resample(frame))
                if got >= want:
                    break
            if pos is not None and got < want:
                yield from take(rs.resample(None))
        except av.error.FFmpegError as e:
            if got == 0:
                raise ValueError(f"{seg.path}: cannot decode audio ({e})") from e
    if got < want:  # the source ends early: pad
        yield from _silence(want - got, channels)


def _silence(n: int, channels: int) -> Iterator[np.ndarray]:
    while n > 0:
        k = min(n, _CHUNK)
        yield np.zeros((channels, k), np.float32)
        n -= k


def _atempo_chain(speed: float) -> list[float]:
    out = []
    while speed > 2.0 + 1e-9:
        out.append(2.0)
        speed /= 2.0
    while speed < 0.5 - 1e-9:
        out.append(0.5)
        speed /= 0.5
    out.append(speed)
    return out


def _tempo(chunks: Iterator[np.ndarray], speed: float, sample_rate: int, layout: str,
           channels: int) -> Iterator[np.ndarray]:
    """Pitch-preserving speed change with FFmpeg's atempo (chained past 0.5..2); resampling without it."""
    try:
        import av
        import av.filter

        if "atempo" not in av.filter.filters_available:
            raise ImportError("atempo")
    except ImportError:
        data = np.concatenate(list(chunks), axis=1) if chunks else np.zeros((channels, 0), np.float32)
        n_out = round(data.shape[1] / speed)
        src = np.arange(n_out) * speed
        yield np.stack([np.interp(src, np.arange(data.shape[1]), ch) for ch in data]).astype(np.float32) \
            if data.shape[1] else np.zeros((channels, 0), np.float32)
        return
    from fractions import Fraction

    g = av.filter.Graph()
    src = g.add_abuffer(sample_rate=sample_rate, format="fltp", layout=layout, time_base=Fraction(1, sample_rate))
    nodes = [src] + [g.add("atempo", f"{s:.9f}") for s in _atempo_chain(speed)]
    sink = g.add("abuffersink")
    nodes.append(sink)
    g.link_nodes(*nodes).configure()
    pts = 0

    def drain() -> Iterator[np.ndarray]:
        while True:
            try:
                f = sink.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            yield f.to_ndarray().astype(np.float32, copy=False).reshape(channels, -1)

    for a in chunks:
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(a, np.float32), format="fltp", layout=layout)
        f.sample_rate = sample_rate
        f.pts = pts
        f.time_base = Fraction(1, sample_rate)
        pts += a.shape[1]
        src.push(f)
        yield from drain()
    src.push(None)
    yield from drain()


def render(track: AudioTrack | None, sample_rate: int = 48000, layout: str = "stereo") -> Iterator[np.ndarray]:
    """The track's samples as float32 (channels, n) chunks at `sample_rate`/`layout`.

    Each segment yields exactly the samples between round(its output start * sr) and round(its
    output end * sr), so the total is round(track.duration * sr) and nothing drifts.
    """
    if track is None:
        return
    channels = _channels(layout)
    t = 0.0
    for seg in track.segments:
        first, t = round(t * sample_rate), t + seg.out_duration
        n_out = round(t * sample_rate) - first
        if n_out <= 0:
            continue
        if not seg.path:
            yield from _silence(n_out, channels)
            continue
        chunks: Iterator[np.ndarray] = _decode(seg, sample_rate, layout, channels)
        if seg.reverse:
            data = np.concatenate(list(chunks), axis=1)[:, ::-1]
            chunks = iter([np.ascontiguousarray(data[:, i:i + _CHUNK]) for i in range(0, data.shape[1], _CHUNK)])
        if abs(seg.speed - 1.0) > 1e-9:
            chunks = _tempo(chunks, seg.speed, sample_rate, layout, channels)
        yield from _exact(chunks, n_out, channels)


def _exact(chunks: Iterator[np.ndarray], n: int, channels: int) -> Iterator[np.ndarray]:
    """Exactly n samples of `chunks` (cut, or padded with silence)."""
    got = 0
    for a in chunks:
        if got >= n:
            break
        a = a[:, : n - got]
        if a.shape[1]:
            yield a
            got += a.shape[1]
    yield from _silence(n - got, channels)


def duration_samples(track: AudioTrack, sample_rate: int) -> int:
    return round(track.duration * sample_rate)


__all__ = ["AudioSegment", "AudioTrack", "duration_samples", "probe_audio", "render"]
