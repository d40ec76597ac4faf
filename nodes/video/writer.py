"""Encode a Video (and its audio) into a file with PyAV, one frame at a time.

The file is written under a temporary name in the same folder and renamed into place at the end,
so a cancel or a crash never leaves a corrupt file under the final name. Audio is stream-copied
when it is one untouched stretch of a source whose codec the container takes, else rendered
(`nodes.video.audio.render`) and re-encoded; it always lasts exactly as long as the frames.
Without PyAV, h264 goes through imageio-ffmpeg and mp4v/mjpg/vp8 through OpenCV (no audio).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import uuid
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np

from nodes.types import Context, Video
from nodes.video.audio import AudioTrack, probe_audio, render
from nodes.video.codecs import ANIMATED, SPECS, CodecSpec, VideoCodec
from nodes.video.reader import MAX_FPS

METADATA_KEY = "imagebash_workflow"
#: Prefix of the imagebash workflow in an animated WebP's EXIF ImageDescription (0x010E): ComfyUI
#: keeps "prompt:" / "workflow:" in 0x0110 / 0x010F (and reads those two keys only), so they never clash.
WEBP_EXIF_PREFIX = "imagebash:"
EXIF_IMAGE_DESCRIPTION = 0x010E

#: Source audio codecs each container takes by stream copy.
_COPY_OK = {"mp4": {"aac", "mp3", "alac", "ac3", "opus"}, "mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le"},
            "webm": {"opus", "vorbis"}, "mkv": {"aac", "mp3", "opus", "vorbis", "flac", "ac3", "pcm_s16le"},
            "avi": {"mp3", "ac3", "pcm_s16le"}}


def temp_path(path: pathlib.Path) -> pathlib.Path:
    """A hidden name next to `path` with the same extension, for writing before the rename."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


def check_codec(codec: VideoCodec, who: str = "Save Video") -> CodecSpec:
    spec = SPECS[codec]
    try:
        import av
    except ImportError:
        if codec in (VideoCodec.H264, VideoCodec.MP4V, VideoCodec.MJPG, VideoCodec.VP8):
            return spec
        raise ValueError(f"{who}: codec {codec.value} needs PyAV (pip install av)") from None
    if spec.encoder not in av.codecs_available:
        raise ValueError(f"{who}: codec {codec.value} ({spec.encoder}) is missing from this PyAV/FFmpeg build")
    return spec


def check_rate(rate: float, who: str = "Save Video") -> float:
    if not rate == rate or rate <= 0 or rate > MAX_FPS:
        raise ValueError(f"{who}: fps {rate:g} is out of range (0 < fps <= {MAX_FPS:g})")
    return float(rate)


def _to_int(frame: np.ndarray, deep: bool, buf: np.ndarray | None = None) -> np.ndarray:
    """[0, 1] floats to uint8 (uint16 when deep), rounded; NaN and -inf give 0, +inf the maximum.

    One scaled copy (into `buf` when it has the shape) and in-place clamps: `fmax`/`fmin` drop
    NaN, so no separate `nan_to_num` pass and no temporaries per frame.
    """
    scale = np.float32(65535.0 if deep else 255.0)
    if buf is None or buf.shape != frame.shape:
        buf = np.empty(frame.shape, np.float32)
    np.multiply(frame, scale, out=buf, casting="unsafe")
    buf += np.float32(0.5)
    np.fmax(buf, np.float32(0.0), out=buf)
    np.fmin(buf, scale, out=buf)
    return buf.astype(np.uint16 if deep else np.uint8)


class _Frames:
    """Frame i of a Video as the encoder wants it: channels, even size, one size throughout."""

    def __init__(self, video: Video, codec: VideoCodec, spec: CodecSpec, bit_depth: int, log: Callable[[str], None]):
        self.video, self.codec, self.spec, self.log = video, codec, spec, log
        self.deep = bit_depth > 8 and bool(spec.deep_pix_fmt)
        self.alpha: bool | None = None
        self.size: tuple[int, int] = (0, 0)
        self.src_size: tuple[int, int] = (0, 0)
        self._buf: np.ndarray | None = None  # the float scratch frame of _to_int, reused

    def get(self, i: int) -> np.ndarray:
        from nodes.image.util import resize

        f = self.video.frame(i)[0]
        c = f.shape[-1]
        if self.alpha is None:  # the first frame decides
            self.alpha = c in (2, 4) and bool(self.spec.alpha_pix_fmt)
            if c in (2, 4) and not self.alpha:
                self.log(f"Save Video: {self.codec.value} has no alpha channel; alpha dropped")
            h, w = f.shape[:2]
            self.src_size = (w, h)
            mw, mh = self.spec.min_size
            w2, h2 = max(w, mw), max(h, mh)
            if self.spec.even:
                w2, h2 = w2 + w2 % 2, h2 + h2 % 2
            if (w2, h2) != (w, h):
                self.log(f"Save Video: {w}x{h} padded to {w2}x{h2} for {self.codec.value}")
            self.size = (w2, h2)
        if c == 1:
            f = np.repeat(f, 3, axis=-1)
        elif c == 2:
            f = np.concatenate([np.repeat(f[..., :1], 3, -1), f[..., 1:]], -1)
        if self.alpha and f.shape[-1] == 3:
            f = np.concatenate([f, np.ones_like(f[..., :1])], -1)
        elif not self.alpha:
            f = f[..., :3]
        h, w = f.shape[:2]
        if (w, h) != self.src_size:
            f = resize(f, *self.src_size)
            h, w = f.shape[:2]
        pw, ph = self.size[0] - w, self.size[1] - h
        if pw or ph:
            f = np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge")
        if self._buf is None or self._buf.shape != f.shape:
            self._buf = np.empty(f.shape, np.float32)
        return _to_int(f, self.deep, self._buf)

    @property
    def av_format(self) -> str:
        if self.deep:
            return "rgba64le" if self.alpha else "rgb48le"
        return "rgba" if self.alpha else "rgb24"

    def pix_fmt(self) -> str:
        s = self.spec
        if self.deep:
            return (s.deep_alpha_pix_fmt if self.alpha else s.deep_pix_fmt) or s.pix_fmt
        return (s.alpha_pix_fmt if self.alpha else s.pix_fmt) or s.pix_fmt


def _pull(sink: Any) -> Iterator[Any]:
    import av

    while True:
        try:
            yield sink.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return


class _Gif:
    """rgb24 frames -> pal8 with a per-frame palettegen/paletteuse graph (streams, no frame kept)."""

    def __init__(self, size: tuple[int, int], rate: Fraction, colors: int) -> None:
        import av.filter

        g = self.graph = av.filter.Graph()
        self.src = g.add_buffer(width=size[0], height=size[1], format="rgb24", time_base=1 / rate)
        sp = g.add("split")
        pg = g.add("palettegen", f"stats_mode=single:max_colors={colors}:reserve_transparent=0")
        pu = g.add("paletteuse", "new=1:dither=sierra2_4a")
        self.sink = g.add("buffersink")
        self.src.link_to(sp)
        sp.link_to(pg, 0, 0)
        sp.link_to(pu, 1, 0)
        pg.link_to(pu, 0, 1)
        pu.link_to(self.sink)
        g.configure()

    def push(self, frame: Any) -> Iterator[Any]:
        self.src.push(frame)
        return _pull(self.sink)


class _AudioOut:
    """The audio stream of the output: copy packets or encode rendered samples, interleaved."""

    def __init__(self, container: Any, track: AudioTrack, spec: CodecSpec, ext: str, duration: float) -> None:
        import av

        self.container, self.track, self.done = container, track, False
        self.copy_src: Any = None
        seg = track.untouched
        info = probe_audio(seg.path) if seg is not None else []
        if seg is not None and seg.stream < len(info) and info[seg.stream]["codec"] in _COPY_OK.get(ext, set()) \
                and abs(track.duration - duration) < 1e-3:
            self.copy_src = av.open(seg.path)
            src = self.copy_src.streams.audio[seg.stream]
            self.stream = container.add_stream_from_template(src)
            self.seg, self.src = seg, src
            self._packets = self._copy_packets()
            return
        src_info = info[seg.stream] if seg is not None and seg.stream < len(info) else \
            (probe_audio(track.segments[0].path) if track.segments and track.segments[0].path else [{}])[0] \
            if track.segments else {}
        rate = 48000 if spec.audio == "libopus" else int((src_info or {}).get("sample_rate") or 48000)
        layout = "mono" if int((src_info or {}).get("channels") or 2) == 1 else "stereo"
        self.stream = container.add_stream(spec.audio, rate=rate)
        self.stream.layout = layout
        cc = self.stream.codec_context
        fmt = cc.codec.audio_formats[0].name if cc.codec.audio_formats else "fltp"
        self.rate, self.layout = rate, layout
        self.resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate, frame_size=cc.frame_size or 1024)
        self.samples = render(track, rate, layout)
        self.pushed = 0

    def _copy_packets(self) -> Iterator[tuple[float, Any]]:
        tb = self.src.time_base
        a0 = float(self.src.start_time * tb) if self.src.start_time is not None else 0.0
        t_start, t_end = a0 + self.seg.start, a0 + self.seg.start + self.seg.duration
        if self.seg.start > 1.0:
            self.copy_src.seek(int((t_start - 1.0) / tb), stream=self.src, backward=True)
        first = None
        for pkt in self.copy_src.demux(self.src):
            if pkt.dts is None or pkt.pts is None:
                continue
            t = float(pkt.pts * tb)
            dur = float((pkt.duration or 0) * tb)
            if t + dur <= t_start + 1e-4:
                continue
            if t >= t_end - 1e-4:
                break
            if first is None:
                first = pkt.pts
            pkt.pts -= first
            pkt.dts -= first
            pkt.stream = self.stream
            yield t - t_start, pkt

    def until(self, t: float) -> None:
        """Write the audio up to output time t (seconds); everything when t is None."""
        if self.done:
            return
        if self.copy_src is not None:
            for at, pkt in self._packets:
                self.container.mux(pkt)
                if at >= t:
                    return
            self.done = True
            return
        import av

        want = round(t * self.rate) if t != float("inf") else 1 << 62
        while self.pushed < want:
            try:
                a = next(self.samples)
            except StopIteration:
                self.done = True
                return
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(a, np.float32), format="fltp", layout=self.layout)
            f.sample_rate = self.rate
            f.pts = self.pushed
            f.time_base = Fraction(1, self.rate)
            self.pushed += a.shape[1]
            for rf in self.resampler.resample(f):
                self.container.mux(self.stream.encode(rf))

    def finish(self) -> None:
        self.until(float("inf"))
        if self.copy_src is not None:
            self.copy_src.close()
            return
        for rf in self.resampler.resample(None):
            self.container.mux(self.stream.encode(rf))
        self.container.mux(self.stream.encode(None))


def fit_audio(track: AudioTrack | None, src_fps: float, rate: float, frames: int) -> AudioTrack | None:
    """The track re-timed for playback at `rate` instead of `src_fps`, cut or padded to the frames' length."""
    if track is None or frames <= 0:
        return None
    if src_fps > 0 and abs(rate - src_fps) > 1e-9:
        track = track.retimed(rate / src_fps)
    want = frames / rate
    if track.duration > want + 1e-9:
        return track.trim(0.0, want)
    if track.duration < want - 1e-6:
        return track + AudioTrack.silence(want - track.duration)
    return track


def write_video(video: Video, path: pathlib.Path, codec: VideoCodec = VideoCodec.H264, fps: float = 0.0,
                crf: int = -1, ctx: Context | None = None, *, preset: str = "", bitrate: str = "",
                quality: int = 90, lossless: bool = False, loop: int = 0, bit_depth: int = 8,
                audio: AudioTrack | None = None, audio_fps: float | None = None,
                metadata: dict[str, str] | None = None) -> float:
    """Encode every frame of `video` (and `audio`) into `path`, one frame at a time; returns the fps used.

    Written under a temporary name and renamed to `path` at the end; on any error (or a cancel)
    the partial file is deleted and `path` is left as it was.
    """
    codec = VideoCodec(codec)
    path = pathlib.Path(path)
    rate = check_rate(float(fps or video.fps or 24.0))
    spec = check_codec(codec)
    if len(video) == 0:
        raise ValueError("Save Video: the video has no frames")
    if bit_depth not in (8, 16):
        raise ValueError(f"Save Video: bit_depth must be 8 or 16, got {bit_depth}")
    log = (lambda m: ctx.log(m)) if ctx is not None else (lambda m: None)
    try:
        import av  # noqa: F401
    except ImportError:
        from nodes.video.fallback import write_without_av

        return write_without_av(video, path, codec, rate, crf if crf >= 0 else 18, ctx)
    tmp = temp_path(path)
    try:
        _encode(video, tmp, codec, spec, rate, crf, ctx, log, preset=preset, bitrate=bitrate, quality=quality,
                lossless=lossless, loop=loop, bit_depth=bit_depth, audio=audio,
                metadata=metadata, audio_fps=video.fps if audio_fps is None else audio_fps)
        if codec in ANIMATED and (metadata or {}).get(METADATA_KEY):
            # the gif and webp muxers write no container tags: the workflow goes into a GIF comment
            # extension / the WebP's EXIF chunk instead
            embed = embed_gif_comment if codec is VideoCodec.GIF else embed_webp_exif
            tmp.write_bytes(embed(tmp.read_bytes(), metadata[METADATA_KEY]))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rate


def _encode(video: Video, tmp: pathlib.Path, codec: VideoCodec, spec: CodecSpec, rate: float, crf: int,
            ctx: Context | None, log: Callable[[str], None], *, preset: str, bitrate: str, quality: int,
            lossless: bool, loop: int, bit_depth: int, audio: AudioTrack | None,
            metadata: dict[str, str] | None, audio_fps: float) -> None:
    import av

    fr = Fraction(rate).limit_denominator(1001 * 1000)
    options: dict[str, str] = {}
    if spec.ext in ("mp4", "mov"):
        options["movflags"] = "use_metadata_tags+faststart"
    if codec in ANIMATED:
        options["loop"] = str(max(0, int(loop)))
    frames = _Frames(video, codec, spec, bit_depth, log)
    n = len(video)
    out = av.open(str(tmp), "w", format={"mkv": "matroska"}.get(spec.ext, spec.ext), options=options)
    aout: _AudioOut | None = None
    try:
        for k, v in (metadata or {}).items():
            out.metadata[k] = v
        stream: Any = None
        gif: _Gif | None = None
        for i in range(n):
            if ctx is not None:
                ctx.check_cancelled()
            arr = frames.get(i)
            if stream is None:
                stream = out.add_stream(spec.encoder, rate=fr)
                stream.width, stream.height = frames.size
                stream.pix_fmt = "bgra" if codec is VideoCodec.WEBP and lossless else frames.pix_fmt()
                stream.options = _video_options(codec, spec, crf, preset, bitrate, quality, lossless)
                if bitrate and codec not in ANIMATED:
                    stream.bit_rate = _parse_bitrate(bitrate)
                if codec is VideoCodec.H265:
                    stream.codec_tag = "hvc1"
                stream.thread_type = "AUTO"
                if codec is VideoCodec.GIF:
                    colors = max(2, min(256, round(2 + 254 * quality / 100)))
                    gif = _Gif(frames.size, fr, min(colors, 256))
                if audio is not None and spec.audio:
                    fitted = fit_audio(audio, audio_fps or rate, rate, n)
                    if fitted is not None:
                        aout = _AudioOut(out, fitted, spec, spec.ext, n / rate)
                elif audio is not None and not spec.audio:
                    log(f"Save Video: {codec.value} ({spec.ext}) carries no audio; audio dropped")
            vf = av.VideoFrame.from_ndarray(arr, format=frames.av_format)
            vf.pts = i
            vf.time_base = 1 / fr
            if gif is not None:
                for pf in gif.push(vf):
                    out.mux(stream.encode(pf))
            else:
                out.mux(stream.encode(vf))
            if aout is not None:
                aout.until((i + 1) / rate)
            if ctx is not None:
                ctx.progress((i + 1) / n, text=f"frame {i + 1}/{n}")
        if gif is not None:
            gif.src.push(None)
            for pf in _pull(gif.sink):
                out.mux(stream.encode(pf))
        out.mux(stream.encode(None))
        if aout is not None:
            aout.finish()
    finally:
        with contextlib.suppress(Exception):
            if aout is not None and aout.copy_src is not None:
                aout.copy_src.close()
        out.close()


def _video_options(codec: VideoCodec, spec: CodecSpec, crf: int, preset: str, bitrate: str, quality: int,
                   lossless: bool) -> dict[str, str]:
    opts = dict(spec.options)
    if codec is VideoCodec.WEBP:
        return {"lossless": "1" if lossless else "0", "quality": str(max(0, min(100, quality)))}
    if spec.crf is not None and not bitrate:
        value = spec.crf if crf < 0 else min(crf, spec.crf_max)
        opts["crf"] = str(value)
    elif bitrate:
        opts.pop("b:v", None)
    if codec in (VideoCodec.MP4V,) and crf >= 0:
        opts["q:v"] = str(max(1, min(31, 1 + crf * 30 // 51)))
    p = preset or spec.preset
    if p:
        if codec in (VideoCodec.VP9, VideoCodec.VP8):
            if p.lstrip("-").isdigit():
                opts["cpu-used"] = p
            else:
                opts["deadline"] = p
        elif codec is VideoCodec.PRORES4444:
            pass
        elif codec in (VideoCodec.H264, VideoCodec.H265, VideoCodec.AV1):
            opts["preset"] = p
    return opts


def _parse_bitrate(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult != 1 else t) * mult
    except ValueError:
        raise ValueError(f"Save Video: bitrate '{text}' is not a rate like 8M or 2500k") from None
    if value <= 0:
        raise ValueError(f"Save Video: bitrate '{text}' must be > 0")
    return int(value)


def embed_gif_comment(data: bytes, text: str) -> bytes:
    """A GIF with a Comment Extension holding `text` (ASCII JSON) right after its global colour table.

    Comment extensions are ignored by every decoder when shown; Pillow reads the one before the
    first image as `info["comment"]`.
    """
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError("Save Video: the GIF encoder wrote no GIF file")
    flags = data[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    body = text.encode("ascii", "backslashreplace")
    blocks = b"".join(bytes([len(body[k:k + 255])]) + body[k:k + 255] for k in range(0, len(body), 255))
    return b"GIF89a" + data[6:at] + b"\x21\xfe" + blocks + b"\x00" + data[at:]


def embed_webp_exif(data: bytes, text: str) -> bytes:
    """An (animated) WebP with an EXIF chunk whose ImageDescription (0x010E) is "imagebash:" + `text`.

    The VP8X chunk gets its EXIF flag, the chunk goes last (where the WebP container spec puts
    EXIF), any EXIF chunk already there is replaced, and the RIFF size is updated.
    """
    import io
    import struct

    from PIL import Image as PILImage

    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or data[12:16] != b"VP8X":
        raise ValueError("Save Video: the WebP encoder wrote no extended (VP8X) WebP file")
    chunks, at = [], 12
    while at + 8 <= len(data):
        (size,) = struct.unpack_from("<I", data, at + 4)
        tag, body = data[at:at + 4], data[at + 8:at + 8 + size]
        if tag != b"EXIF":
            chunks.append([tag, body])
        at += 8 + size + (size & 1)
    exif = PILImage.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = WEBP_EXIF_PREFIX + text
    raw = exif.tobytes()
    raw = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    chunks.append([b"EXIF", raw])
    vp8x = bytearray(chunks[0][1])
    vp8x[0] |= 0x08  # EXIF metadata present
    chunks[0][1] = bytes(vp8x)
    out = io.BytesIO()
    for tag, body in chunks:
        out.write(tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b""))
    payload = b"WEBP" + out.getvalue()
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def workflow_metadata(workflow: dict | None, provenance: dict | None = None) -> dict[str, str]:
    """Container tags that carry the workflow: `comment` and `imagebash_workflow` (same JSON)."""
    if not workflow:
        return {}
    text = json.dumps(workflow, separators=(",", ":"))
    tags = {"comment": text, METADATA_KEY: text}
    if provenance:
        tags["imagebash_provenance"] = json.dumps(provenance, separators=(",", ":"), default=str)
    return tags
