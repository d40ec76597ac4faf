"""Frame-exact video decoding: frames addressed by presentation time, decoded on demand.

`FrameIndex` lists a file's frames from the demuxed packets' pts (no decoding), sorted, so frame i
is the i-th frame a player shows, also for variable-frame-rate files. `FrameReader` decodes frame
i with PyAV: a forward read continues the open decoder, a jump seeks to the keyframe before and
decodes forward to the wanted pts. Alpha sources come through as 4 channels and >8-bit sources
as float from 16-bit samples. imageio-ffmpeg reads what PyAV cannot open (or when PyAV is
missing). PyAV and imageio-ffmpeg are imported only when a file is read.
"""

from __future__ import annotations

import bisect
import pathlib
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodes.types import Video
from nodes.video.audio import AudioTrack

VIDEO_PATTERNS = ("*.mp4", "*.mov", "*.avi", "*.mkv", "*.webm", "*.m4v", "*.gif", "*.webp")
MAX_FPS = 1000.0
_ALPHA_PREFIXES = ("yuva", "rgba", "bgra", "argb", "abgr", "gbrap", "ya")


def _one_line(path: pathlib.Path, what: str, exc: BaseException | None = None) -> ValueError:
    msg = f"{path}: {what}"
    if exc is not None:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        detail = detail.replace(str(path), "").strip(" :'\"") or type(exc).__name__
        msg += f" ({detail})"
    return ValueError(msg)


@dataclass
class FrameIndex:
    """The frames of a file's first video stream, in presentation order."""

    path: pathlib.Path
    pts: list[int]  # presentation time of frame i, in `time_base` units (sorted)
    keyframes: list[int]  # pts of the keyframes (sorted)
    time_base: float  # seconds per pts unit
    end: int  # pts where the last frame ends
    fps: float
    width: int
    height: int
    channels: int  # 3, or 4 for a source with alpha
    deep: bool  # more than 8 bits per sample
    backend: str = "av"
    audio: AudioTrack | None = field(default=None, repr=False)
    decoder: str = ""  # a decoder to use instead of FFmpeg's default for the codec ("" = the default)

    def __len__(self) -> int:
        return len(self.pts)

    def time(self, i: int) -> float:
        """Seconds from the file's first frame to frame i (the end of the clip for i == len)."""
        at = self.pts[i] if i < len(self.pts) else self.end
        return (at - self.pts[0]) * self.time_base if self.pts else 0.0

    @property
    def duration(self) -> float:
        return self.time(len(self.pts))


def _pix_info(fmt_name: str | None) -> tuple[int, bool]:
    import av

    if not fmt_name:
        return 3, False
    try:
        fmt = av.VideoFormat(fmt_name)
    except Exception:  # noqa: BLE001
        return 3, False
    comps = fmt.components
    alpha = any(getattr(c, "is_alpha", False) for c in comps) or fmt_name.startswith(_ALPHA_PREFIXES)
    deep = max((c.bits for c in comps), default=8) > 8
    return (4 if alpha else 3), deep


def index_av(path: pathlib.Path) -> FrameIndex:
    """Index a file with PyAV from its packets (raises ValueError, one line, when it cannot)."""
    import av

    try:
        c = av.open(str(path), metadata_errors="ignore")
    except Exception as exc:  # noqa: BLE001 - any open failure is "cannot open"
        raise _one_line(path, "cannot open video", exc) from None
    try:
        if not c.streams.video:
            raise _one_line(path, "has no video stream")
        s = c.streams.video[0]
        cc = s.codec_context
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w <= 0 or h <= 0:
            raise _one_line(path, "has no picture size (damaged header?)")
        if w * h > 16384 * 16384:
            raise _one_line(path, f"declares an absurd picture size {w}x{h}")
        pts: list[int] = []
        keys: list[int] = []
        end = None
        none_seen = False
        try:
            for pkt in c.demux(s):
                if pkt.size == 0 or pkt.is_discard:
                    continue
                p = pkt.pts if pkt.pts is not None else pkt.dts
                if p is None:
                    none_seen = True
                    p = (pts[-1] + 1) if pts else 0
                pts.append(p)
                if pkt.is_keyframe:
                    keys.append(p)
                if pkt.duration:
                    end = max(end or p, p + pkt.duration)
        except av.error.FFmpegError:
            pass  # a truncated file: index what was demuxed
        if not pts:
            raise _one_line(path, "has no video frames")
        pts = sorted(set(pts))
        tb = float(s.time_base) if s.time_base else 1 / 90000
        if none_seen and len(pts) > 1:
            keys = [pts[0]]
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 0.0
        if len(pts) > 1 and not 0 < fps <= MAX_FPS:
            fps = (len(pts) - 1) / max((pts[-1] - pts[0]) * tb, 1e-9)
        if not 0 < fps <= MAX_FPS or fps != fps:
            fps = 24.0
        step = round(1 / (fps * tb)) if tb else 1
        if end is None or end <= pts[-1]:
            end = pts[-1] + max(1, step)
        channels, deep = _pix_info(cc.pix_fmt or (s.format.name if s.format else None))
        decoder = ""
        if cc.name == "vp9" and str(s.metadata.get("alpha_mode", "")) == "1" \
                and "libvpx-vp9" in av.codecs_available:
            # VP9 keeps alpha in a second stream (WebM BlockAdditional) that FFmpeg's native vp9
            # decoder ignores; libvpx's decoder reads it and gives yuva420p
            channels, decoder = 4, "libvpx-vp9"
        audio = None
        if c.streams.audio:
            audio = AudioTrack.of_file(path)
            if audio is not None:
                a = c.streams.audio[0]
                a0 = float(a.start_time * a.time_base) if a.start_time is not None and a.time_base else 0.0
                # put the audio on the video's clock: 0 = the first frame's time
                shift = pts[0] * tb - a0
                if shift > 0:
                    audio = audio.trim(shift, audio.duration)
                elif shift < 0:
                    audio = AudioTrack.silence(-shift) + audio
        return FrameIndex(path, pts, sorted(set(keys)) or [pts[0]], tb, end, fps, w, h, channels, deep,
                          audio=audio, decoder=decoder)
    finally:
        c.close()


class _AvState:
    """An open container + decoder position (shared with the finalizer)."""

    def __init__(self) -> None:
        self.container: Any = None
        self.frames: Any = None  # the decode iterator
        self.last = None  # pts of the frame decoded last
        self.pending: Any = None  # a decoded frame past the one asked for

    def close(self) -> None:
        c, self.container, self.frames, self.last, self.pending = self.container, None, None, None, None
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass


def _release(state: Any) -> None:
    state.close()


def _decode_with(container: Any, stream: Any, decoder: str) -> Any:
    import av

    cc = av.codec.CodecContext.create(decoder, "r")
    src = stream.codec_context
    if src.extradata:
        cc.extradata = src.extradata
    cc.width, cc.height = src.width, src.height
    cc.thread_type = "AUTO"
    for pkt in container.demux(stream):
        if pkt.size:
            yield from cc.decode(pkt)
    yield from cc.decode(None)


class FrameReader:
    """Frames of one file on demand, thread-safe; a forward read reuses the open container.

    The file is released after the clip's last frame is read, by `close()`, and at the latest
    when the reader is garbage-collected; a later read reopens it. Frame i of the reader is frame
    `start + i*stride` of the file (frames counted in presentation order).
    """

    def __init__(self, path: pathlib.Path, start: int = 0, stride: int = 1, length: int | None = None,
                 index: FrameIndex | None = None) -> None:
        self.path = pathlib.Path(path)
        self.index = index or probe_index(self.path)
        self.start = start
        self.stride = stride
        self.length = length if length is not None else max(0, -(-(len(self.index) - start) // stride))
        self._state: Any = {"av": _AvState, "pil": _PilState}.get(self.index.backend, _FfState)()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _release, self._state)

    # ---------------------------------------------------------------- PyAV
    def _open(self) -> None:
        import av

        st = self._state
        try:
            st.container = av.open(str(self.path), metadata_errors="ignore")
            stream = st.container.streams.video[0]
            stream.thread_type = "AUTO"
        except Exception as exc:  # noqa: BLE001
            st.close()
            raise _one_line(self.path, "cannot open video", exc) from None
        st.frames = None

    def _seek(self, want: int) -> None:
        st = self._state
        keys = self.index.keyframes
        k = bisect.bisect_right(keys, want) - 1
        target = keys[k] if k >= 0 else self.index.pts[0]
        if target <= self.index.pts[0]:
            st.close()  # from the top: reopen (a seek to 0 is not reliable for every demuxer)
            self._open()
        else:
            st.container.seek(target, stream=st.container.streams.video[0], backward=True, any_frame=False)
        st.frames = self._decode_stream()
        st.last = None
        st.pending = None

    def _decode_stream(self) -> Any:
        """Decoded frames of the video stream from where the container is: FFmpeg's default
        decoder, or the index's `decoder` fed with the demuxed packets (a fresh one per seek)."""
        st = self._state
        stream = st.container.streams.video[0]
        if not self.index.decoder:
            return st.container.decode(stream)
        return _decode_with(st.container, stream, self.index.decoder)

    def _next_frame(self) -> Any:
        st = self._state
        if st.pending is not None:
            f, st.pending = st.pending, None
            return f
        return next(st.frames)

    def _decode_av(self, want: int) -> Any:
        import av

        st = self._state
        if st.container is None:
            self._open()
            self._seek(want)
        elif st.last is None or want <= st.last or self._far(st.last, want):
            self._seek(want)
        retried = False
        while True:
            try:
                f = self._next_frame()
            except StopIteration:
                raise _one_line(self.path, f"cannot decode frame at pts {want} (damaged or truncated file?)") \
                    from None
            except av.error.FFmpegError as exc:
                raise _one_line(self.path, "cannot decode frame", exc) from None
            p = f.pts if f.pts is not None else (st.last + 1 if st.last is not None else self.index.pts[0])
            if p < want:
                st.last = p
                continue
            if p > want and st.last is None and not retried:
                # the seek landed after the frame (a demuxer whose seek is not exact): go to the top
                retried = True
                st.close()
                self._open()
                st.frames = self._decode_stream()
                continue
            if p > want:
                st.pending = f  # the wanted pts never decoded: show the next frame, keep it for later
            st.last = want
            return f

    def _far(self, last: int, want: int) -> bool:
        """Whether a seek is cheaper than decoding forward: a keyframe lies between and it is far."""
        keys = self.index.keyframes
        k = bisect.bisect_right(keys, want) - 1
        if k < 0 or keys[k] <= last:
            return False
        pts = self.index.pts
        return bisect.bisect_left(pts, want) - bisect.bisect_left(pts, last) > 16

    def _to_array(self, f: Any) -> np.ndarray:
        ix = self.index
        if ix.deep:
            fmt = "rgba64le" if ix.channels == 4 else "rgb48le"
            a = f.to_ndarray(format=fmt)
            out = np.multiply(a, np.float32(1 / 65535.0), dtype=np.float32)  # one pass, one array
        else:
            fmt = "rgba" if ix.channels == 4 else "rgb24"
            a = f.to_ndarray(format=fmt)
            out = np.multiply(a, np.float32(1 / 255.0), dtype=np.float32)
        if out.shape[0] != ix.height or out.shape[1] != ix.width:
            from nodes.image.util import resize

            out = resize(out, ix.width, ix.height)
        return out

    # ---------------------------------------------------------------- public
    def frame(self, i: int) -> np.ndarray:
        k = self.start + i * self.stride
        if not 0 <= k < len(self.index):
            raise IndexError(f"frame {i} out of range 0..{self.length - 1}")
        want = self.index.pts[k]
        with self._lock:
            try:
                if self.index.backend == "av":
                    out = self._to_array(self._decode_av(want))
                else:
                    out = self._state.frame(self.path, k, self.index)
            except BaseException:
                self._state.close()
                raise
            if i >= self.length - 1:
                self._state.close()
        return out[None]

    def close(self) -> None:
        """Release the file now (a later read reopens it)."""
        with self._lock:
            self._state.close()


# -------------------------------------------------------------------- Pillow (animated WebP)
class _PilState:
    """Animated WebP through Pillow (FFmpeg's webp decoder does not take animations)."""

    def __init__(self) -> None:
        self.im: Any = None

    def close(self) -> None:
        im, self.im = self.im, None
        if im is not None:
            im.close()

    def frame(self, path: pathlib.Path, k: int, index: FrameIndex) -> np.ndarray:
        from PIL import Image as PILImage

        if self.im is None:
            self.im = PILImage.open(path)
        try:
            self.im.seek(k)
            a = np.asarray(self.im.convert("RGBA" if index.channels == 4 else "RGB"))
        except Exception as exc:  # noqa: BLE001
            raise _one_line(path, f"cannot decode frame {k}", exc) from None
        return a.astype(np.float32) / np.float32(255.0)


def webp_durations(path: pathlib.Path) -> list[int]:
    """The frame durations (ms) of an animated WebP from its ANMF chunk headers (no decoding).

    Pillow only fills `info["duration"]` when a frame is decoded, so the index reads the chunks.
    An empty list for a still WebP (no ANMF chunk).
    """
    import struct

    durations: list[int] = []
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return durations
        while True:
            ch = f.read(8)
            if len(ch) < 8:
                break
            (size,) = struct.unpack("<I", ch[4:])
            if ch[:4] == b"ANMF":
                body = f.read(16)
                if len(body) < 16:
                    break
                durations.append(int.from_bytes(body[12:15], "little"))
                f.seek(size + (size & 1) - 16, 1)
            else:
                f.seek(size + (size & 1), 1)
    return durations


def index_pil(path: pathlib.Path) -> FrameIndex:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path, formats=["WEBP"]) as im:
            n = int(getattr(im, "n_frames", 1))
            w, h = im.size
            alpha = im.mode in ("RGBA", "LA") or "transparency" in im.info
        durations = webp_durations(path)
    except Exception as exc:  # noqa: BLE001
        raise _one_line(path, "cannot open video", exc) from None
    if len(durations) != n:
        durations = [40] * n
    times = [0]
    for d in durations:
        times.append(times[-1] + max(1, d))
    fps = n / (times[-1] / 1000) if times[-1] else 24.0
    if abs(fps - round(fps)) <= 0.005 * fps:  # millisecond durations: 24 fps is stored as 42, 41, 42 ...
        fps = float(round(fps))
    return FrameIndex(path, times[:-1], [0], 0.001, times[-1], min(fps, MAX_FPS), w, h, 4 if alpha else 3, False,
                      backend="pil")


# -------------------------------------------------------------------- imageio-ffmpeg fallback
class _FfState:
    """Sequential frames from an imageio-ffmpeg pipe; a backward jump restarts it."""

    def __init__(self) -> None:
        self.gen: Any = None
        self.next = 0

    def close(self) -> None:
        g, self.gen = self.gen, None
        if g is not None:
            try:
                g.close()
            except Exception:  # noqa: BLE001
                pass

    def frame(self, path: pathlib.Path, k: int, index: FrameIndex) -> np.ndarray:
        import imageio_ffmpeg

        if self.gen is None or k < self.next:
            self.close()
            self.gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", ffmpeg_log_level="error")
            self.gen.__next__()  # the meta dict
            self.next = 0
        data = None
        while self.next <= k:
            try:
                data = next(self.gen)
            except StopIteration:
                raise _one_line(path, f"cannot decode frame {k} (damaged or truncated file?)") from None
            except Exception as exc:  # noqa: BLE001
                raise _one_line(path, "cannot decode frame", exc) from None
            self.next += 1
        a = np.frombuffer(data, np.uint8).reshape(index.height, index.width, 3)
        return a.astype(np.float32) / np.float32(255.0)


def index_ffmpeg(path: pathlib.Path) -> FrameIndex:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise _one_line(path, "cannot open video (neither PyAV nor imageio-ffmpeg is installed)") from None
    try:
        gen = imageio_ffmpeg.read_frames(str(path), ffmpeg_log_level="error")
        meta = gen.__next__()
        gen.close()
        n, _secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as exc:  # noqa: BLE001
        raise _one_line(path, "cannot open video", exc) from None
    w, h = meta.get("size") or (0, 0)
    fps = float(meta.get("fps") or 24.0)
    if not 0 < fps <= MAX_FPS:
        fps = 24.0
    if n <= 0 or w <= 0 or h <= 0:
        raise _one_line(path, "has no video frames")
    return FrameIndex(path, list(range(n)), [0], 1 / fps, n, fps, int(w), int(h), 3, False, backend="ffmpeg")


def probe_index(path: pathlib.Path) -> FrameIndex:
    """The frame index of a file: PyAV, else imageio-ffmpeg (ValueError, one line, when neither reads it)."""
    path = pathlib.Path(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(f"{path}: a folder, not a video file")
        raise FileNotFoundError(f"video file not found: {path}")
    if path.suffix.lower() == ".webp":
        return index_pil(path)
    try:
        import av  # noqa: F401
    except ImportError:
        return index_ffmpeg(path)
    try:
        return index_av(path)
    except ValueError as first:
        if "cannot open" not in str(first):
            raise
        try:
            return index_ffmpeg(path)
        except ValueError:
            raise first from None


def probe(path: pathlib.Path) -> tuple[int, float, int, int]:
    """(frame count, fps, width, height) of a video file."""
    ix = probe_index(pathlib.Path(path))
    return len(ix), ix.fps, ix.width, ix.height


def open_video(path: pathlib.Path, start: int = 0, max_frames: int = 0, stride: int = 1) -> Video:
    """A lazy Video over a file: frames from `start`, every `stride`-th, at most `max_frames` (0 = all).

    Its `audio` is the file's sound from the first used frame's time to the end of the last
    used one (for a stride, the time until the next unused group starts).
    """
    path = pathlib.Path(path)
    if stride < 1:
        raise ValueError(f"{path}: stride must be >= 1, got {stride}")
    ix = probe_index(path)
    total = len(ix)
    length = max(0, -(-(total - start) // stride))
    if max_frames:
        length = min(length, max_frames)
    if length == 0:
        raise ValueError(f"{path}: no frames from frame {start} on (the clip has {total})")
    reader = FrameReader(path, start, stride, length, index=ix)
    audio = None
    if ix.audio is not None:
        t0, t1 = ix.time(start), ix.time(min(total, start + length * stride))
        audio = ix.audio.trim(t0, t1 - t0)
    return Video(length, ix.fps / stride, (ix.width, ix.height), reader.frame, channels=ix.channels, audio=audio)
