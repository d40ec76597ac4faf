"""Frame Interpolate: more frames per second by making in-between frames (RIFE or optical flow).

The output is a lazy Video: in-between frame k is made when a consumer pulls it, from the two
source frames around it (the last pair's frames, flows and scene-cut test are kept, so the m - 1
in-betweens of one pair cost one flow computation). `rife` runs Practical-RIFE's IFNet 4.25/4.26
(`nodes/video/rife.py`, torch only) from a weights file; `flow` needs no weights: DIS optical flow
both ways, the Super SloMo intermediate-flow approximation and a visibility-weighted blend
(deterministic, ghosts on large motion).
"""

from __future__ import annotations

import contextlib
import enum
import pathlib
import threading
from typing import Annotated, Any

import numpy as np

from nodes.registry import node
from nodes.types import Context, FileFilter, Range, Video
from nodes.video import flow as flowlib
from nodes.video.timing import fit, need_clip

RIFE_PATTERNS = ("*.safetensors", "*.pkl", "*.pth")


class InterpolationMethod(str, enum.Enum):
    """rife: the RIFE network (needs a weights file); flow: OpenCV optical flow, no weights."""

    RIFE = "rife"
    FLOW = "flow"


def flow_midframe(a: np.ndarray, b: np.ndarray, t: float, flows: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """The frame at time t in (0, 1) between frames a and b ((1, H, W, C) or (H, W, C)), by flow.

    F01, F10 by DIS; Ft0 = -(1-t)t F01 + t² F10, Ft1 = (1-t)² F01 - t(1-t) F10 (Jiang et al.,
    Super SloMo, CVPR 2018); I_t = ((1-t) V0 warp(a, Ft0) + t V1 warp(b, Ft1)) / ((1-t) V0 + t V1),
    V0/V1 the forward-backward visibility of frame a/b at time t (both unknown: a plain blend).
    """
    batched = a.ndim == 4
    fa, fb = (a[0], b[0]) if batched else (a, b)
    f01, f10, c0, c1 = flows if flows is not None else pair_flows(fa, fb)
    ft0 = -(1.0 - t) * t * f01 + t * t * f10
    ft1 = (1.0 - t) ** 2 * f01 - t * (1.0 - t) * f10
    w0 = flowlib.warp(fa, ft0)
    w1 = flowlib.warp(fb, ft1)
    # c1 (frame b's pixels that frame a also shows) sampled along Ft1 says whether the content at
    # time t is visible in a; c0 along Ft0 whether it is visible in b.
    v0 = flowlib.warp(c1[..., None], ft1)[..., 0] + 1e-3
    v1 = flowlib.warp(c0[..., None], ft0)[..., 0] + 1e-3
    k0 = ((1.0 - t) * v0)[..., None]
    k1 = (t * v1)[..., None]
    out = ((k0 * w0 + k1 * w1) / (k0 + k1)).astype(np.float32)
    out = np.clip(out, 0.0, 1.0)
    return out[None] if batched else out


def pair_flows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(F01, F10, consistency of a's pixels, consistency of b's pixels) for two (H, W, C) frames."""
    f01 = flowlib.flow(a, b)
    f10 = flowlib.flow(b, a)
    return f01, f10, flowlib.consistency(f01, f10), flowlib.consistency(f10, f01)


class _Pairs:
    """The source pair around an output frame, its scene-cut verdict and (flow method) its flows,
    for the most recent pair only (consumers pull frames in order)."""

    def __init__(self, video: Video, threshold: float, want_flows: bool) -> None:
        self.video = video
        self.threshold = threshold
        self.want_flows = want_flows
        self._lock = threading.Lock()
        self._key = -1
        self._val: tuple[Any, ...] = ()

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray, bool, Any]:
        with self._lock:
            if self._key == i:
                return self._val  # type: ignore[return-value]
        a, b = self.video.frame(i), self.video.frame(i + 1)
        cut = self.threshold < 1.0 and flowlib.scene_cut(a, b, self.threshold)
        flows = pair_flows(a[0], b[0]) if self.want_flows and not cut else None
        with self._lock:
            self._key, self._val = i, (a, b, cut, flows)
        return a, b, cut, flows


def _weights_key(params: dict) -> str:
    """The weights file's size and mtime, so replacing it in place re-runs the node."""
    try:
        st = pathlib.Path(str(params.get("weights") or "")).stat()
    except (OSError, ValueError):
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


@node("imagebash.video.interpolate", title="Frame Interpolate", category="video", cache_key=_weights_key)
def interpolate(video: Video, multiplier: Annotated[int, Range(2, 8)] = 2,
                method: InterpolationMethod = InterpolationMethod.FLOW,
                weights: Annotated[pathlib.Path, FileFilter(RIFE_PATTERNS)] | None = None,
                scene_threshold: Annotated[float, Range(0.0, 1.0, step=0.05)] = 0.5,
                ctx: Context = None) -> Video:
    """Make smooth motion (or slow motion) by adding `multiplier - 1` in-between frames per pair.

    A clip of n frames becomes (n - 1) * multiplier + 1 frames at fps * multiplier: source frame i
    is output frame i * multiplier, and output frame i * multiplier + r (r = 1 .. multiplier - 1)
    is made at time r / multiplier between source frames i and i + 1. The last source frame has
    no successor, so nothing follows it (it is not repeated); the clip plays as long as before,
    minus (multiplier - 1) / multiplier of one source frame, and the sound is unchanged except
    for being cut to that length. Across a scene cut nothing is interpolated: the in-between
    frames repeat the earlier frame. For slow motion, follow with Time Remap or save at the
    source's fps.

    Args:
        video: The clip.
        multiplier: Frames per source frame (2 doubles the frame rate).
        method: rife (the RIFE 4.25/4.26 network; needs `weights`) or flow (OpenCV optical flow,
            no weights, some ghosting on fast motion).
        weights: A RIFE 4.25 or 4.26 flownet file (Practical-RIFE's flownet.pkl, or .safetensors);
            read as plain tensors only.
        scene_threshold: How different two frames must be to count as a scene cut (luma histograms, 0..1; 1 = never).
    """
    title = "Frame Interpolate"
    video = need_clip(video, "video", title)
    if isinstance(multiplier, bool) or int(multiplier) != multiplier or not 2 <= multiplier <= 8:
        raise ValueError(f"{title}: 'multiplier' must be an integer from 2 to 8, got {multiplier!r}")
    m = int(multiplier)
    if not 0.0 <= float(scene_threshold) <= 1.0:
        raise ValueError(f"{title}: 'scene_threshold' must be between 0 and 1, got {scene_threshold:g}")
    method = InterpolationMethod(method)
    make = _rife_maker(weights, ctx, title) if method is InterpolationMethod.RIFE else None
    pairs = _Pairs(video, float(scene_threshold), make is None)
    n = len(video)
    length = (n - 1) * m + 1
    fps = video.fps * m

    def frame(k: int) -> np.ndarray:
        i, r = divmod(k, m)
        if r == 0:
            return video.frame(i)
        a, b, cut, flows = pairs.get(i)
        if cut:
            return a
        t = r / m
        if make is not None:
            return make(a, b, t)
        return flow_midframe(a, b, t, flows)

    return Video(length, fps, video.size, frame, video.channels, audio=fit(video.audio, length / fps))


def _rife_maker(weights: pathlib.Path | None, ctx: Any, title: str):
    """A function (a, b, t) -> the RIFE frame, with the weights loaded now (so a bad file fails here)."""
    if weights is None or not str(weights).strip():
        raise ValueError(f"{title}: method 'rife' needs a RIFE 4.25/4.26 weights file on 'weights' "
                         "(Practical-RIFE's flownet.pkl or a .safetensors), or use method 'flow'")
    path = pathlib.Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{title}: 'weights': RIFE weights file not found: {path}")
    from app.engine.devices import pick_device, pick_dtype
    from nodes.video import rife

    device = pick_device(getattr(ctx, "device", None) or "auto")
    dtype = pick_dtype(device)
    try:
        rife.load(path, device, dtype)
    except rife.RifeWeightsError as exc:
        raise ValueError(f"{title}: 'weights': {exc}") from None

    def make(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
        lock = ctx.device_lock() if ctx is not None and hasattr(ctx, "device_lock") else contextlib.nullcontext()
        with lock:
            net = rife.load(path, device, dtype)
            rgb = rife.interpolate(net, a, b, t)
        if a.shape[-1] == 4:  # alpha: a plain blend
            alpha = a[..., 3:] * np.float32(1.0 - t) + b[..., 3:] * np.float32(t)
            rgb = np.concatenate([rgb, alpha], axis=-1)
        return rgb.astype(np.float32, copy=False)

    return make
