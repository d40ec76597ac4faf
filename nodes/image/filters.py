"""Filters: Blur (gaussian, box, median) and Sharpen (unsharp mask), through OpenCV per image."""

from __future__ import annotations

import enum
from typing import Annotated

import numpy as np

from nodes.image.util import from_uint8, keep_alpha, map_images, to_uint8
from nodes.registry import node
from nodes.types import Context, Image, Range


class BlurKind(str, enum.Enum):
    GAUSSIAN = "gaussian"
    BOX = "box"
    MEDIAN = "median"


def gaussian(img: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur with sigma = radius / 2 (the kernel reaches about two sigmas each way)."""
    import cv2

    if radius <= 0:
        return img
    sigma = radius / 2.0
    return cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT_101)


def blur_one(img: np.ndarray, kind: BlurKind, radius: int) -> np.ndarray:
    """Blur one (H, W, C) image (alpha included, so soft edges stay soft)."""
    import cv2

    if radius <= 0:
        return img
    img = np.ascontiguousarray(img, dtype=np.float32)
    k = 2 * int(radius) + 1
    if kind is BlurKind.GAUSSIAN:
        return gaussian(img, radius)
    if kind is BlurKind.BOX:
        return cv2.blur(img, (k, k), borderType=cv2.BORDER_REFLECT_101)
    # OpenCV's float median only takes 3x3 and 5x5 kernels; larger ones work on 8 bits
    channels = [img[..., c] for c in range(img.shape[-1])]
    if k <= 5:
        return np.stack([cv2.medianBlur(ch, k) for ch in channels], axis=-1)
    return np.stack([from_uint8(cv2.medianBlur(to_uint8(ch), k)) for ch in channels], axis=-1)


@node("imagebash.image.blur", title="Blur", category="image/filter")
def blur(image: Image, radius: Annotated[int, Range(0, 256)] = 4, kind: BlurKind = BlurKind.GAUSSIAN,
         ctx: Context = None) -> Image:
    """Soften: gaussian (smooth), box (fast, flat) or median (removes speckles, keeps edges).

    Args:
        image: The images to blur.
        radius: Blur radius in pixels (0 = unchanged).
        kind: gaussian, box or median.
    """
    # every kernel here is an average or a median, so values stay inside [0, 1]
    return map_images(image, lambda img: blur_one(img, BlurKind(kind), radius), ctx)


@node("imagebash.image.sharpen", title="Sharpen", category="image/filter")
def sharpen(image: Image, amount: Annotated[float, Range(0, 5, step=0.05)] = 1.0,
            radius: Annotated[float, Range(0.1, 64, step=0.1)] = 2.0,
            threshold: Annotated[float, Range(0, 1, step=0.01)] = 0.0, ctx: Context = None) -> Image:
    """Unsharp mask: add back the difference between the image and a blurred copy of it.

    Args:
        image: The images to sharpen.
        amount: Strength (1 = add the full difference once).
        radius: Size of the detail that gets sharpened, in pixels.
        threshold: Leave differences smaller than this alone (keeps noise and skin smooth).
    """

    def one(rgb: np.ndarray) -> np.ndarray:
        detail = rgb - gaussian(rgb, radius)
        if threshold > 0:
            detail = np.where(np.abs(detail) >= threshold, detail, 0.0)
        return rgb + np.float32(amount) * detail

    return map_images(image, keep_alpha(one), ctx)
