"""Geometry: Resize, Scale, Crop, Pad, Flip and Rotate (OpenCV underneath, per image of a batch)."""

from __future__ import annotations

import enum
import math
from typing import Annotated, NamedTuple

import numpy as np

from nodes.image.util import Interpolation, check_image, cv_interp, map_images, parse_color, resize
from nodes.registry import node
from nodes.types import Context, Image, Mask, Range

Size = Annotated[int, Range(0, 16384)]


class ResizeMode(str, enum.Enum):
    """stretch: exactly width x height; fit: inside the box, aspect kept; fill: cover the box, crop the rest."""

    STRETCH = "stretch"
    FIT = "fit"
    FILL = "fill"


def target_size(w: int, h: int, width: int, height: int, mode: ResizeMode) -> tuple[int, int, int, int]:
    """(scaled w, scaled h, final w, final h) for an image of w x h; 0 in width/height keeps aspect."""
    if width <= 0 and height <= 0:
        raise ValueError("set width or height (0 means: follow the aspect ratio)")
    if width <= 0:
        width = max(1, round(w * height / h))
    if height <= 0:
        height = max(1, round(h * width / w))
    if mode is ResizeMode.STRETCH:
        return width, height, width, height
    s = min(width / w, height / h) if mode is ResizeMode.FIT else max(width / w, height / h)
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    if mode is ResizeMode.FIT:
        return sw, sh, sw, sh
    return sw, sh, width, height


@node("imagebash.image.resize", title="Resize", category="image/transform")
def resize_image(image: Image, width: Size = 512, height: Size = 512, mode: ResizeMode = ResizeMode.FIT,
                 interpolation: Interpolation = Interpolation.LANCZOS, ctx: Context = None) -> Image:
    """Resize to a width and height: stretch to it, fit inside it, or fill it and crop the overflow.

    A width or height of 0 follows the image's aspect ratio. `area` is the best filter for
    shrinking, `lanczos` for enlarging.

    Args:
        image: The images to resize.
        width: Target width in pixels (0 = from height and aspect).
        height: Target height in pixels (0 = from width and aspect).
        mode: stretch, fit (aspect kept, inside the box) or fill (aspect kept, box covered, centre-cropped).
        interpolation: Resampling filter.
    """
    images = check_image(image)
    h, w = images.shape[1:3]
    sw, sh, fw, fh = target_size(w, h, width, height, ResizeMode(mode))

    def one(img: np.ndarray) -> np.ndarray:
        out = resize(img, sw, sh, interpolation)
        if (sw, sh) != (fw, fh):
            x, y = (sw - fw) // 2, (sh - fh) // 2
            out = out[y:y + fh, x:x + fw]
        return out

    return map_images(images, one, ctx)


@node("imagebash.image.scale", title="Scale", category="image/transform")
def scale_image(image: Image, factor: Annotated[float, Range(0.01, 16, step=0.05)] = 2.0,
                interpolation: Interpolation = Interpolation.LANCZOS, ctx: Context = None) -> Image:
    """Scale by a factor, keeping the aspect ratio (0.5 halves, 2 doubles).

    Args:
        image: The images to scale.
        factor: Size multiplier.
        interpolation: Resampling filter.
    """
    images = check_image(image)
    h, w = images.shape[1:3]
    sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
    return map_images(images, lambda img: resize(img, sw, sh, interpolation), ctx)


@node("imagebash.image.crop", title="Crop", category="image/transform")
def crop(image: Image, x: Size = 0, y: Size = 0, width: Size = 512, height: Size = 512) -> Image:
    """Cut out a rectangle; the part of it that lies outside the image is dropped.

    Args:
        image: The images to crop.
        x: Left edge in pixels.
        y: Top edge in pixels.
        width: Width of the rectangle (0 = to the right edge).
        height: Height of the rectangle (0 = to the bottom edge).
    """
    images = check_image(image)
    h, w = images.shape[1:3]
    x1 = w if width == 0 else min(w, x + width)
    y1 = h if height == 0 else min(h, y + height)
    if x >= w or y >= h or x1 <= x or y1 <= y:
        raise ValueError(f"crop rectangle x={x} y={y} {width}x{height} lies outside the {w}x{h} image")
    return np.ascontiguousarray(images[:, y:y1, x:x1])


class PadMode(str, enum.Enum):
    COLOR = "color"
    EDGE = "edge"
    REFLECT = "reflect"


@node("imagebash.image.pad", title="Pad", category="image/transform")
def pad(image: Image, left: Size = 0, top: Size = 0, right: Size = 0, bottom: Size = 0,
        mode: PadMode = PadMode.COLOR, color: str = "#000000", ctx: Context = None) -> Image:
    """Add borders: a solid colour, the repeated edge pixels, or a mirror of the image.

    Args:
        image: The images to pad.
        left: Pixels added on the left.
        top: Pixels added at the top.
        right: Pixels added on the right.
        bottom: Pixels added at the bottom.
        mode: color (solid), edge (repeat the border pixels) or reflect (mirror).
        color: Border colour for `color` mode: #rrggbb, #rrggbbaa or a name (alpha 0 = transparent).
    """
    import cv2

    images = check_image(image)
    border = {PadMode.COLOR: cv2.BORDER_CONSTANT, PadMode.EDGE: cv2.BORDER_REPLICATE,
              PadMode.REFLECT: cv2.BORDER_REFLECT_101}[PadMode(mode)]
    value = parse_color(color, 4)[: images.shape[-1]]
    h, w = images.shape[1:3]
    if mode is PadMode.REFLECT and (max(top, bottom) >= h or max(left, right) >= w):
        raise ValueError(f"reflect padding must be smaller than the image ({w}x{h})")

    def one(img: np.ndarray) -> np.ndarray:
        out = cv2.copyMakeBorder(np.ascontiguousarray(img), top, bottom, left, right, border, value=value)
        return out if out.ndim == 3 else out[..., None]

    return map_images(images, one, ctx)


class FlipAxis(str, enum.Enum):
    HORIZONTAL = "horizontal"
    VERTICAL = "vertical"
    BOTH = "both"


@node("imagebash.image.flip", title="Flip", category="image/transform")
def flip(image: Image, axis: FlipAxis = FlipAxis.HORIZONTAL) -> Image:
    """Mirror left-right (horizontal), top-bottom (vertical) or both.

    Args:
        image: The images to flip.
        axis: Which way to mirror.
    """
    images = check_image(image)
    axes = {FlipAxis.HORIZONTAL: (2,), FlipAxis.VERTICAL: (1,), FlipAxis.BOTH: (1, 2)}[FlipAxis(axis)]
    return np.ascontiguousarray(np.flip(images, axis=axes))


@node("imagebash.image.rotate", title="Rotate", category="image/transform")
def rotate(image: Image, angle: Annotated[float, Range(-360, 360, step=1)] = 90.0, expand: bool = True,
           fill: str = "#00000000", interpolation: Interpolation = Interpolation.BICUBIC,
           ctx: Context = None) -> Image:
    """Rotate counter-clockwise by an angle in degrees; multiples of 90 are exact (no resampling).

    With `expand` the canvas grows to hold the whole rotated image; without it the size stays
    and the corners are cut. Uncovered corners take the fill colour.

    Args:
        image: The images to rotate.
        angle: Degrees, counter-clockwise.
        expand: Grow the canvas so nothing is cut off.
        fill: Colour of uncovered corners (#rrggbbaa; alpha only counts for RGBA images).
        interpolation: Resampling filter for angles that are not multiples of 90.
    """
    import cv2

    images = check_image(image)
    h, w = images.shape[1:3]
    quarter = angle / 90.0
    if float(quarter).is_integer() and (expand or h == w or int(quarter) % 2 == 0):
        return np.ascontiguousarray(np.rot90(images, k=int(quarter) % 4, axes=(1, 2)))
    rad = math.radians(angle)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    ow, oh = (round(w * cos + h * sin), round(w * sin + h * cos)) if expand else (w, h)
    mat = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    mat[0, 2] += (ow - w) / 2.0
    mat[1, 2] += (oh - h) / 2.0
    value = parse_color(fill, 4)[: images.shape[-1]]

    def one(img: np.ndarray) -> np.ndarray:
        out = cv2.warpAffine(np.ascontiguousarray(img), mat, (ow, oh), flags=cv_interp(interpolation),
                             borderMode=cv2.BORDER_CONSTANT, borderValue=value)
        return np.clip(out, 0.0, 1.0)

    return map_images(images, one, ctx)



@node("imagebash.image.scale_to_pixels", title="Scale to Megapixels", category="image/transform")
def scale_to_pixels(image: Image, megapixels: Annotated[float, Range(0.01, 64.0, step=0.01)] = 1.0,
                    interpolation: Interpolation = Interpolation.LANCZOS,
                    resolution_steps: Annotated[int, Range(1, 256)] = 1, ctx: Context = None) -> Image:
    """Scale to about `megapixels` x 1024 x 1024 pixels, keeping the aspect (ComfyUI's ImageScaleToTotalPixels:
    scale = sqrt(total / (w h)), sides rounded to multiples of `resolution_steps`).

    Args:
        image: The images to scale.
        megapixels: The pixel count to reach, in units of 1024 x 1024.
        interpolation: How pixels are resampled.
        resolution_steps: Round both sides to a multiple of this (8 or 64 suits latent models).
    """
    images = check_image(image)
    h, w = images.shape[1:3]
    scale = math.sqrt(int(megapixels * 1024 * 1024) / (w * h))
    steps = max(int(resolution_steps), 1)
    tw, th = max(round(w * scale / steps) * steps, 1), max(round(h * scale / steps) * steps, 1)
    return map_images(images, lambda img: resize(img, tw, th, interpolation), ctx)


class PaddedImage(NamedTuple):
    image: Image
    mask: Mask


@node("imagebash.image.pad_for_outpaint", title="Pad for Outpaint", category="image/transform")
def pad_for_outpaint(image: Image, left: Size = 0, top: Size = 0, right: Size = 0, bottom: Size = 0,
                     feathering: Annotated[int, Range(0, 4096)] = 40) -> PaddedImage:
    """Pad with 0.5 grey and give the outpaint mask (1 on the padding, feathered into the image over
    `feathering` pixels as (1 - d / feathering)^2), as ComfyUI's ImagePadForOutpaint.

    Args:
        image: The images to extend.
        left: Pixels to add on the left.
        top: Pixels to add at the top.
        right: Pixels to add on the right.
        bottom: Pixels to add at the bottom.
        feathering: How far into the image the mask fades out (0: a hard edge).
    """
    images = check_image(image)[..., :3]
    n, h, w = images.shape[:3]
    out = np.full((n, h + top + bottom, w + left + right, 3), 0.5, np.float32)
    out[:, top:top + h, left:left + w] = images
    mask = np.ones(out.shape[:3], np.float32)
    inner = np.zeros((h, w), np.float32)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        i, j = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
        d = np.minimum.reduce([np.broadcast_to(v, (h, w)) for v in (
            i if top else np.float32(h), h - i if bottom else np.float32(h),
            j if left else np.float32(w), w - j if right else np.float32(w))])
        v = (feathering - d) / feathering
        inner = np.where(d < feathering, v * v, 0.0).astype(np.float32)
    mask[:, top:top + h, left:left + w] = inner
    return PaddedImage(out, mask)
