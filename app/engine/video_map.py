"""Running an image node over a Video: frame by frame, lazily where that is safe.

An Image (or Mask) port fed a Video calls the node once per frame. A pure node's Image and Mask
outputs become lazy Videos (frame i is computed when a consumer pulls it, so an export keeps
memory flat). Nodes with side effects (outputs such as Save) and io nodes (online APIs, which cost
money and may not be deterministic) run every frame exactly once, up front.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from nodes.types import Cancelled, Video

Call = Callable[[dict[str, Any]], dict[str, Any]]
_FRAME_KINDS = ("Image", "Mask")


def map_over_video(call: Call, spec: Any, port_kinds: dict[str, str], kwargs: dict[str, Any],
                   video_ports: list[str], cancel: threading.Event) -> dict[str, Any]:
    """Outputs of `call` mapped over the frames of the Videos in `video_ports`."""
    videos = {name: kwargs[name] for name in video_ports}
    length = min(len(v) for v in videos.values())
    fps = next(iter(videos.values())).fps
    ctx = kwargs.get("ctx")

    def call_frame(i: int) -> dict[str, Any]:
        kw = dict(kwargs)
        for name, v in videos.items():
            frame = v.frame(i)
            kw[name] = frame[..., 0] if port_kinds[name] == "Mask" else frame
        out = call(kw)
        for p in spec.outputs:
            val = out.get(p.name)
            if p.kind in _FRAME_KINDS and isinstance(val, np.ndarray) and val.shape[0] != 1:
                raise ValueError(f"{spec.title} made {val.shape[0]} images from one video frame; "
                                 "use Video to Images to work on the frames as a batch")
        return out

    frame_outputs = [p for p in spec.outputs if p.kind in _FRAME_KINDS]
    if spec.output or spec.io or not frame_outputs:
        results = []
        for i in range(length):
            if cancel.is_set():
                raise Cancelled("cancelled")
            results.append(call_frame(i))
            if ctx is not None:
                ctx.progress((i + 1) / max(length, 1), text=f"frame {i + 1}/{length}")
        return {p.name: _join(p.kind, [r.get(p.name) for r in results], fps) for p in spec.outputs}

    lock = threading.Lock()
    memo: dict[int, dict[str, Any]] = {}

    def outputs_at(i: int) -> dict[str, Any]:
        with lock:
            if i in memo:
                return memo[i]
        out = call_frame(i)
        with lock:
            memo.clear()  # consumers pull frames in order: one frame of memory is enough
            memo[i] = out
        return out

    first = outputs_at(0) if length else {}
    result: dict[str, Any] = {}
    for p in spec.outputs:
        val = first.get(p.name)
        if p.kind in _FRAME_KINDS and isinstance(val, np.ndarray):
            h, w = val.shape[1:3]
            channels = val.shape[3] if val.ndim == 4 else 1
            result[p.name] = Video(length, fps, (w, h), lambda i, name=p.name: _as_frame(outputs_at(i)[name]),
                                   channels)
        else:
            result[p.name] = val
    return result


def _as_frame(value: np.ndarray) -> np.ndarray:
    """Video frames are (1, H, W, C); a Mask frame (1, H, W) travels as one channel."""
    return value[..., None] if value.ndim == 3 else value


def _join(kind: str, values: list[Any], fps: float) -> Any:
    """One value from per-frame results: frames become a Video, text is joined line by line."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if kind in _FRAME_KINDS and all(isinstance(v, np.ndarray) for v in present):
        return Video.from_batch(np.concatenate([_as_frame(v) for v in present]), fps)
    if kind == "str":
        return "\n".join(str(v) for v in present)
    return present[-1]
