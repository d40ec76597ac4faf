"""Shared helpers for the image nodes: batch loops with cancellation, alpha, colours, resizing.

Every image node works on each image of a batch; `each` runs the per-image function with a
cancellation check in between, so a long batch stops within one image of the user's Cancel.
Batches of different lengths broadcast only 1 against N (like numpy), anything else is an error
naming both sizes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class Interpolation(str, enum.Enum):
    """Resampling filters (OpenCV); `area` is the best choice for shrinking."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"
    AREA = "area"


def cv_interp(interp: Interpolation) -> int:
    import cv2

    return {
        Interpolation.NEAREST: cv2.INTER_NEAREST,
        Interpolation.BILINEAR: cv2.INTER_LINEAR,
        Interpolation.BICUBIC: cv2.INTER_CUBIC,
        Interpolation.LANCZOS: cv2.INTER_LANCZOS4,
        Interpolation.AREA: cv2.INTER_AREA,
    }[Interpolation(interp)]


def check_image(img: Any, what: str = "image") -> np.ndarray:
    """Return `img` as a float32 (N, H, W, C) array or raise a one-line error naming the port."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[None]
    if a.ndim != 4 or a.shape[-1] not in (3, 4):
        raise ValueError(f"'{what}' must be an image batch (N, H, W, 3|4), got shape {a.shape}")
    return a.astype(np.float32, copy=False)


def check_mask(mask: Any, what: str = "mask") -> np.ndarray:
    """Return `mask` as float32 (N, H, W); a single (H, W) mask becomes a batch of one."""
    m = np.asarray(mask)
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 3:
        raise ValueError(f"'{what}' must be a mask (N, H, W), got shape {m.shape}")
    return m.astype(np.float32, copy=False)


def batch_len(*sizes: int, names: Sequence[str] = ()) -> int:
    """The broadcast batch length of several batches (each 1 or the common N)."""
    n = max(sizes)
    if any(s not in (1, n) for s in sizes):
        label = " and ".join(f"'{nm}' has {sz}" for nm, sz in zip(names, sizes, strict=False)) or str(sizes)
        raise ValueError(f"batch sizes do not match ({label}); use batches of equal length or of one image")
    return n


def pick(batch: np.ndarray | None, i: int) -> np.ndarray | None:
    """Item i of a batch, or item 0 of a batch of one (broadcast)."""
    if batch is None:
        return None
    return batch[i if len(batch) > 1 else 0]


def each(n: int, fn: Callable[[int], np.ndarray], ctx: Any = None, text: str = "image") -> np.ndarray:
    """Stack fn(0..n-1), checking for cancellation before each item and reporting progress."""
    if n == 0:
        raise ValueError("the input batch is empty")
    if n == 1:  # no stacking copy for the common single image
        if ctx is not None:
            ctx.check_cancelled()
        return np.asarray(fn(0), np.float32)[None]
    out: np.ndarray | None = None
    for i in range(n):
        if ctx is not None:
            ctx.check_cancelled()
        item = fn(i)
        if out is None:
            out = np.empty((n, *item.shape), np.float32)
        out[i] = item
        if ctx is not None:
            ctx.progress((i + 1) / n, text=f"{text} {i + 1}/{n}")
    return out


def map_images(images: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], ctx: Any = None) -> np.ndarray:
    """Apply fn to each (H, W, C) image of a batch."""
    images = check_image(images)
    return each(len(images), lambda i: fn(images[i]), ctx)


def split_alpha(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb, alpha or None) of one (H, W, C) image or an (N, H, W, C) batch."""
    if img.shape[-1] == 4:
        return img[..., :3], img[..., 3]
    return img, None


def with_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Put an alpha channel back (no-op when alpha is None)."""
    if alpha is None:
        return rgb.astype(np.float32, copy=False)
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32, copy=False)


def keep_alpha(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap an RGB-only per-image function so an alpha channel passes through untouched."""

    def wrapped(img: np.ndarray) -> np.ndarray:
        rgb, alpha = split_alpha(img)
        out = np.asarray(fn(np.ascontiguousarray(rgb)), np.float32)
        if np.may_share_memory(out, img):
            out = out.copy()
        return with_alpha(np.clip(out, 0.0, 1.0, out=out), alpha)

    return wrapped


LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec.709 / sRGB


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec.709 luma of (..., 3) values."""
    return rgb[..., :3] @ LUMA


def parse_color(text: str, channels: int = 3) -> tuple[float, ...]:
    """'#rrggbb', '#rrggbbaa', a CSS name ('white') or 'r,g,b[,a]' (0-255 or 0-1) -> floats in [0, 1]."""
    from PIL import ImageColor

    s = str(text).strip()
    try:
        if "," in s:
            vals = [float(v) for v in s.split(",")]
            if len(vals) not in (3, 4):
                raise ValueError
            if any(v > 1 for v in vals):
                vals = [v / 255.0 for v in vals]
        else:
            vals = [v / 255.0 for v in ImageColor.getrgb(s)]
    except ValueError:
        raise ValueError(f"'{text}' is not a colour (use #rrggbb, a name like 'white', or r,g,b)") from None
    vals = [min(max(v, 0.0), 1.0) for v in vals]
    if len(vals) == 3:
        vals.append(1.0)
    return tuple(vals[:channels]) if channels == 3 else tuple(vals)


def resize(img: np.ndarray, width: int, height: int,
           interp: Interpolation = Interpolation.BILINEAR) -> np.ndarray:
    """Resize one (H, W, C) or (H, W) float32 image with OpenCV, keeping its channel count."""
    import cv2

    if img.shape[0] == height and img.shape[1] == width:
        return img
    if img.shape[0] <= 0 or img.shape[1] <= 0:
        raise ValueError("cannot resize an empty image")
    out = cv2.resize(np.ascontiguousarray(img, dtype=np.float32), (int(width), int(height)),
                     interpolation=cv_interp(interp))
    if img.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    if interp in (Interpolation.BICUBIC, Interpolation.LANCZOS):
        out = np.clip(out, 0.0, 1.0)
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def from_uint8(arr: np.ndarray) -> np.ndarray:
    return arr.astype(np.float32) * np.float32(1.0 / 255.0)


def match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Add an opaque alpha channel or drop one so `img` has `channels` channels."""
    c = img.shape[-1]
    if c == channels:
        return img
    if c == 4 and channels == 3:
        return img[..., :3]
    if c == 3 and channels == 4:
        return with_alpha(img, np.ones(img.shape[:-1], np.float32))
    raise ValueError(f"cannot convert {c} channels to {channels}")
