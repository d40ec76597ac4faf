"""Blend modes and Composite on real pixels."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.image.blend import BlendMode, blend
from nodes.image.composite import composite
from tests.image.helpers import solid

# (mode, result for base 0.2 / layer 0.6, result for base 0.7 / layer 0.3), worked out by hand
EXPECTED = [
    (BlendMode.NORMAL, 0.6, 0.3),
    (BlendMode.MULTIPLY, 0.12, 0.21),
    (BlendMode.SCREEN, 0.68, 0.79),
    (BlendMode.OVERLAY, 0.24, 0.58),
    (BlendMode.SOFT_LIGHT, 0.2496, 0.616),
    (BlendMode.HARD_LIGHT, 0.36, 0.42),
    (BlendMode.DIFFERENCE, 0.4, 0.4),
    (BlendMode.ADD, 0.8, 1.0),
    (BlendMode.SUBTRACT, 0.0, 0.4),
    (BlendMode.LIGHTEN, 0.6, 0.7),
    (BlendMode.DARKEN, 0.2, 0.3),
    (BlendMode.COLOR_DODGE, 0.5, 1.0),
    (BlendMode.COLOR_BURN, 0.0, 0.0),
]


@pytest.mark.parametrize("mode,first,second", EXPECTED, ids=[m.value for m, _, _ in EXPECTED])
def test_every_mode_matches_its_formula(mode, first, second):
    base = np.concatenate([solid(2, 2, (0.2,) * 3), solid(2, 2, (0.7,) * 3)], axis=2)
    layer = np.concatenate([solid(2, 2, (0.6,) * 3), solid(2, 2, (0.3,) * 3)], axis=2)
    out = blend(base, layer, mode)
    assert out.dtype == np.float32 and out.shape == (1, 2, 4, 3)
    assert np.allclose(out[0, :, :2], first, atol=1e-5)
    assert np.allclose(out[0, :, 2:], second, atol=1e-5)


def test_all_modes_stay_in_range_on_noise(rng):
    a, b = rng.random((1, 16, 16, 3), dtype=np.float32), rng.random((1, 16, 16, 3), dtype=np.float32)
    a[0, 0, 0] = 0.0
    b[0, 0, 1] = 1.0
    for mode in BlendMode:
        out = blend(a, b, mode)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, mode


def test_opacity_mixes_linearly():
    out = blend(solid(2, 2, (0.2, 0.4, 0.6)), solid(2, 2, (1.0, 1.0, 1.0)), BlendMode.NORMAL, opacity=0.25)
    assert np.allclose(out, [0.4, 0.55, 0.7])


def test_mask_limits_the_layer():
    mask = np.zeros((1, 4, 4), np.float32)
    mask[:, :, :2] = 1.0
    out = blend(solid(4, 4, (0.0, 0.0, 0.0)), solid(4, 4, (1.0, 0.5, 0.0)), BlendMode.SCREEN, mask=mask)
    assert np.allclose(out[0, :, :2], [1.0, 0.5, 0.0]) and np.allclose(out[0, :, 2:], 0.0)


def test_layer_alpha_limits_the_layer_and_base_keeps_its_channels():
    layer = solid(4, 4, (1.0, 1.0, 1.0, 0.5))
    out = blend(solid(4, 4, (0.0, 0.0, 0.0)), layer)
    assert out.shape[-1] == 3 and np.allclose(out, 0.5)


def test_transparent_base_shows_the_layer_itself():
    base = solid(2, 2, (0.0, 0.0, 1.0, 0.0))  # fully transparent blue
    out = blend(base, solid(2, 2, (0.6, 0.6, 0.6)), BlendMode.MULTIPLY)
    assert out.shape[-1] == 4
    assert np.allclose(out[..., :3], 0.6) and np.allclose(out[..., 3], 1.0)


def test_layer_of_another_size_is_stretched():
    layer = np.zeros((1, 2, 2, 3), np.float32)
    layer[0, :, 1] = 1.0  # right half white
    out = blend(solid(8, 8, (0.0, 0.0, 0.0)), layer)
    assert out.shape == (1, 8, 8, 3)
    assert out[0, :, :2].max() < 0.05 and out[0, :, 6:].min() > 0.95


def test_batches_broadcast_one_against_n(ctx):
    base = np.stack([np.full((4, 4, 3), v, np.float32) for v in (0.1, 0.2, 0.3)])
    out = blend(base, solid(4, 4, (1.0, 1.0, 1.0)), BlendMode.MULTIPLY, ctx=ctx)
    assert out.shape[0] == 3 and np.allclose(out[:, 0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="'base' has 3 and 'layer' has 2"):
        blend(base, base[:2])


def test_composite_places_and_clips():
    base = solid(10, 10, (0.0, 0.0, 0.0))
    layer = solid(4, 4, (1.0, 0.0, 0.0))
    out = composite(base, layer, x=8, y=-2)
    assert out.shape == base.shape
    red = out[0, ..., 0] > 0.5
    assert red.sum() == 2 * 2 and red[0:2, 8:10].all()


def test_composite_through_mask_and_alpha():
    base = solid(6, 6, (0.0, 0.0, 0.0))
    layer = solid(4, 4, (1.0, 1.0, 1.0, 0.5))
    mask = np.zeros((1, 4, 4), np.float32)
    mask[0, :2] = 1.0
    out = composite(base, layer, x=1, y=1, mask=mask)
    assert np.allclose(out[0, 1:3, 1:5], 0.5) and np.allclose(out[0, 3:5, 1:5], 0.0)
    assert np.allclose(out[0, 0], 0.0) and np.allclose(out[0, :, 5], 0.0)


def test_composite_outside_leaves_base():
    base = solid(4, 4, (0.3, 0.3, 0.3))
    assert np.array_equal(composite(base, solid(2, 2, (1.0, 1.0, 1.0)), x=10, y=10), base)
