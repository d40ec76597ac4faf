"""Writers for when PyAV is not installed: h264 through imageio-ffmpeg, mp4v/mjpg/vp8 through OpenCV.

No audio and no metadata; kept so an install without PyAV still saves video.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from nodes.types import Context, Video
from nodes.video.codecs import VideoCodec

#: OpenCV refuses 1-pixel mp4v frames, writes VP8 clips of a few pixels that nothing reads back,
#: and its MJPG encoder corrupts the heap on frames narrower than 8 pixels.
_MIN_SIZE = {VideoCodec.MP4V: (2, 2), VideoCodec.H264: (2, 2), VideoCodec.MJPG: (8, 1), VideoCodec.VP8: (8, 8)}
_FOURCC = {VideoCodec.MP4V: "mp4v", VideoCodec.MJPG: "MJPG", VideoCodec.VP8: "VP80"}


class _CvWriter:
    def __init__(self, path: pathlib.Path, codec: VideoCodec, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self._cv2 = cv2
        self._w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*_FOURCC[codec]), fps, size)
        if not self._w.isOpened():
            raise RuntimeError(f"OpenCV cannot write {codec.value} video to {path.name}")

    def write(self, rgb8: np.ndarray) -> None:
        self._w.write(self._cv2.cvtColor(rgb8, self._cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._w.release()


class _FfmpegWriter:
    def __init__(self, path: pathlib.Path, fps: float, size: tuple[int, int], crf: int) -> None:
        import imageio_ffmpeg

        self._gen = imageio_ffmpeg.write_frames(
            str(path), size, fps=fps, codec="libx264", macro_block_size=1, quality=None,
            output_params=["-crf", str(crf), "-movflags", "+faststart"], ffmpeg_log_level="error")
        self._gen.send(None)

    def write(self, rgb8: np.ndarray) -> None:
        self._gen.send(np.ascontiguousarray(rgb8))

    def close(self) -> None:
        self._gen.close()


def write_without_av(video: Video, path: pathlib.Path, codec: VideoCodec, rate: float, crf: int,
                     ctx: Context | None) -> float:
    from nodes.image.util import resize, to_uint8
    from nodes.video.writer import temp_path

    if codec not in _MIN_SIZE:
        raise ValueError(f"Save Video: codec {codec.value} needs PyAV (pip install av)")
    tmp = temp_path(path)
    writer: Any = None
    try:
        size: tuple[int, int] = (0, 0)
        for i in range(len(video)):
            if ctx is not None:
                ctx.check_cancelled()
            frame = video.frame(i)[0, ..., :3]
            if writer is None:
                h, w = frame.shape[:2]
                min_w, min_h = _MIN_SIZE[codec]
                w, h = max(w, min_w), max(h, min_h)
                if codec is VideoCodec.H264:
                    size = (w + w % 2, h + h % 2)
                    writer = _FfmpegWriter(tmp, rate, size, crf)
                else:
                    size = (w, h)
                    writer = _CvWriter(tmp, codec, rate, size)
            if frame.shape[1::-1] != size:
                frame = resize(frame, *size)
            writer.write(to_uint8(frame))
            if ctx is not None:
                ctx.progress((i + 1) / len(video), text=f"frame {i + 1}/{len(video)}")
        if writer is not None:
            writer.close()
        writer = None
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        tmp.unlink(missing_ok=True)
        raise
    return rate
