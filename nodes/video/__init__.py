"""Video nodes: frame-exact PyAV I/O with audio, image sequences, and clip <-> batch conversions.

One module per job: `audio` (AudioTrack edit lists, rendering), `reader` (pts-indexed decoding),
`codecs` (what each codec is), `writer` (encoding + audio muxing + metadata), `fallback`
(without PyAV), `load` (Load Video, Video Info), `save` (Save Video), `sequence` (image
sequences), `frames` (Images to Video, Video to Images), `timing` (trim, select, time remap,
concat, crossfade), `interpolate` + `rife` (frame interpolation), `flow` (optical flow),
`temporal` (deflicker, temporal blend, colour lock, warped init) and `metrics` (flicker
measures). The registry registers the `@node`s of
the submodules imported here. PyAV, OpenCV and imageio-ffmpeg are imported only when used.
"""

from __future__ import annotations

from nodes.video.audio import AudioSegment, AudioTrack, render
from nodes.video.codecs import VideoCodec
from nodes.video.frames import images_to_video, video_to_images
from nodes.video.load import LoadedVideo, VideoInfo, load_video, video_info
from nodes.video.reader import VIDEO_PATTERNS, FrameReader, open_video, probe
from nodes.video.save import save_video
from nodes.video.sequence import load_sequence, save_sequence
from nodes.video.writer import write_video

__all__ = ["VIDEO_PATTERNS", "AudioSegment", "AudioTrack", "FrameReader", "LoadedVideo", "VideoCodec", "VideoInfo",
           "images_to_video", "load_sequence", "load_video", "open_video", "probe", "render", "save_sequence",
           "save_video", "video_info", "video_to_images", "write_video"]

from nodes.video import interpolate, metrics, temporal, timing  # noqa: F401 - registers their nodes
