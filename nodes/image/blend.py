"""Blend: Photoshop-style blend modes with opacity, an optional mask and the layer's alpha.

The formulas are the W3C compositing spec's separable modes (the ones Photoshop, GIMP and Krita
agree on). The layer is stretched to the base's size when they differ; batches broadcast one
image against N. The result keeps the base's channels; a transparent base gains coverage where
the layer is opaque (the layer is painted "over" it).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated

import numpy as np

from nodes.image.util import batch_len, check_image, check_mask, each, pick, resize, split_alpha
from nodes.registry import node
from nodes.types import Context, Image, Mask, Range


class BlendMode(str, enum.Enum):
    NORMAL = "normal"
    MULTIPLY = "multiply"
    SCREEN = "screen"
    OVERLAY = "overlay"
    SOFT_LIGHT = "soft light"
    HARD_LIGHT = "hard light"
    DIFFERENCE = "difference"
    ADD = "add"
    SUBTRACT = "subtract"
    LIGHTEN = "lighten"
    DARKEN = "darken"
    COLOR_DODGE = "color dodge"
    COLOR_BURN = "color burn"


def _overlay(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))


def _soft_light(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, np.sqrt(a))
    return np.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (d - a))


def _dodge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.minimum(1.0, a / np.maximum(1 - b, 1e-12))
    return np.where(a <= 0, 0.0, np.where(b >= 1, 1.0, r))


def _burn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = 1 - np.minimum(1.0, (1 - a) / np.maximum(b, 1e-12))
    return np.where(a >= 1, 1.0, np.where(b <= 0, 0.0, r))


#: mode -> f(base, layer), both (H, W, 3) in [0, 1]
MODES: dict[BlendMode, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    BlendMode.NORMAL: lambda a, b: b,
    BlendMode.MULTIPLY: lambda a, b: a * b,
    BlendMode.SCREEN: lambda a, b: 1 - (1 - a) * (1 - b),
    BlendMode.OVERLAY: _overlay,
    BlendMode.SOFT_LIGHT: _soft_light,
    BlendMode.HARD_LIGHT: lambda a, b: _overlay(b, a),
    BlendMode.DIFFERENCE: lambda a, b: np.abs(a - b),
    BlendMode.ADD: lambda a, b: np.minimum(a + b, 1.0),
    BlendMode.SUBTRACT: lambda a, b: np.maximum(a - b, 0.0),
    BlendMode.LIGHTEN: np.maximum,
    BlendMode.DARKEN: np.minimum,
    BlendMode.COLOR_DODGE: _dodge,
    BlendMode.COLOR_BURN: _burn,
}


def blend_one(base: np.ndarray, layer: np.ndarray, mode: BlendMode, opacity: float,
              mask: np.ndarray | None = None) -> np.ndarray:
    """Blend one (H, W, C) layer onto one (H, W, C) base; mask is (H, W) or None."""
    h, w = base.shape[:2]
    if layer.shape[:2] != (h, w):
        layer = resize(layer, w, h)
    if mask is not None and mask.shape != (h, w):
        mask = resize(mask, w, h)
    a_rgb, a_alpha = split_alpha(base)
    b_rgb, b_alpha = split_alpha(layer)
    coverage: np.ndarray | np.float32 = np.float32(opacity)
    if b_alpha is not None:
        coverage = coverage * b_alpha
    if mask is not None:
        coverage = coverage * np.clip(mask, 0.0, 1.0)
    mixed = MODES[BlendMode(mode)](a_rgb, b_rgb)
    k = coverage[..., None] if isinstance(coverage, np.ndarray) else coverage
    if isinstance(k, np.ndarray) or k != 1.0:
        rgb = mixed - a_rgb
        rgb *= k
        rgb += a_rgb
    else:  # full opacity, no mask or alpha: the mode's result is the answer
        rgb = mixed.copy() if np.may_share_memory(mixed, layer) or np.may_share_memory(mixed, base) else mixed
    rgb = np.clip(rgb, 0.0, 1.0, out=rgb).astype(np.float32, copy=False)
    if a_alpha is None:
        return rgb
    coverage = np.broadcast_to(np.asarray(coverage, np.float32), (h, w))
    alpha = a_alpha + coverage * (1 - a_alpha)
    # where the base was transparent the layer shows as itself, not blended with hidden colour
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(alpha > 0, coverage * (1 - a_alpha) / np.maximum(alpha, 1e-12), 0.0)[..., None]
    rgb = rgb * (1 - own) + b_rgb * own
    return np.concatenate([np.clip(rgb, 0, 1), alpha[..., None]], axis=-1).astype(np.float32, copy=False)


@node("imagebash.image.blend", title="Blend", category="image/blend")
def blend(base: Image, layer: Image, mode: BlendMode = BlendMode.NORMAL,
          opacity: Annotated[float, Range(0, 1, step=0.01)] = 1.0, mask: Mask | None = None,
          ctx: Context = None) -> Image:
    """Blend `layer` over `base` with a Photoshop-style mode, opacity and an optional mask.

    The layer's alpha channel and the mask both limit where it shows. A layer of another size
    is stretched to the base's size; a batch of one blends onto every image of the other batch.

    Args:
        base: The image underneath; the result has its size and channels.
        layer: The image on top.
        mode: How the colours combine (normal, multiply, screen, overlay, ...).
        opacity: 0 shows only the base, 1 the full blend.
        mask: Where the layer shows (1) or not (0).
    """
    base = check_image(base, "base")
    layer = check_image(layer, "layer")
    m = check_mask(mask) if mask is not None else None
    n = batch_len(len(base), len(layer), len(m) if m is not None else 1, names=("base", "layer", "mask"))
    return each(n, lambda i: blend_one(pick(base, i), pick(layer, i), mode, opacity, pick(m, i)), ctx)
