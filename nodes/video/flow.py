"""Optical flow for the temporal nodes: DIS flow, backward warping and the occlusion test.

OpenCV's DIS flow (in core OpenCV since 4.0) is fast on a CPU and needs no weights, so every
temporal node (Temporal Blend, Warped Init, Frame Interpolate's fallback, Flicker Metrics) runs
anywhere. Flow is computed on a copy scaled to at most `MAX_FLOW_SIDE` pixels and scaled back,
which keeps 1080p clips interactive. The occlusion test is the forward-backward check of Ruder et
al. (GCPR 2016) that Lai et al. (ECCV 2018) use for the warping-error metric.
"""

from __future__ import annotations

import threading

import numpy as np

#: Flow is computed at most this many pixels on the long side (then scaled up to the frame).
MAX_FLOW_SIDE = 540

_local = threading.local()


def _dis():  # one DIS instance per thread: OpenCV's objects are not thread-safe
    import cv2

    dis = getattr(_local, "dis", None)
    if dis is None:
        dis = _local.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis


def gray8(frame: np.ndarray) -> np.ndarray:
    """An (H, W) uint8 luma image from an (H, W, C) or (1, H, W, C) float frame in [0, 1]."""
    f = frame[0] if frame.ndim == 4 else frame
    rgb = f[..., :3] if f.ndim == 3 else f[..., None].repeat(3, -1)
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow from frame `a` to frame `b`, (H, W, 2) float32 in pixels: a(x) ~ b(x + F(x))."""
    import cv2

    ga, gb = gray8(a), gray8(b)
    h, w = ga.shape
    scale = min(1.0, MAX_FLOW_SIDE / max(h, w))
    if scale < 1.0:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        ga = cv2.resize(ga, size, interpolation=cv2.INTER_AREA)
        gb = cv2.resize(gb, size, interpolation=cv2.INTER_AREA)
    if min(ga.shape) < 8 or max(ga.shape) < 16:  # DIS needs a few pixels (OpenCV 5 refuses 11x11)
        return np.zeros((h, w, 2), np.float32)
    f = _dis().calc(ga, gb, None)
    if scale < 1.0:
        f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
        f[..., 0] *= w / ga.shape[1]
        f[..., 1] *= h / ga.shape[0]
    return f.astype(np.float32, copy=False)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return gx, gy


def warp(image: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = image(x + f(x)) (bilinear, edges replicated); keeps the input's shape."""
    import cv2

    batched = image.ndim == 4
    img = image[0] if batched else image
    h, w = f.shape[:2]
    gx, gy = _grid(h, w)
    out = cv2.remap(np.ascontiguousarray(img, dtype=np.float32), gx + f[..., 0], gy + f[..., 1],
                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 2 and img.ndim == 3:
        out = out[..., None]
    return out[None] if batched else out


def inside(f: np.ndarray) -> np.ndarray:
    """(H, W) bool: where x + f(x) lands inside the image."""
    h, w = f.shape[:2]
    gx, gy = _grid(h, w)
    x, y = gx + f[..., 0], gy + f[..., 1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def consistency(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """(H, W) float32 mask, 1 where the flow `fw` (a -> b) is trusted, 0 at occlusions and motion edges.

    `bw` is the flow b -> a. A pixel passes when following `fw` then `bw` comes back to it
    (|fw + bw(x + fw)|² <= 0.01 (|fw|² + |bw(x + fw)|²) + 0.5), when it is not on a motion
    boundary (|∇fw|² <= 0.01 |fw|² + 0.002) and when x + fw(x) lands in the image.
    """
    bw_w = warp(bw, fw)
    s = fw + bw_w
    ok = (s ** 2).sum(-1) <= 0.01 * ((fw ** 2).sum(-1) + (bw_w ** 2).sum(-1)) + 0.5
    du = np.gradient(fw[..., 0])
    dv = np.gradient(fw[..., 1])
    grad2 = du[0] ** 2 + du[1] ** 2 + dv[0] ** 2 + dv[1] ** 2
    ok &= grad2 <= 0.01 * (fw ** 2).sum(-1) + 0.002
    ok &= inside(fw)
    return ok.astype(np.float32)


def scene_cut(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> bool:
    """Whether two frames are on either side of a cut: their 32-bin luma histograms barely overlap.

    The histogram intersection of consecutive frames of one shot stays near 1 even under fast
    motion; across a cut it falls, so 1 - intersection above `threshold` marks a cut.
    """
    ha = np.bincount(gray8(a).ravel() // 8, minlength=32).astype(np.float64)
    hb = np.bincount(gray8(b).ravel() // 8, minlength=32).astype(np.float64)
    ha /= ha.sum()
    hb /= hb.sum()
    return float(1.0 - np.minimum(ha, hb).sum()) > threshold


def trusted_flow(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flow a -> b, the (H, W) mask where it is trusted): DIS both ways and the consistency test.

    `warp(b_like, f)` then brings a frame in b's place onto a's pixels, and the mask says where
    that is meaningful (not occluded, not on a motion edge, not pulled from outside the image).
    """
    fw = flow(a, b)
    return fw, consistency(fw, flow(b, a))


def resize_flow(f: np.ndarray, width: int, height: int) -> np.ndarray:
    """A flow field resampled to (height, width), its vectors scaled with it."""
    import cv2

    h, w = f.shape[:2]
    if (h, w) == (height, width):
        return f
    out = cv2.resize(np.ascontiguousarray(f, dtype=np.float32), (int(width), int(height)),
                     interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out


def resize_mask(m: np.ndarray, width: int, height: int) -> np.ndarray:
    """An (H, W) mask resampled to (height, width) (bilinear, so its edges soften a little)."""
    import cv2

    if m.shape[:2] == (height, width):
        return m
    return cv2.resize(np.ascontiguousarray(m, dtype=np.float32), (int(width), int(height)),
                      interpolation=cv2.INTER_LINEAR)


def shrink(frame: np.ndarray, max_side: int = MAX_FLOW_SIDE) -> np.ndarray:
    """An (H, W, C) float32 copy of a frame ((1, H, W, C) or (H, W, C)) at most `max_side` on its long
    side (area filter), or the frame itself when it is small enough."""
    import cv2

    f = frame[0] if frame.ndim == 4 else frame
    h, w = f.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return np.asarray(f, np.float32)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = cv2.resize(np.ascontiguousarray(f, dtype=np.float32), size, interpolation=cv2.INTER_AREA)
    return out[..., None] if out.ndim == 2 else out
