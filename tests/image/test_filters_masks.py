"""Blur, Sharpen, the mask nodes, Grid and the batch helpers on real pixels."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.image.filters import BlurKind, blur, sharpen
from nodes.image.generate import GradientShape, gradient, solid_color
from nodes.image.grid import grid, join_batch, select
from nodes.image.mask import (
    MaskSource,
    join_alpha,
    mask_from_image,
    mask_grow,
    mask_invert,
    mask_threshold,
    mask_to_image,
)
from tests.image.helpers import solid


def _edge(h: int = 16, w: int = 16) -> np.ndarray:
    img = np.zeros((1, h, w, 3), np.float32)
    img[0, :, w // 2:] = 1.0
    return img


@pytest.mark.parametrize("kind", list(BlurKind))
def test_blur_smooths_noise_and_keeps_flat_areas(rng, kind):
    noise = rng.random((2, 32, 32, 3), dtype=np.float32)
    out = blur(noise, radius=3, kind=kind)
    assert out.shape == noise.shape and out.std() < noise.std() * 0.6
    flat = solid(8, 8, (0.3, 0.6, 0.9))
    assert np.allclose(blur(flat, radius=3, kind=kind), flat, atol=2 / 255)
    assert np.array_equal(blur(noise, radius=0, kind=kind), noise)


def test_median_removes_a_speck_and_keeps_the_edge():
    img = _edge()
    img[0, 4, 3] = 1.0  # one white speck in the black half
    out = blur(img, radius=2, kind=BlurKind.MEDIAN)
    assert out[0, 4, 3].max() < 0.01
    assert out[0, :, :7].max() < 0.01 and out[0, :, 9:].min() > 0.99


def test_blur_softens_alpha_edges():
    img = solid(16, 16, (1.0, 1.0, 1.0, 1.0))
    img[0, :, :8, 3] = 0.0
    out = blur(img, radius=3)
    assert 0.2 < out[0, 8, 8, 3] < 0.8


def test_sharpen_raises_edge_contrast_and_respects_threshold():
    soft = blur(_edge(), radius=2)
    sharp = sharpen(soft, amount=1.5, radius=2.0)
    left, right = soft[0, 8, 6, 0], soft[0, 8, 9, 0]
    assert sharp[0, 8, 6, 0] < left and sharp[0, 8, 9, 0] > right
    assert np.allclose(sharpen(soft, amount=0.0), soft)
    assert np.allclose(sharpen(soft, amount=2.0, threshold=1.0), soft)


def test_mask_from_alpha_luminance_channel_threshold_invert():
    img = np.zeros((1, 2, 2, 4), np.float32)
    img[0, 0, 0] = (1.0, 0.0, 0.0, 0.25)
    img[0, 1, 1] = (1.0, 1.0, 1.0, 1.0)
    assert np.allclose(mask_from_image(img, MaskSource.ALPHA)[0], [[0.25, 0.0], [0.0, 1.0]])
    assert np.allclose(mask_from_image(img, MaskSource.LUMINANCE)[0], [[0.2126, 0.0], [0.0, 1.0]], atol=1e-5)
    assert np.allclose(mask_from_image(img, MaskSource.RED)[0], [[1.0, 0.0], [0.0, 1.0]])
    assert np.allclose(mask_from_image(img, MaskSource.ALPHA, threshold=0.5)[0], [[0.0, 0.0], [0.0, 1.0]])
    assert np.allclose(mask_from_image(img, MaskSource.ALPHA, invert=True)[0], [[0.75, 1.0], [1.0, 0.0]])
    assert np.allclose(mask_from_image(img[..., :3], MaskSource.ALPHA), 1.0)


def test_mask_threshold_invert_to_image():
    m = np.array([[[0.2, 0.5], [0.7, 1.0]]], np.float32)
    assert np.array_equal(mask_threshold(m, 0.5)[0], [[0, 1], [1, 1]])
    assert np.allclose(mask_invert(m)[0], [[0.8, 0.5], [0.3, 0.0]])
    img = mask_to_image(m)
    assert img.shape == (1, 2, 2, 3) and np.allclose(img[..., 1], m)


def test_mask_grow_shrink_and_feather():
    m = np.zeros((1, 21, 21), np.float32)
    m[0, 8:13, 8:13] = 1.0
    grown = mask_grow(m, pixels=3)
    shrunk = mask_grow(m, pixels=-2)
    assert grown.sum() > m.sum() > shrunk.sum() > 0
    assert grown[0, 10, 5] == 1.0 and shrunk[0, 8, 8] == 0.0 and shrunk[0, 10, 10] == 1.0
    soft = mask_grow(m, pixels=0, feather=2.0)
    assert 0.0 < soft[0, 10, 7] < 1.0 and soft.max() <= 1.0


def test_join_alpha_makes_a_cutout():
    img = solid(4, 4, (0.2, 0.4, 0.6))
    m = np.zeros((1, 2, 2), np.float32)
    m[0, :, 1] = 1.0
    out = join_alpha(img, m)
    assert out.shape == (1, 4, 4, 4) and np.allclose(out[..., :3], [0.2, 0.4, 0.6])
    assert out[0, :, :1, 3].max() < 0.05 and out[0, :, 3:, 3].min() > 0.95


def test_grid_layout_background_and_cells():
    batch = np.stack([np.full((4, 6, 3), v, np.float32) for v in (0.1, 0.2, 0.3, 0.4, 0.5)])
    sheet = grid(batch, columns=2, spacing=2, background="#ff0000")
    assert sheet.shape == (1, 3 * 4 + 4 * 2, 2 * 6 + 3 * 2, 3)
    assert np.allclose(sheet[0, 0, 0], [1, 0, 0])
    assert np.allclose(sheet[0, 2, 2], 0.1) and np.allclose(sheet[0, 2, 10], 0.2)
    assert np.allclose(sheet[0, 14, 2], 0.5) and np.allclose(sheet[0, 14, 10], [1, 0, 0])
    auto = grid(batch, columns=0, spacing=0)
    assert auto.shape == (1, 2 * 4, 3 * 6, 3)
    small = grid(batch, columns=5, spacing=0, cell_width=3)
    assert small.shape == (1, 2, 15, 3)
    clear = grid(batch[:1], spacing=1, background="#00000000")
    assert clear.shape[-1] == 4 and clear[0, 0, 0, 3] == 0 and clear[0, 1, 1, 3] == 1


def test_join_batch_and_select():
    a = solid(4, 4, (0.1, 0.1, 0.1), n=2)
    b = solid(2, 2, (0.9, 0.9, 0.9, 1.0))
    both = join_batch(a, b)
    assert both.shape == (3, 4, 4, 3) and np.allclose(both[2], 0.9)
    assert np.allclose(select(both, start=-1), 0.9) and select(both, start=1, count=0).shape[0] == 2
    with pytest.raises(ValueError, match="outside the batch of 3"):
        select(both, start=3)


def test_an_empty_batch_is_a_clear_error():
    empty = np.zeros((0, 4, 6, 3), np.float32)
    with pytest.raises(ValueError, match=r"^'image': the input batch is empty$"):
        grid(empty)
    with pytest.raises(ValueError, match=r"^'image': the input batch is empty$"):
        grid(empty, cell_width=3)
    with pytest.raises(ValueError, match=r"^'second': the input batch is empty$"):
        join_batch(solid(2, 2, (0.5, 0.5, 0.5)), empty)
    with pytest.raises(ValueError, match=r"^'first': the input batch is empty$"):
        join_batch(empty, solid(4, 6, (0.5, 0.5, 0.5)))


def test_generators():
    img = solid_color(8, 4, "#ff8000")
    assert img.shape == (1, 4, 8, 3) and np.allclose(img[0, 0, 0], [1.0, 128 / 255, 0.0])
    assert solid_color(2, 2, "#ff800080").shape[-1] == 4
    lin = gradient(16, 8, "#000000", "#ffffff", GradientShape.LINEAR, angle=0)
    assert lin[0, 0, 0, 0] < 0.1 and lin[0, 0, -1, 0] > 0.9 and np.all(np.diff(lin[0, 0, :, 0]) >= 0)
    rad = gradient(16, 16, "#ffffff", "#000000", GradientShape.RADIAL)
    assert rad[0, 8, 8, 0] > 0.9 and rad[0, 0, 0, 0] < 0.1
