"""Video nodes: Load Video (lazy), Save Video, Images to Video and Video to Images.

A loaded clip is a lazy `Video`: frames are decoded on demand (sequential reads reuse one open
capture; a jump seeks), so an image chain over a long clip and its export keep memory flat.
OpenCV's wheel encodes mp4v (.mp4), MJPG (.avi) and VP8 (.webm) but not H.264; the `h264` codec
pipes frames to the ffmpeg that imageio-ffmpeg ships (libx264, playable everywhere). OpenCV and
imageio-ffmpeg are imported inside the functions that use them.
"""

from __future__ import annotations

import enum
import pathlib
import threading
import weakref
from typing import Annotated, Any, NamedTuple

import numpy as np

from nodes.image.io import reserve_file
from nodes.image.util import check_image, from_uint8, resize, to_uint8
from nodes.registry import node
from nodes.types import Context, FileFilter, Image, Range, Video

VIDEO_PATTERNS = ("*.mp4", "*.mov", "*.avi", "*.mkv", "*.webm", "*.m4v", "*.gif")


class FrameReader:
    """Frames of one file on demand, thread-safe; a forward read reuses the open capture.

    The capture (and its file handle) is released after the clip's last frame is read, by
    `close()`, and at the latest when the reader is garbage-collected; a later read reopens it.
    """

    def __init__(self, path: pathlib.Path, start: int = 0, stride: int = 1, length: int | None = None) -> None:
        self.path = pathlib.Path(path)
        self.start = start
        self.stride = stride
        self.length = length
        self._held: list[Any] = [None]  # the open capture, shared with the finalizer
        self._next = -1  # index in the file of the frame the capture reads next
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _release, self._held)

    def _open(self) -> Any:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise ValueError(f"{self.path}: cannot open video (unsupported format or codec?)")
        return cap

    def frame(self, i: int) -> np.ndarray:
        import cv2

        want = self.start + i * self.stride
        with self._lock:
            cap = self._held[0]
            if cap is None:
                cap = self._held[0] = self._open()
                self._next = 0
            if want != self._next:
                if want < self._next or want - self._next > 32:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, want)
                    self._next = want
                while self._next < want:
                    cap.grab()
                    self._next += 1
            ok, bgr = cap.read()
            self._next += 1
            if not ok or (self.length is not None and i >= self.length - 1):
                _release(self._held)
        if not ok:
            raise ValueError(f"{self.path}: cannot read frame {want}")
        return from_uint8(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))[None]

    def close(self) -> None:
        """Release the capture now (a later read reopens the file)."""
        with self._lock:
            _release(self._held)


def _release(held: list[Any]) -> None:
    cap, held[0] = held[0], None
    if cap is not None:
        cap.release()


def open_video(path: pathlib.Path, start: int = 0, max_frames: int = 0, stride: int = 1) -> Video:
    """A lazy Video over a file: frames from `start`, every `stride`-th, at most `max_frames` (0 = all)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    total, fps, w, h = probe(path)
    length = max(0, -(-(total - start) // stride))
    if max_frames:
        length = min(length, max_frames)
    if length == 0:
        raise ValueError(f"{path}: no frames from frame {start} on (the clip has {total})")
    reader = FrameReader(path, start, stride, length)
    return Video(length, fps / stride, (w, h), reader.frame, channels=3)


def probe(path: pathlib.Path) -> tuple[int, float, int, int]:
    """(frame count, fps, width, height) of a video file; counts frames when the header does not say."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: cannot open video (unsupported format or codec?)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 24.0
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if n <= 0:
            n = 0
            while cap.grab():
                n += 1
        return n, fps, w, h
    finally:
        cap.release()


class LoadedVideo(NamedTuple):
    video: Video
    fps: float


@node("imagebash.video.load", title="Load Video", category="video", io=True)
def load_video(path: Annotated[pathlib.Path, FileFilter(VIDEO_PATTERNS)],
               start: Annotated[int, Range(0, 10_000_000)] = 0,
               max_frames: Annotated[int, Range(0, 10_000_000)] = 0,
               stride: Annotated[int, Range(1, 1000)] = 1) -> LoadedVideo:
    """Open a video file as a lazy frame source (frames are decoded only when something pulls them).

    Image nodes fed a video run on every frame; Save Video writes the result.

    Args:
        path: The video file (mp4, mov, avi, mkv, webm, gif).
        start: First frame to use.
        max_frames: Use at most this many frames (0 = to the end).
        stride: Use every n-th frame (2 = every other frame, at half the fps).
    """
    video = open_video(path, start, max_frames, stride)
    return LoadedVideo(video, video.fps)


class VideoCodec(str, enum.Enum):
    """mp4v (.mp4), mjpg (.avi), vp8 (.webm) through OpenCV; h264 (.mp4) through ffmpeg."""

    MP4V = "mp4v"
    H264 = "h264"
    MJPG = "mjpg"
    VP8 = "vp8"


_CONTAINER = {VideoCodec.MP4V: "mp4", VideoCodec.H264: "mp4", VideoCodec.MJPG: "avi", VideoCodec.VP8: "webm"}
#: The smallest frame each encoder takes; smaller frames are stretched up to it. OpenCV refuses
#: 1-pixel mp4v frames, writes VP8 clips of a few pixels that nothing reads back, and its own
#: MJPG encoder corrupts the heap (the process aborts in VideoWriter.release, "free(): invalid
#: next size") on frames narrower than 8 pixels.
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


@node("imagebash.video.save", title="Save Video", category="video", output=True, cacheable=False)
def save_video(video: Video, filename_prefix: str = "imagebash_video", codec: VideoCodec = VideoCodec.MP4V,
               fps: Annotated[float, Range(0, 240, step=1)] = 0.0,
               crf: Annotated[int, Range(0, 51)] = 18, ctx: Context = None) -> str:
    """Encode every frame into a video file in the run's output folder (never overwriting one).

    Frames are pulled one at a time, so long clips keep memory flat. Alpha is dropped; a frame
    of another size than the first is stretched to it. Returns the written path (also reported as a "video" artefact).

    Args:
        video: The frames (a video, or an image batch played as frames).
        filename_prefix: File name start; may hold sub-folders, always kept inside the output folder.
        codec: mp4v (.mp4), h264 (.mp4, most compatible, via ffmpeg), mjpg (.avi) or vp8 (.webm).
        fps: Frames per second (0 = the source's rate).
        crf: H.264 quality: lower is better and bigger (18 is visually lossless).
    """
    if not isinstance(video, Video):
        video = Video.from_batch(check_image(video, "video"))
    if len(video) == 0:
        raise ValueError("the video has no frames")
    codec = VideoCodec(codec)
    out_dir = pathlib.Path(getattr(ctx, "output_dir", None) or "output")
    path = reserve_file(out_dir, filename_prefix, _CONTAINER[codec])
    rate = write_video(video, path, codec, fps, crf, ctx)
    if ctx is not None:
        ctx.add_file(path, "video")
        ctx.log(f"saved {path} ({len(video)} frames, {rate:g} fps)")
    return str(path)


def write_video(video: Video, path: pathlib.Path, codec: VideoCodec = VideoCodec.MP4V, fps: float = 0.0,
                crf: int = 18, ctx: Context | None = None) -> float:
    """Encode every frame of `video` into `path`, one frame at a time; returns the frame rate used.

    Alpha is dropped and a frame of another size than the first is stretched to it. On any
    error (or a cancel) the partial file is deleted.
    """
    codec = VideoCodec(codec)
    rate = fps or video.fps or 24.0
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
                    size = (w + w % 2, h + h % 2)  # yuv420p needs even sizes
                    writer = _FfmpegWriter(path, rate, size, crf)
                else:
                    size = (w, h)
                    writer = _CvWriter(path, codec, rate, size)
            if frame.shape[1::-1] != size:
                frame = resize(frame, *size)
            writer.write(to_uint8(frame))
            if ctx is not None:
                ctx.progress((i + 1) / len(video), text=f"frame {i + 1}/{len(video)}")
        if writer is not None:
            writer.close()
        writer = None
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        pathlib.Path(path).unlink(missing_ok=True)
        raise
    return rate


@node("imagebash.video.from_images", title="Images to Video", category="video")
def images_to_video(image: Image, fps: Annotated[float, Range(0.1, 240, step=1)] = 24.0) -> Video:
    """Play an image batch as video frames at a frame rate.

    Args:
        image: The frames, in order.
        fps: Frames per second.
    """
    return Video.from_batch(check_image(image), fps=fps)


@node("imagebash.video.to_images", title="Video to Images", category="video")
def video_to_images(video: Video, start: Annotated[int, Range(0, 10_000_000)] = 0,
                    count: Annotated[int, Range(0, 100_000)] = 0,
                    step: Annotated[int, Range(1, 1000)] = 1, ctx: Context = None) -> Image:
    """Decode a range of frames into an image batch (to pick stills or make a contact sheet).

    Args:
        video: The clip.
        start: First frame.
        count: How many frames (0 = all to the end; mind the memory on long clips).
        step: Take every n-th frame.
    """
    if not isinstance(video, Video):
        video = Video.from_batch(check_image(video, "video"))
    idx = list(range(start, len(video), step))
    if count:
        idx = idx[:count]
    if not idx:
        raise ValueError(f"no frames from {start} on (the video has {len(video)})")
    frames = []
    for k, i in enumerate(idx):
        if ctx is not None:
            ctx.check_cancelled()
            ctx.progress((k + 1) / len(idx), text=f"frame {k + 1}/{len(idx)}")
        frames.append(video.frame(i)[0])
    return np.stack(frames).astype(np.float32, copy=False)
