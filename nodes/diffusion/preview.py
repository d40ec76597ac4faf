"""A cheap latent -> RGB preview for progress events: one linear projection, no VAE.

A family declares its projection factors (the widely used approximations for SD 1.x/2.x and
SDXL); a family without them gets its first three channels, each stretched to its own range,
which shows composition, not colour. The preview is 1/8 of the image size, which is what a
progress thumbnail needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def latent_preview(latents: Any, factors: tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]) -> np.ndarray:
    """(1, h, w, 3) float32 in [0, 1] from the first latent of a (N, C, h, w) tensor."""
    matrix, bias = factors
    x = latents[0].detach().float().cpu().numpy()  # (C, h, w)
    if not matrix:
        rgb = np.moveaxis(x[:3] if x.shape[0] >= 3 else np.repeat(x[:1], 3, 0), 0, -1)
        lo, hi = rgb.min(axis=(0, 1)), rgb.max(axis=(0, 1))
        return ((rgb - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)[None]
    n = len(matrix)
    if x.shape[0] != n:
        x = x[:n] if x.shape[0] > n else np.pad(x, ((0, n - x.shape[0]), (0, 0), (0, 0)))
    rgb = np.einsum("chw,cr->hwr", x, np.asarray(matrix, np.float32)) + np.asarray(bias, np.float32)
    return np.clip((rgb + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)[None]
