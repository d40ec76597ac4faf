"""Colour: Color Adjust (brightness, contrast, saturation, hue, gamma), Color Match, Invert, Grayscale.

Alpha passes through every node here untouched. Color Match is Reinhard et al.'s statistics
transfer (mean and standard deviation per channel) in CIE Lab, which moves the mood of one
image onto another without the hue shifts an RGB transfer makes.
"""

from __future__ import annotations

import enum
from typing import Annotated

import numpy as np

from nodes.image.util import (
    batch_len,
    check_image,
    each,
    keep_alpha,
    luminance,
    map_images,
    pick,
    split_alpha,
    with_alpha,
)
from nodes.registry import node
from nodes.types import Context, Image, Range


def adjust_rgb(rgb: np.ndarray, brightness: float = 0.0, contrast: float = 1.0, saturation: float = 1.0,
               hue: float = 0.0, gamma: float = 1.0) -> np.ndarray:
    """Apply the five adjustments, in that order, to one (H, W, 3) image."""
    import cv2

    out = rgb
    if brightness:
        out = out + np.float32(brightness)
    if contrast != 1.0:
        out = (out - 0.5) * np.float32(contrast) + 0.5
    out = np.clip(out, 0.0, 1.0)
    if saturation != 1.0:
        gray = luminance(out)[..., None]
        out = np.clip(gray + (out - gray) * np.float32(saturation), 0.0, 1.0)
    if hue:
        hsv = cv2.cvtColor(np.ascontiguousarray(out, dtype=np.float32), cv2.COLOR_RGB2HSV)
        hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(hue), 360.0)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if gamma != 1.0:
        out = np.power(np.clip(out, 0.0, 1.0), np.float32(1.0 / gamma))
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


@node("imagebash.image.color_adjust", title="Color Adjust", category="image/color")
def color_adjust(image: Image, brightness: Annotated[float, Range(-1, 1, step=0.01)] = 0.0,
                 contrast: Annotated[float, Range(0, 3, step=0.01)] = 1.0,
                 saturation: Annotated[float, Range(0, 3, step=0.01)] = 1.0,
                 hue: Annotated[float, Range(-180, 180, step=1)] = 0.0,
                 gamma: Annotated[float, Range(0.1, 5, step=0.01)] = 1.0, ctx: Context = None) -> Image:
    """Grade colours: brightness, contrast, saturation, hue rotation and gamma, applied in that order.

    Args:
        image: The images to grade.
        brightness: Added to every channel (-1..1).
        contrast: Stretch around mid-grey (1 = unchanged, 0 = flat grey).
        saturation: 0 = greyscale, 1 = unchanged, 2 = twice as vivid.
        hue: Rotate hues by this many degrees.
        gamma: Mid-tone gamma; above 1 brightens, below 1 darkens.
    """
    return map_images(image, keep_alpha(lambda rgb: adjust_rgb(rgb, brightness, contrast, saturation, hue, gamma)),
                      ctx)


class MatchSpace(str, enum.Enum):
    LAB = "lab"
    RGB = "rgb"


def _stats(values: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    flat = values.reshape(-1, 3)
    if alpha is not None:
        keep = alpha.reshape(-1) > 0.5
        if keep.any():
            flat = flat[keep]
    return flat.mean(axis=0), flat.std(axis=0)


def match_one(img: np.ndarray, ref: np.ndarray, space: MatchSpace = MatchSpace.LAB,
              strength: float = 1.0) -> np.ndarray:
    """Move img's per-channel mean and spread onto ref's; alpha (if any) limits which pixels count."""
    import cv2

    rgb, alpha = split_alpha(img)
    ref_rgb, ref_alpha = split_alpha(ref)
    to = (lambda x: cv2.cvtColor(np.ascontiguousarray(x, dtype=np.float32), cv2.COLOR_RGB2Lab)) \
        if space is MatchSpace.LAB else (lambda x: x)
    back = (lambda x: cv2.cvtColor(x.astype(np.float32), cv2.COLOR_Lab2RGB)) if space is MatchSpace.LAB \
        else (lambda x: x)
    src = to(rgb)
    ms, ss = _stats(src, alpha)
    mr, sr = _stats(to(ref_rgb), ref_alpha)
    moved = (src - ms) * (sr / np.maximum(ss, 1e-6)) + mr
    out = np.clip(back(moved), 0.0, 1.0)
    if strength != 1.0:
        out = rgb + (out - rgb) * np.float32(strength)
    return with_alpha(out.astype(np.float32), alpha)


@node("imagebash.image.color_match", title="Color Match", category="image/color")
def color_match(image: Image, reference: Image, space: MatchSpace = MatchSpace.LAB,
                strength: Annotated[float, Range(0, 1, step=0.01)] = 1.0, ctx: Context = None) -> Image:
    """Give `image` the colour statistics of `reference` (mean and spread per channel).

    Works in CIE Lab by default (Reinhard transfer), which keeps hues natural. A single
    reference grades every image of the batch; a batch of references pairs one to one.
    Transparent pixels (alpha < 0.5) do not count.

    Args:
        image: The images to grade.
        reference: The image whose colours to copy.
        space: lab (perceptual, recommended) or rgb.
        strength: 0 keeps the original, 1 applies the full transfer.
    """
    images = check_image(image, "image")
    refs = check_image(reference, "reference")
    n = batch_len(len(images), len(refs), names=("image", "reference"))
    return each(n, lambda i: match_one(pick(images, i), pick(refs, i), MatchSpace(space), strength), ctx)


@node("imagebash.image.invert", title="Invert", category="image/color")
def invert(image: Image, ctx: Context = None) -> Image:
    """Invert colours (1 - value); alpha is kept.

    Args:
        image: The images to invert.
    """
    return map_images(image, keep_alpha(lambda rgb: 1.0 - rgb), ctx)


@node("imagebash.image.grayscale", title="Grayscale", category="image/color")
def grayscale(image: Image, ctx: Context = None) -> Image:
    """Convert to grey (Rec.709 luminance), still as three channels so it plugs in anywhere.

    Args:
        image: The images to convert.
    """
    return map_images(image, keep_alpha(lambda rgb: np.repeat(luminance(rgb)[..., None], 3, axis=-1)), ctx)
