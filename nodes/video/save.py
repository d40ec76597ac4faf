"""Save Video: encode a clip (with its sound and the workflow) into the run's output folder."""

from __future__ import annotations

import json
import pathlib
from typing import Annotated

from nodes.image.io import reserve_file
from nodes.image.util import check_image
from nodes.registry import node
from nodes.types import Context, FileFilter, Range, Video
from nodes.video.audio import AudioTrack
from nodes.video.codecs import SPECS, VideoCodec
from nodes.video.writer import check_codec, check_rate, workflow_metadata, write_video


@node("imagebash.video.save", title="Save Video", category="video", output=True, cacheable=False)
def save_video(video: Video, filename_prefix: str = "imagebash_video", codec: VideoCodec = VideoCodec.H264,
               fps: Annotated[float, Range(0, 1000, step=1)] = 0.0,
               crf: Annotated[int, Range(-1, 63)] = -1, preset: str = "", bitrate: str = "",
               quality: Annotated[int, Range(0, 100)] = 90, lossless: bool = False,
               loop: Annotated[int, Range(0, 65535)] = 0, bit_depth: Annotated[int, Range(8, 16, step=8)] = 8,
               keep_audio: bool = True,
               audio_file: Annotated[pathlib.Path | None, FileFilter(("*.wav", "*.mp3", "*.flac", "*.ogg", "*.opus",
                                                                        "*.m4a", "*.aac", "*.mp4", "*.mov",
                                                                        "*.mkv", "*.webm"))] = None,
               embed_workflow: bool = True, ctx: Context = None) -> str:
    """Encode every frame into a video file in the run's output folder (never overwriting one).

    Frames are pulled one at a time, so long clips keep memory flat. The clip's sound is kept
    (trimmed to the frames, re-timed when fps changes) and the workflow is stored in the file and
    in a NAME.json next to it, so dropping the video onto the canvas reopens the graph.
    Returns the written path (also reported as a "video" artefact).

    Args:
        video: The frames (a video, or an image batch played as frames).
        filename_prefix: File name start; may hold sub-folders, always kept inside the output folder.
        codec: h264/h265 (.mp4), vp9 (.webm, keeps alpha)/av1 (.webm), prores4444 (.mov, keeps alpha),
            ffv1 (.mkv, lossless),
            gif, webp; mp4v, mjpg (.avi) and vp8 are the older choices.
        fps: Frames per second (0 = the source's rate; the sound is re-timed to match).
        crf: Quality for crf codecs: lower is better and bigger (-1 = the codec's sensible default).
        preset: Encoder speed preset (x264/x265: ultrafast..veryslow; av1: 0-13; vp9: cpu-used); empty = default.
        bitrate: Target bitrate like 8M or 2500k instead of crf (empty = use crf).
        quality: WebP/GIF quality 0-100 (GIF: palette size).
        lossless: WebP: lossless frames.
        loop: GIF/WebP: how many times to loop (0 = forever).
        bit_depth: 8 or 16 bits per sample (ffv1; prores is always 10-bit).
        keep_audio: Keep the clip's sound.
        audio_file: A sound file that replaces the clip's audio.
        embed_workflow: Store the workflow in the file and a NAME.json next to it.
    """
    if not isinstance(video, Video):
        video = Video.from_batch(check_image(video, "video"))
    if len(video) == 0:
        raise ValueError("Save Video: the video has no frames")
    codec = VideoCodec(codec)
    check_codec(codec)
    check_rate(float(fps or video.fps or 24.0))
    audio = video.audio if keep_audio else None
    audio_fps = None  # the clip's sound follows the frames (re-timed when fps changes)
    if audio_file:
        p = pathlib.Path(audio_file)
        if not p.is_file():
            raise FileNotFoundError(f"Save Video: audio file not found: {p}")
        audio = AudioTrack.of_file(p)
        if audio is None:
            raise ValueError(f"Save Video: {p} has no audio stream")
        audio_fps = 0.0  # a replacement plays as it is, cut (or padded) to the frames
    workflow = ctx.workflow if (ctx is not None and embed_workflow) else None
    provenance = ctx.provenance if (ctx is not None and embed_workflow) else None
    out_dir = pathlib.Path(getattr(ctx, "output_dir", None) or "output")
    path = reserve_file(out_dir, filename_prefix, SPECS[codec].ext)
    try:
        rate = write_video(video, path, codec, fps, crf, ctx, preset=preset, bitrate=bitrate, quality=quality,
                           lossless=lossless, loop=loop, bit_depth=int(bit_depth), audio=audio, audio_fps=audio_fps,
                           metadata=workflow_metadata(workflow, provenance))
        if workflow:
            side = path.with_suffix(".json")
            side.write_text(json.dumps(workflow, indent=1), encoding="utf-8")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if ctx is not None:
        ctx.add_file(path, "video")
        ctx.log(f"saved {path} ({len(video)} frames, {rate:g} fps)")
    return str(path)

