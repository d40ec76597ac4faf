"""Resize, Scale, Crop, Pad, Flip and Rotate on real pixels."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.image.transform import FlipAxis, PadMode, ResizeMode, crop, flip, pad, resize_image, rotate, scale_image
from nodes.image.util import Interpolation


def _marked(h: int = 6, w: int = 8, c: int = 3) -> np.ndarray:
    """Black image with a white pixel at the top-left and a red one at the bottom-left."""
    img = np.zeros((1, h, w, c), np.float32)
    img[0, 0, 0, :3] = 1.0
    img[0, h - 1, 0, 0] = 1.0
    return img


@pytest.mark.parametrize("mode,box,expected", [
    (ResizeMode.STRETCH, (50, 50), (50, 50)),
    (ResizeMode.FIT, (50, 50), (50, 25)),
    (ResizeMode.FILL, (50, 50), (50, 50)),
    (ResizeMode.FIT, (0, 30), (60, 30)),
    (ResizeMode.STRETCH, (40, 0), (40, 20)),
])
def test_resize_modes_give_the_right_size(mode, box, expected):
    img = np.random.default_rng(0).random((2, 40, 80, 3), dtype=np.float32)
    out = resize_image(img, width=box[0], height=box[1], mode=mode, interpolation=Interpolation.AREA)
    assert out.shape == (2, expected[1], expected[0], 3) and out.dtype == np.float32


def test_fill_crops_the_centre():
    img = np.zeros((1, 10, 30, 3), np.float32)
    img[0, :, :10] = 1.0  # left third white: cropped away when filling a square
    out = resize_image(img, 10, 10, ResizeMode.FILL, Interpolation.NEAREST)
    assert out.shape == (1, 10, 10, 3) and out.max() == 0.0


def test_resize_nearest_keeps_values_and_lanczos_stays_in_range():
    img = _marked()
    up = resize_image(img, 16, 12, ResizeMode.STRETCH, Interpolation.NEAREST)
    assert set(np.unique(up)) <= {0.0, 1.0} and up[0, :2, :2].min() == 1.0
    sharp = resize_image(img, 32, 24, ResizeMode.STRETCH, Interpolation.LANCZOS)
    assert sharp.min() >= 0 and sharp.max() <= 1


def test_resize_needs_a_size():
    with pytest.raises(ValueError, match="set width or height"):
        resize_image(_marked(), 0, 0)


def test_scale_by_factor():
    assert scale_image(_marked(6, 8), 0.5).shape == (1, 3, 4, 3)


def test_crop_takes_the_rectangle_and_clips():
    img = np.arange(1 * 5 * 6 * 3, dtype=np.float32).reshape(1, 5, 6, 3) / 100
    out = crop(img, x=2, y=1, width=3, height=10)
    assert np.array_equal(out, img[:, 1:5, 2:5])
    assert crop(img, x=4, y=0, width=0, height=0).shape == (1, 5, 2, 3)
    with pytest.raises(ValueError, match="outside the 6x5 image"):
        crop(img, x=6, y=0, width=2, height=2)


def test_pad_colour_edge_reflect():
    img = np.zeros((1, 2, 3, 3), np.float32)
    img[0, :, 0] = 1.0  # left column white
    colour = pad(img, left=2, top=1, mode=PadMode.COLOR, color="#ff0000")
    assert colour.shape == (1, 3, 5, 3) and np.allclose(colour[0, 0, 0], [1, 0, 0])
    assert np.allclose(colour[0, 1:, 2], 1.0)
    edge = pad(img, left=2, mode=PadMode.EDGE)
    assert np.allclose(edge[0, :, :3], 1.0)
    refl = pad(img, left=2, mode=PadMode.REFLECT)
    assert np.allclose(refl[0, :, 0], 0.0) and np.allclose(refl[0, :, 2], 1.0)
    with pytest.raises(ValueError, match="smaller than the image"):
        pad(img, top=5, mode=PadMode.REFLECT)


def test_pad_rgba_transparent_border():
    img = np.ones((1, 2, 2, 4), np.float32)
    out = pad(img, right=1, color="#00000000")
    assert out.shape == (1, 2, 3, 4) and np.allclose(out[0, :, 2, 3], 0.0) and np.allclose(out[0, :, :2, 3], 1.0)


def test_flip_axes():
    img = _marked()
    assert flip(img, FlipAxis.HORIZONTAL)[0, 0, -1, 1] == 1.0
    assert flip(img, FlipAxis.VERTICAL)[0, -1, 0, 1] == 1.0
    assert flip(img, FlipAxis.BOTH)[0, -1, -1, 1] == 1.0


def test_rotate_quarter_turns_are_exact_and_counter_clockwise():
    img = _marked(6, 8)
    out = rotate(img, 90)
    assert out.shape == (1, 8, 6, 3)
    # counter-clockwise: the top-left corner goes to the bottom-left
    assert np.array_equal(out[0, -1, 0], [1, 1, 1]) and np.array_equal(out[0, -1, -1], [1, 0, 0])
    assert np.array_equal(rotate(img, 180)[0, -1, -1], [1, 1, 1])
    assert np.array_equal(rotate(rotate(img, 270), 90), img)


def test_rotate_arbitrary_angle_expand_and_fill():
    img = np.ones((1, 20, 20, 3), np.float32)
    out = rotate(img, 45, expand=True, fill="#000000")
    assert out.shape[1] == out.shape[2] == 28
    assert out[0, 0, 0].max() < 0.01 and out[0, 14, 14].min() > 0.99
    same = rotate(img, 30, expand=False, fill="#000000")
    assert same.shape == img.shape and same[0, 0, 0].max() < 0.5
