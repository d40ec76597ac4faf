"""Images to Video and Video to Images: between image batches and lazy clips."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from nodes.image.util import check_image
from nodes.registry import node
from nodes.types import Context, Image, Range, Video


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
