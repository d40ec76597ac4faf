"""What each Save Video codec is: encoder, container, pixel formats, defaults, audio codec."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class VideoCodec(str, enum.Enum):
    """Video codecs of Save Video (PyAV); mp4v, mjpg and vp8 are the older OpenCV-era choices."""

    H264 = "h264"
    H265 = "h265"
    VP9 = "vp9"
    AV1 = "av1"
    PRORES4444 = "prores4444"
    FFV1 = "ffv1"
    GIF = "gif"
    WEBP = "webp"
    MP4V = "mp4v"
    MJPG = "mjpg"
    VP8 = "vp8"


@dataclass(frozen=True)
class CodecSpec:
    encoder: str  # PyAV / FFmpeg encoder name
    ext: str  # container (file extension)
    pix_fmt: str  # 8-bit pixel format without alpha
    alpha_pix_fmt: str = ""  # with alpha ("" = the codec drops alpha)
    deep_pix_fmt: str = ""  # bit_depth 16
    deep_alpha_pix_fmt: str = ""
    crf: int | None = None  # the sensible default quality (None = no crf)
    crf_max: int = 51
    preset: str = ""  # default preset
    audio: str = ""  # audio encoder ("" = no audio in this container)
    even: bool = True  # needs even width and height (chroma subsampling)
    options: dict[str, str] = field(default_factory=dict)
    min_size: tuple[int, int] = (2, 2)


SPECS: dict[VideoCodec, CodecSpec] = {
    VideoCodec.H264: CodecSpec("libx264", "mp4", "yuv420p", crf=18, preset="medium", audio="aac"),
    VideoCodec.H265: CodecSpec("libx265", "mp4", "yuv420p", crf=22, preset="medium", audio="aac",
                               options={"x265-params": "log-level=error"}),
    VideoCodec.VP9: CodecSpec("libvpx-vp9", "webm", "yuv420p", alpha_pix_fmt="yuva420p", crf=32, crf_max=63,
                              audio="libopus",
                              options={"b:v": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}),
    VideoCodec.AV1: CodecSpec("libsvtav1", "webm", "yuv420p", crf=35, crf_max=63, preset="8", audio="libopus",
                              min_size=(16, 16)),
    VideoCodec.PRORES4444: CodecSpec("prores_ks", "mov", "yuv444p10le", alpha_pix_fmt="yuva444p10le",
                                     deep_pix_fmt="yuv444p10le", deep_alpha_pix_fmt="yuva444p10le",
                                     audio="aac", even=False, options={"profile": "4"}),
    VideoCodec.FFV1: CodecSpec("ffv1", "mkv", "bgr0", alpha_pix_fmt="bgra", deep_pix_fmt="gbrp16le",
                               deep_alpha_pix_fmt="gbrap16le", audio="libopus", even=False,
                               options={"level": "3"}, min_size=(1, 1)),
    VideoCodec.GIF: CodecSpec("gif", "gif", "pal8", even=False, min_size=(1, 1)),
    VideoCodec.WEBP: CodecSpec("libwebp_anim", "webp", "yuv420p", alpha_pix_fmt="yuva420p", even=False,
                               min_size=(1, 1)),
    VideoCodec.MP4V: CodecSpec("mpeg4", "mp4", "yuv420p", audio="aac"),
    VideoCodec.MJPG: CodecSpec("mjpeg", "avi", "yuvj420p", audio="", options={"q:v": "3"}, min_size=(8, 2)),
    VideoCodec.VP8: CodecSpec("libvpx", "webm", "yuv420p", crf=10, crf_max=63, audio="libopus",
                              options={"b:v": "4M", "deadline": "good", "cpu-used": "4"}, min_size=(8, 8)),
}

#: Codecs that write an animation (no audio, quality/loop instead of crf).
ANIMATED = (VideoCodec.GIF, VideoCodec.WEBP)
