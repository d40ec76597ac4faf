"""Masks: from an image's alpha, luminance or a channel; threshold, invert, grow/shrink and feather;
back to an image; and Join Alpha, which puts a mask into an image as its alpha channel.

A mask is float32 (N, H, W) in [0, 1]; 1 means "selected / opaque" (unlike ComfyUI, whose Load
Image mask is inverted alpha), so a mask from alpha is the alpha itself.
"""

from __future__ import annotations

import enum
from typing import Annotated

import numpy as np

from nodes.image.filters import gaussian
from nodes.image.util import batch_len, check_image, check_mask, each, luminance, pick, resize
from nodes.registry import node
from nodes.types import Context, Image, Mask, Range


class MaskSource(str, enum.Enum):
    ALPHA = "alpha"
    LUMINANCE = "luminance"
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


@node("imagebash.image.mask_from_image", title="Mask from Image", category="image/mask")
def mask_from_image(image: Image, source: MaskSource = MaskSource.ALPHA,
                    threshold: Annotated[float, Range(0, 1, step=0.01)] = 0.0, invert: bool = False) -> Mask:
    """Make a mask from an image's alpha, its luminance or one colour channel.

    An image without alpha gives a full (all ones) mask for `alpha`. A threshold above 0 makes
    the mask hard: 1 where the value is at least the threshold, 0 elsewhere.

    Args:
        image: The images to read.
        source: alpha, luminance, red, green or blue.
        threshold: 0 keeps soft values; above 0 cuts at this level.
        invert: Swap selected and unselected.
    """
    images = check_image(image)
    src = MaskSource(source)
    if src is MaskSource.ALPHA:
        m = images[..., 3] if images.shape[-1] == 4 else np.ones(images.shape[:3], np.float32)
    elif src is MaskSource.LUMINANCE:
        m = luminance(images[..., :3])
    else:
        m = images[..., {"red": 0, "green": 1, "blue": 2}[src.value]]
    m = np.asarray(m, np.float32)
    if threshold > 0:
        m = (m >= threshold).astype(np.float32)
    return np.ascontiguousarray(1.0 - m if invert else m, dtype=np.float32)


@node("imagebash.image.mask_threshold", title="Mask Threshold", category="image/mask")
def mask_threshold(mask: Mask, threshold: Annotated[float, Range(0, 1, step=0.01)] = 0.5) -> Mask:
    """Make a soft mask hard: 1 where it is at least `threshold`, 0 elsewhere.

    Args:
        mask: The mask to cut.
        threshold: The cut level.
    """
    return (check_mask(mask) >= threshold).astype(np.float32)


@node("imagebash.image.mask_invert", title="Invert Mask", category="image/mask")
def mask_invert(mask: Mask) -> Mask:
    """Swap selected and unselected (1 - mask).

    Args:
        mask: The mask to invert.
    """
    return (1.0 - check_mask(mask)).astype(np.float32)


@node("imagebash.image.mask_grow", title="Grow / Shrink Mask", category="image/mask")
def mask_grow(mask: Mask, pixels: Annotated[int, Range(-512, 512)] = 4,
              feather: Annotated[float, Range(0, 256, step=0.5)] = 0.0, ctx: Context = None) -> Mask:
    """Grow (positive) or shrink (negative) a mask by some pixels, then optionally feather its edge.

    Args:
        mask: The mask to change.
        pixels: Grow by this many pixels; negative values shrink.
        feather: Soften the edge with a blur of this radius.
    """
    import cv2

    masks = check_mask(mask)

    def one(i: int) -> np.ndarray:
        m = np.ascontiguousarray(masks[i])
        if pixels:
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(pixels) + 1, 2 * abs(pixels) + 1))
            m = cv2.dilate(m, k) if pixels > 0 else cv2.erode(m, k)
        if feather > 0:
            m = gaussian(m, feather)
        return np.clip(m, 0.0, 1.0)

    return each(len(masks), one, ctx, "mask")


@node("imagebash.image.mask_to_image", title="Mask to Image", category="image/mask")
def mask_to_image(mask: Mask) -> Image:
    """Show a mask as a grey image (white = selected), e.g. to save or preview it.

    Args:
        mask: The mask to convert.
    """
    m = check_mask(mask)
    return np.repeat(m[..., None], 3, axis=-1).astype(np.float32)


@node("imagebash.image.join_alpha", title="Join Alpha", category="image/mask")
def join_alpha(image: Image, mask: Mask, ctx: Context = None) -> Image:
    """Use a mask as the image's alpha channel (replacing any alpha it had): a cut-out.

    The mask is stretched to the image's size if it differs.

    Args:
        image: The colour.
        mask: The new alpha (1 = opaque).
    """
    images = check_image(image, "image")
    masks = check_mask(mask)
    n = batch_len(len(images), len(masks), names=("image", "mask"))
    h, w = images.shape[1:3]

    def one(i: int) -> np.ndarray:
        m = pick(masks, i)
        if m.shape != (h, w):
            m = resize(m, w, h)
        return np.concatenate([pick(images, i)[..., :3], m[..., None]], axis=-1)

    return each(n, one, ctx)
