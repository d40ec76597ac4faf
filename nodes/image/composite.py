"""Composite: paste a layer onto a base at a pixel offset, through its alpha and an optional mask.

Unlike Blend, the layer keeps its own size: it is placed with its top-left corner at (x, y),
parts outside the base are clipped, and negative offsets are allowed. The mask is in the
layer's coordinates (stretched to the layer's size if it differs).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from nodes.image.blend import BlendMode, blend_one
from nodes.image.util import batch_len, check_image, check_mask, each, pick, resize
from nodes.registry import node
from nodes.types import Context, Image, Mask, Range


def composite_one(base: np.ndarray, layer: np.ndarray, x: int, y: int, opacity: float = 1.0,
                  mask: np.ndarray | None = None, mode: BlendMode = BlendMode.NORMAL) -> np.ndarray:
    """Place one (h, w, C) layer at (x, y) on one (H, W, C) base."""
    bh, bw = base.shape[:2]
    lh, lw = layer.shape[:2]
    if mask is not None and mask.shape != (lh, lw):
        mask = resize(mask, lw, lh)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + lw, bw), min(y + lh, bh)
    out = base.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    lx, ly = x0 - x, y0 - y
    region_layer = layer[ly:ly + (y1 - y0), lx:lx + (x1 - x0)]
    region_mask = mask[ly:ly + (y1 - y0), lx:lx + (x1 - x0)] if mask is not None else None
    out[y0:y1, x0:x1] = blend_one(base[y0:y1, x0:x1], region_layer, mode, opacity, region_mask)
    return out


@node("imagebash.image.composite", title="Composite", category="image/blend")
def composite(base: Image, layer: Image, x: int = 0, y: int = 0,
              opacity: Annotated[float, Range(0, 1, step=0.01)] = 1.0, mask: Mask | None = None,
              mode: BlendMode = BlendMode.NORMAL, ctx: Context = None) -> Image:
    """Paste `layer` onto `base` with its top-left corner at (x, y), through its alpha and a mask.

    The layer keeps its size; what falls outside the base is clipped. Use Resize first to
    scale it. The mask is in the layer's coordinates.

    Args:
        base: The background; the result has its size and channels.
        layer: The image to place.
        x: Left edge of the layer on the base, in pixels (may be negative).
        y: Top edge of the layer on the base, in pixels (may be negative).
        opacity: How strongly the layer covers the base.
        mask: Where the layer shows, sized like the layer.
        mode: Blend mode inside the pasted area.
    """
    base = check_image(base, "base")
    layer = check_image(layer, "layer")
    m = check_mask(mask) if mask is not None else None
    n = batch_len(len(base), len(layer), len(m) if m is not None else 1, names=("base", "layer", "mask"))
    return each(n, lambda i: composite_one(pick(base, i), pick(layer, i), x, y, opacity, pick(m, i), mode), ctx)
