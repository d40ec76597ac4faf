"""Layout: Grid (a contact sheet of a batch), Join Batch and Select from a batch."""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np

from nodes.image.util import Interpolation, check_image, match_channels, parse_color, resize
from nodes.registry import node
from nodes.types import Context, Image, Range


def grid_one(images: np.ndarray, columns: int, spacing: int, background: tuple[float, ...],
             ctx: object = None) -> np.ndarray:
    """Lay a (N, H, W, C) batch out in rows of `columns` with `spacing` pixels between and around."""
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("the input batch is empty")
    cols = columns if columns > 0 else math.ceil(math.sqrt(n))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    sheet_w = cols * w + (cols + 1) * spacing
    sheet_h = rows * h + (rows + 1) * spacing
    sheet = np.empty((sheet_h, sheet_w, c), np.float32)
    sheet[...] = np.asarray(background[:c], np.float32)
    for i in range(n):
        if ctx is not None:
            ctx.check_cancelled()
        r, col = divmod(i, cols)
        y = spacing + r * (h + spacing)
        x = spacing + col * (w + spacing)
        sheet[y:y + h, x:x + w] = images[i]
    return sheet


def _not_empty(images: np.ndarray, port: str) -> np.ndarray:
    if not len(images):
        raise ValueError(f"'{port}': the input batch is empty")
    return images


@node("imagebash.image.grid", title="Grid", category="image/layout")
def grid(image: Image, columns: Annotated[int, Range(0, 256)] = 0,
         spacing: Annotated[int, Range(0, 512)] = 8, background: str = "#202020",
         cell_width: Annotated[int, Range(0, 8192)] = 0, ctx: Context = None) -> Image:
    """Lay every image of a batch out on one sheet, row by row (a contact sheet).

    Args:
        image: The batch to lay out.
        columns: Images per row (0 = as square as possible).
        spacing: Pixels between cells and around the sheet.
        background: Sheet colour (#rrggbb, #rrggbbaa or a name).
        cell_width: Shrink or grow each cell to this width first, keeping aspect (0 = as is).
    """
    images = _not_empty(check_image(image), "image")
    if cell_width:
        h, w = images.shape[1:3]
        ch = max(1, round(h * cell_width / w))
        interp = Interpolation.AREA if cell_width < w else Interpolation.LANCZOS
        images = np.stack([resize(im, cell_width, ch, interp) for im in images])
    bg = parse_color(background, 4)
    if images.shape[-1] == 3 and bg[3] < 1:
        images = match_channels(images, 4)
    return grid_one(images, columns, spacing, bg, ctx)[None]


@node("imagebash.image.join_batch", title="Join Batch", category="image/layout")
def join_batch(first: Image, second: Image) -> Image:
    """Append the images of `second` to the batch `first` (stretched to its size if they differ).

    Args:
        first: The images that come first; their size and channels win.
        second: The images appended after them.
    """
    a = _not_empty(check_image(first, "first"), "first")
    b = _not_empty(check_image(second, "second"), "second")
    h, w = a.shape[1:3]
    if b.shape[1:3] != (h, w):
        b = np.stack([resize(im, w, h) for im in b])
    return np.concatenate([a, match_channels(b, a.shape[-1])], axis=0)


@node("imagebash.image.select", title="Select from Batch", category="image/layout")
def select(image: Image, start: Annotated[int, Range(-100000, 100000)] = 0,
           count: Annotated[int, Range(0, 100000)] = 1) -> Image:
    """Take `count` images from a batch starting at `start` (negative counts from the end).

    Args:
        image: The batch.
        start: Index of the first image; -1 is the last one.
        count: How many images (0 = all to the end).
    """
    images = check_image(image)
    n = len(images)
    i = start + n if start < 0 else start
    if not 0 <= i < n:
        raise ValueError(f"start {start} is outside the batch of {n} image(s)")
    end = n if count == 0 else min(n, i + count)
    return np.ascontiguousarray(images[i:end])
