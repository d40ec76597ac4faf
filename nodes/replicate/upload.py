"""Graph images (and videos) turned into something a Replicate model can read.

A small PNG travels inline as a data URI (no extra request, nothing left on the server); a big
one is uploaded through the files API and passed by the URL the server gives back. A Video is
encoded to an mp4 first (OpenCV, imported only when a video is sent).
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
    """Encode one (H, W, C) or (1, H, W, C) float image in [0, 1] as PNG."""
    from PIL import Image as PILImage

    arr = np.asarray(image)
    if arr.ndim == 4:
        arr = arr[0]
    arr = np.clip(np.nan_to_num(arr), 0.0, 1.0)
    u8 = (arr * 255.0 + 0.5).astype(np.uint8)
    mode = "RGBA" if u8.shape[-1] == 4 else "RGB"
    buf = io.BytesIO()
    PILImage.fromarray(u8, mode).save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def mp4_bytes(video: Video) -> bytes:
    """Encode a Video as an mp4 (mp4v) in memory via a temporary file."""
    import tempfile

    import cv2

    w, h = video.size
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/input.mp4"
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), max(video.fps, 1.0), (w, h))
        try:
            for frame in video.frames():
                rgb = (np.clip(frame[0, ..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        with open(path, "rb") as f:
            return f.read()


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
