"""Load Video and Video Info nodes."""

from __future__ import annotations

import pathlib
from typing import Annotated, NamedTuple

from nodes.registry import node
from nodes.types import FileFilter, Range, Video
from nodes.video.reader import VIDEO_PATTERNS, open_video, probe_index


class LoadedVideo(NamedTuple):
    video: Video
    fps: float
    frame_count: int
    duration: float


@node("imagebash.video.load", title="Load Video", category="video", io=True)
def load_video(path: Annotated[pathlib.Path, FileFilter(VIDEO_PATTERNS)],
               start: Annotated[int, Range(0, 10_000_000)] = 0,
               max_frames: Annotated[int, Range(0, 10_000_000)] = 0,
               stride: Annotated[int, Range(1, 1000)] = 1) -> LoadedVideo:
    """Open a video file as a lazy frame source (frames are decoded only when something pulls them).

    Frames are counted in presentation order (what a player shows), also for variable-frame-rate
    files; the clip's sound comes along on the video wire, trimmed to the frames used.
    Image nodes fed a video run on every frame; Save Video writes the result.

    Args:
        path: The video file (mp4, mov, avi, mkv, webm, gif, webp).
        start: First frame to use.
        max_frames: Use at most this many frames (0 = to the end).
        stride: Use every n-th frame (2 = every other frame, at half the fps).
    """
    video = open_video(path, start, max_frames, stride)
    return LoadedVideo(video, video.fps, len(video), len(video) / video.fps)


class VideoInfo(NamedTuple):
    frames: int
    fps: float
    width: int
    height: int
    duration: float
    has_audio: bool


@node("imagebash.video.info", title="Video Info", category="video", io=True)
def video_info(path: Annotated[pathlib.Path, FileFilter(VIDEO_PATTERNS)]) -> VideoInfo:
    """Frame count, frame rate, size, duration and whether a video file has sound (no decoding).

    Args:
        path: The video file.
    """
    ix = probe_index(pathlib.Path(path))
    return VideoInfo(len(ix), ix.fps, ix.width, ix.height, ix.duration, ix.audio is not None)
