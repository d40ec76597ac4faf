"""Graph images (and videos) turned into something a Replicate model can read.

A small PNG travels inline as a data URI (no extra request, nothing left on the server); a big
one is uploaded through the files API and passed by the URL the server gives back. A Video is
encoded to an mp4 first (Save Video's writer, imported only when a video is sent).
"""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import numpy as np

from nodes.replicate.client import Limits, ReplicateNodeError, with_retry
from nodes.types import Video


def png_bytes(image: np.ndarray) -> bytes:
    """Encode one (H, W, C) or (1, H, W, C) float image in [0, 1] as PNG (Save Image's writer)."""
    from nodes.image.io import ImageFormat, write_image

    arr = np.asarray(image)
    if arr.ndim == 4:
        arr = arr[0]
    buf = io.BytesIO()
    write_image(np.nan_to_num(arr), buf, ImageFormat.PNG)
    return buf.getvalue()


def mp4_bytes(video: Video) -> bytes:
    """Encode a Video as an mp4 (mp4v, Save Video's writer) in memory via a temporary file."""
    import pathlib
    import tempfile

    from nodes.video import VideoCodec, write_video

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "input.mp4"
        write_video(video, path, VideoCodec.MP4V, fps=max(video.fps, 1.0))
        return path.read_bytes()


def send_file(client: Any, data: bytes, filename: str, content_type: str, *, model: str,
              limits: Limits, cancel: threading.Event | None = None) -> str:
    """A data URI for small files, else the files API's URL for the uploaded bytes."""
    if len(data) <= limits.data_uri_bytes:
        return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
    uploaded = with_retry(
        lambda: client.files.create(io.BytesIO(data), filename=filename, content_type=content_type),
        model=model, action=f"upload {filename}", limits=limits, cancel=cancel)
    return uploaded.urls["get"]


def encode_input(client: Any, value: Any, name: str, *, model: str, limits: Limits,
                 cancel: threading.Event | None = None, as_list: bool = False) -> Any:
    """The JSON value for a file input: a URL or data URI (a list of them for array inputs)."""
    if isinstance(value, Video):
        return send_file(client, mp4_bytes(value), f"{name}.mp4", "video/mp4", model=model,
                         limits=limits, cancel=cancel)
    arr = np.asarray(value)
    frames = [arr[i] for i in range(arr.shape[0])] if arr.ndim == 4 else [arr]
    if not as_list and len(frames) != 1:
        raise ReplicateNodeError(f"Replicate {model}: input '{name}' takes one image, got a batch of "
                                 f"{len(frames)}; use Select from Batch")
    urls = [send_file(client, png_bytes(f), f"{name}_{i}.png" if as_list else f"{name}.png", "image/png",
                      model=model, limits=limits, cancel=cancel) for i, f in enumerate(frames)]
    return urls if as_list else urls[0]
