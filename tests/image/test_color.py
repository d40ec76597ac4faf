"""Color Adjust, Color Match, Invert and Grayscale on real pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nodes.image.color import MatchSpace, color_adjust, color_match, grayscale, invert
from tests.image.helpers import solid


def test_identity_settings_change_nothing(rng):
    img = rng.random((2, 8, 8, 3), dtype=np.float32)
    assert np.allclose(color_adjust(img), img, atol=1e-6)


def test_brightness_and_contrast():
    img = solid(2, 2, (0.2, 0.5, 0.9))
    assert np.allclose(color_adjust(img, brightness=0.1), [0.3, 0.6, 1.0])
    assert np.allclose(color_adjust(img, contrast=0.0), 0.5)
    assert np.allclose(color_adjust(img, contrast=2.0), [0.0, 0.5, 1.0])


def test_saturation_zero_is_grey_and_two_is_more_vivid():
    img = solid(2, 2, (0.8, 0.4, 0.2))
    grey = color_adjust(img, saturation=0.0)[0, 0, 0]
    assert np.allclose(grey, grey[0]) and np.isclose(grey[0], 0.2126 * 0.8 + 0.7152 * 0.4 + 0.0722 * 0.2, atol=1e-5)
    vivid = color_adjust(img, saturation=2.0)[0, 0, 0]
    assert vivid[0] - vivid[2] > 0.6 - 1e-6


def test_hue_rotation_turns_red_green():
    out = color_adjust(solid(2, 2, (1.0, 0.0, 0.0)), hue=120)
    assert np.allclose(out, [0.0, 1.0, 0.0], atol=1e-5)


def test_gamma_above_one_brightens_mid_tones():
    out = color_adjust(solid(1, 1, (0.25, 0.25, 0.25)), gamma=2.0)
    assert np.allclose(out, 0.5)


def test_alpha_passes_through_untouched():
    img = solid(2, 2, (0.2, 0.3, 0.4, 0.25))
    out = color_adjust(img, brightness=0.5, hue=40, saturation=0.0)
    assert out.shape[-1] == 4 and np.allclose(out[..., 3], 0.25)
    assert np.allclose(invert(img)[..., 3], 0.25) and np.allclose(grayscale(img)[..., 3], 0.25)


def _lab_stats(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    return lab.mean(0), lab.std(0)


def test_color_match_transfers_lab_statistics(rng):
    img = (0.3 + 0.2 * rng.random((1, 32, 32, 3))).astype(np.float32)
    ref = (rng.random((1, 24, 40, 3)) * np.array([0.6, 0.4, 0.3]) + np.array([0.4, 0.2, 0.1])).astype(np.float32)
    out = color_match(img, ref)
    assert out.shape == img.shape
    mo, so = _lab_stats(out[0])
    mr, sr = _lab_stats(ref[0])
    assert np.allclose(mo, mr, atol=1.5) and np.allclose(so, sr, rtol=0.1, atol=1.0)
    assert np.allclose(color_match(img, ref, strength=0.0), img, atol=1e-6)


def test_color_match_rgb_space_and_batches(rng):
    imgs = rng.random((3, 8, 8, 3), dtype=np.float32) * 0.5
    ref = solid(8, 8, (0.2, 0.6, 0.8)) + rng.random((1, 8, 8, 3), dtype=np.float32) * 0.1
    out = color_match(imgs, ref, space=MatchSpace.RGB)
    assert out.shape == (3, 8, 8, 3)
    assert np.allclose(out.mean(axis=(1, 2)), ref.mean(axis=(1, 2)), atol=0.02)
    with pytest.raises(ValueError, match="batch sizes do not match"):
        color_match(imgs, np.concatenate([ref, ref]))


def test_color_match_ignores_transparent_pixels():
    img = solid(4, 4, (0.5, 0.5, 0.5, 1.0))
    ref = solid(4, 4, (1.0, 0.0, 0.0, 0.0))
    ref[0, :2, :, :3] = (0.0, 0.0, 1.0)  # only the blue half is opaque
    ref[0, :2, :, 3] = 1.0
    out = color_match(img, ref, space=MatchSpace.RGB)
    assert np.allclose(out[0, 0, 0, :3], [0.0, 0.0, 1.0], atol=1e-4)


def test_invert_and_grayscale():
    img = solid(2, 2, (0.0, 0.5, 1.0))
    assert np.allclose(invert(img), [1.0, 0.5, 0.0])
    g = grayscale(img)
    assert g.shape == img.shape and np.allclose(g, 0.5 * 0.7152 + 0.0722)
