"""VAE encode/decode with automatic tiling, real tile size/overlap settings and one OOM retry.

diffusers 0.42 tiles through `vae.enable_tiling()` with the tile size in
`vae.tile_sample_min_size` (pixels), `tile_latent_min_size` (latents) and the seam blend in
`tile_overlap_factor`; neighbouring tiles are blended linearly over the overlap, so a tiled
decode differs from an untiled one only slightly (tests bound it). "auto" tiles above
`VAE_TILE_PIXELS` or when the estimated decode would not fit in half the free memory.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Any

import numpy as np

from app.engine import memory
from app.engine.families import get_family
from app.engine.models import Entry

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 0.25


class Tiling(str, enum.Enum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


def vae_scale(vae: Any) -> int:
    """Pixels per latent cell: from the block widths (SD/Flux VAEs) or the temporal-downsample list
    (Wan-style VAEs, as Qwen-Image's)."""
    cfg = vae.config
    if "block_out_channels" in cfg:
        return 2 ** (len(cfg.block_out_channels) - 1)
    return 2 ** len(cfg.get("temperal_downsample", (0, 0, 0)))


def settings_tile(ctx: Any) -> tuple[str, int, float]:
    """(mode, tile size, overlap) from the engine settings (GUI settings dialog)."""
    s = getattr(ctx, "settings", None)
    extra = getattr(s, "extra", {}) or {}
    return (getattr(s, "vae_tiling", "auto") or "auto", int(extra.get("vae_tile_size", DEFAULT_TILE)),
            float(extra.get("vae_tile_overlap", DEFAULT_OVERLAP)))


def configure_vae(vae: Any, tiled: bool, tile: int, overlap: float) -> None:
    if not tiled:
        vae.disable_tiling()
        return
    scale = vae_scale(vae)
    tile = max(scale * 4, int(tile) // scale * scale)
    vae.enable_tiling()
    overlap = min(max(float(overlap), 0.0), 0.75)
    if hasattr(vae, "tile_sample_min_height"):  # Wan-style VAEs: height/width and a stride
        vae.tile_sample_min_height = vae.tile_sample_min_width = tile
        stride = max(scale, int(tile * (1 - overlap)) // scale * scale)
        vae.tile_sample_stride_height = vae.tile_sample_stride_width = stride
        return
    vae.tile_sample_min_size = tile
    vae.tile_latent_min_size = tile // scale
    vae.tile_overlap_factor = overlap


def _decide(entry: Entry, mode: str, width: int, height: int, batch: int) -> bool:
    vae = entry.pipe.vae
    dtype_bytes = next(vae.parameters()).element_size()
    widest = max(vae.config.get("block_out_channels", None) or [vae.config.get("base_dim", 96) * 4])
    need = memory.vae_decode_bytes(width, height, batch, widest, dtype_bytes)
    return memory.vae_tiling(mode, entry.device, width, height, need)


@contextlib.contextmanager
def _vae_ready(vae: Any, tiled: bool, tile: int, overlap: float) -> Iterator[Any]:
    """Tiling set as asked and the dtype to run in: SDXL's VAE overflows in fp16 (force_upcast)."""
    import torch

    configure_vae(vae, tiled, tile, overlap)
    original = vae.dtype
    dtype = torch.float32 if original == torch.float16 and vae.config.get("force_upcast", False) else original
    if dtype != original:
        vae.to(dtype)
    try:
        yield dtype
    finally:
        if dtype != original:
            vae.to(original)


def decode(entry: Entry, latents: Any, mode: str = "auto", tile: int = DEFAULT_TILE,
           overlap: float = DEFAULT_OVERLAP, log: Any = print) -> np.ndarray:
    """Latents (model space, N x C x h x w) -> Image (N, H, W, 3) float32 in [0, 1]."""
    import torch

    fam = get_family(entry.family)
    vae = entry.pipe.vae
    scale = vae_scale(vae)
    n, _c, h, w = latents.shape
    tiled = _decide(entry, mode, w * scale, h * scale, n)

    def run(tiled: bool) -> np.ndarray:
        with entry.lock, torch.inference_mode(), _vae_ready(vae, tiled, tile, overlap) as dtype:
            z = fam.from_model_space(vae, latents.to(entry.device, dtype))
            out = fam.vae_decode(vae, z)
            return (out / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()

    return memory.with_oom_retry(lambda: run(tiled), lambda: run(True), entry.device, log, "VAE decode")


def encode(entry: Entry, image: np.ndarray, mode: str = "auto", tile: int = DEFAULT_TILE,
           overlap: float = DEFAULT_OVERLAP, log: Any = print) -> Any:
    """Image (N, H, W, C) -> latents in model space (mean of the posterior: deterministic)."""
    import torch

    fam = get_family(entry.family)
    vae = entry.pipe.vae
    scale = vae_scale(vae)
    img = np.asarray(image, np.float32)[..., :3]
    n, h, w, _ = img.shape
    if h % scale or w % scale:
        raise ValueError(f"image size {w}x{h} is not a multiple of {scale}: resize or crop it first")
    tiled = _decide(entry, mode, w, h, n)

    def run(tiled: bool) -> Any:
        with entry.lock, torch.inference_mode(), _vae_ready(vae, tiled, tile, overlap) as dtype:
            x = torch.from_numpy(img).permute(0, 3, 1, 2).to(entry.device, dtype) * 2 - 1
            z = fam.to_model_space(vae, fam.vae_encode(vae, x))
            return z.to(getattr(entry.pipe, fam.denoiser).dtype)

    return memory.with_oom_retry(lambda: run(tiled), lambda: run(True), entry.device, log, "VAE encode")
