"""Generators: Solid Color and Gradient, for backgrounds, tints and vignettes without a file."""

from __future__ import annotations

import enum
from typing import Annotated

import numpy as np

from nodes.image.util import parse_color
from nodes.registry import node
from nodes.types import Image, Range

Size = Annotated[int, Range(1, 16384)]


@node("imagebash.image.solid_color", title="Solid Color", category="image/generate")
def solid_color(width: Size = 512, height: Size = 512, color: str = "#808080") -> Image:
    """An image of one colour; a colour with alpha (#rrggbbaa) gives an RGBA image.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        color: #rrggbb, #rrggbbaa, a name like 'white', or r,g,b.
    """
    rgba = parse_color(color, 4)
    c = 4 if rgba[3] < 1 else 3
    out = np.empty((1, height, width, c), np.float32)
    out[...] = np.asarray(rgba[:c], np.float32)
    return out


class GradientShape(str, enum.Enum):
    LINEAR = "linear"
    RADIAL = "radial"


@node("imagebash.image.gradient", title="Gradient", category="image/generate")
def gradient(width: Size = 512, height: Size = 512, start: str = "#000000", end: str = "#ffffff",
             shape: GradientShape = GradientShape.LINEAR,
             angle: Annotated[float, Range(-360, 360, step=1)] = 90.0) -> Image:
    """A two-colour gradient: linear at an angle, or radial from the centre (a vignette).

    Args:
        width: Width in pixels.
        height: Height in pixels.
        start: Colour at the start (top for 90 degrees; the centre for radial).
        end: Colour at the end (bottom for 90 degrees; the corners for radial).
        shape: linear or radial.
        angle: Direction of a linear gradient in degrees (0 = left to right, 90 = top to bottom).
    """
    a = np.asarray(parse_color(start, 4), np.float32)
    b = np.asarray(parse_color(end, 4), np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs = (xs + 0.5) / width - 0.5
    ys = (ys + 0.5) / height - 0.5
    if GradientShape(shape) is GradientShape.RADIAL:
        t = np.sqrt(xs * xs + ys * ys) / np.sqrt(0.5)
    else:
        rad = np.deg2rad(angle)
        d = xs * np.cos(rad) + ys * np.sin(rad)
        span = 0.5 * (abs(np.cos(rad)) + abs(np.sin(rad)))
        t = (d + span) / (2 * span)
    t = np.clip(t, 0.0, 1.0)[..., None]
    img = a + (b - a) * t
    c = 4 if min(a[3], b[3]) < 1 else 3
    return np.ascontiguousarray(img[None, ..., :c], dtype=np.float32)
