"""A cheap latent -> RGB preview for progress events: one linear projection, no VAE.

The factors are the widely used approximations for the SD 1.x/2.x and SDXL latent spaces; the
preview is 1/8 of the image size, which is what a progress thumbnail needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_FACTORS = {
    "sd": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
              [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}


def latent_preview(latents: Any, family: str) -> np.ndarray:
    """(1, h, w, 3) float32 in [0, 1] from the first latent of a (N, 4, h, w) tensor."""
    factors, bias = _FACTORS["sdxl" if family == "sdxl" else "sd"]
    x = latents[0].detach().float().cpu().numpy()  # (4, h, w)
    if x.shape[0] != 4:
        x = x[:4] if x.shape[0] > 4 else np.pad(x, ((0, 4 - x.shape[0]), (0, 0), (0, 0)))
    rgb = np.einsum("chw,cr->hwr", x, np.asarray(factors, np.float32)) + np.asarray(bias, np.float32)
    return np.clip((rgb + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)[None]
