"""Latent-level nodes for power users: Empty Latent, Encode, Sample, Decode, Latent Blend.

Latents on the wires are in the model's space (the VAE's latents scaled, shifted or normalised
as the family says), unpacked to (N, C, h, w) for every family (Flux's and Qwen's pipelines
pack them into patch sequences internally), and carry the family they belong to: two families'
latents never mix.
"""

from __future__ import annotations

import enum
from typing import Annotated

import numpy as np

from app.engine.families import get_family
from nodes.diffusion import tiling
from nodes.diffusion.generate import Guidance, Prompt, Shift, Steps, sample_latents
from nodes.diffusion.sampling import check_size, describe, open_model
from nodes.diffusion.schedulers import Scheduler
from nodes.diffusion.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, Tiling
from nodes.registry import node
from nodes.types import Context, Help, Image, Latent, Mask, Model, Range, Seed

#: The VAE tiling ports Encode and Decode share, declared once with their help.
TilingMode = Annotated[Tiling, Help("auto tiles large images or when memory is short.")]
TileSize = Annotated[int, Range(64, 4096, step=64), Help("Tile side in pixels.")]
Overlap = Annotated[float, Range(0.0, 0.75, step=0.05),
                    Help("Fraction of a tile blended with its neighbours (hides seams).")]


def _title(name: str) -> str:
    try:
        return get_family(name).title
    except KeyError:
        return name


def _check_family(latent: Latent, model: Model, node_title: str) -> None:
    if latent.family != model.family:
        raise ValueError(f"{node_title}: the latent belongs to a {_title(latent.family)} model but the model is "
                         f"{_title(model.family)}; decode and re-encode to switch families")


@node("imagebash.diffusion.empty_latent", version=1, title="Empty Latent", category="diffusion/latent")
def empty_latent(model: Model, width: Annotated[int, Range(64, 4096, step=8)] = 512,
                 height: Annotated[int, Range(64, 4096, step=8)] = 512,
                 batch_size: Annotated[int, Range(1, 64)] = 1) -> Latent:
    """A blank latent of a size, in the model family's latent layout; the starting point of Sample
    at denoise 1."""
    import torch

    fam = get_family(model.family)
    check_size(width, height, fam.size_multiple)
    scale = fam.latent_scale
    return Latent(torch.zeros(batch_size, fam.latent_channels, height // scale, width // scale), model.family, scale)


@node("imagebash.diffusion.encode", version=1, title="Encode (VAE)", category="diffusion/latent", device="gpu")
def encode(model: Model, image: Image, tiling_mode: TilingMode = Tiling.AUTO, tile_size: TileSize = DEFAULT_TILE,
           tile_overlap: Overlap = DEFAULT_OVERLAP, ctx: Context = None) -> Latent:
    """Encode images into the model's latent space (tiled for large images)."""
    entry = open_model(ctx, model)
    describe(ctx, entry)
    z = tiling.encode(entry, image, tiling_mode.value, tile_size, tile_overlap, lambda m: ctx.log(m, "warning"))
    return Latent(z, model.family, tiling.vae_scale(entry.pipe.vae))


@node("imagebash.diffusion.decode", version=1, title="Decode (VAE)", category="diffusion/latent", device="gpu")
def decode(model: Model, latent: Latent, tiling_mode: TilingMode = Tiling.AUTO,
           tile_size: TileSize = DEFAULT_TILE, tile_overlap: Overlap = DEFAULT_OVERLAP, ctx: Context = None) -> Image:
    """Decode latents to images (tiled for large images, seams blended over the overlap)."""
    _check_family(latent, model, "Decode")
    entry = open_model(ctx, model)
    describe(ctx, entry)
    return tiling.decode(entry, latent.samples, tiling_mode.value, tile_size, tile_overlap,
                         lambda m: ctx.log(m, "warning"))


@node("imagebash.diffusion.sample", version=1, title="Sample", category="diffusion/latent", device="gpu")
def sample(model: Model, latent: Latent, prompt: Prompt = "", negative_prompt: Prompt = "",
           denoise: Annotated[float, Range(0.0, 1.0, step=0.01)] = 1.0, steps: Steps = 0,
           guidance: Guidance = 0.0, scheduler: Scheduler = Scheduler.AUTO, shift: Shift = 0.0, seed: Seed = 0,
           ctx: Context = None) -> Latent:
    """Denoise a latent toward a prompt: denoise 1 starts from pure noise, less keeps structure.

    Args:
        latent: The latent to start from (its size sets the output size).
        denoise: How much noise to add before denoising (like img2img strength).
    """
    _check_family(latent, model, "Sample")
    samples = latent.samples
    n, _c, h, w = samples.shape
    size = (w * latent.scale_factor, h * latent.scale_factor)
    if denoise <= 0:
        return latent
    if denoise >= 1:
        entry, out = sample_latents(ctx, model, "txt2img", size, n, seed, scheduler, shift, prompt, negative_prompt,
                             steps, guidance, width=size[0], height=size[1], num_images_per_prompt=n)
    else:
        entry = open_model(ctx, model)
        image = samples.to(entry.device, getattr(entry.pipe, get_family(model.family).denoiser).dtype)
        entry, out = sample_latents(ctx, model, "img2img", size, n, seed, scheduler, shift, [prompt] * n,
                             [negative_prompt] * n if negative_prompt else None, steps, guidance, image=image,
                             strength=denoise, width=size[0], height=size[1])
    return Latent(out, model.family, latent.scale_factor)


class BlendMode(str, enum.Enum):
    LINEAR = "linear"
    SLERP = "slerp"


@node("imagebash.diffusion.latent_blend", version=1, title="Latent Blend", category="diffusion/latent")
def latent_blend(a: Latent, b: Latent, factor: Annotated[float, Range(0.0, 1.0, step=0.01)] = 0.5,
                 mode: BlendMode = BlendMode.LINEAR, mask: Mask | None = None) -> Latent:
    """Mix two latents (two prompts, two LoRA styles): 0 gives `a`, 1 gives `b`.

    Args:
        factor: Share of `b`.
        mode: linear mixes values; slerp keeps the latents' norm (less washed-out halfway).
        mask: Optional image-size mask: `factor` applies where it is 1, `a` is kept where it is 0.
    """
    import torch

    if a.family != b.family:
        raise ValueError(f"Latent Blend: cannot mix a {_title(a.family)} latent with a {_title(b.family)} latent")
    x, y = a.samples, b.samples.to(a.samples.device, a.samples.dtype)
    if x.shape != y.shape:
        raise ValueError(f"Latent Blend: sizes differ ({tuple(x.shape)} vs {tuple(y.shape)})")
    t = torch.full((x.shape[0], 1, 1, 1), float(factor), dtype=torch.float32)
    if mask is not None:
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[:, None]
        m = torch.nn.functional.interpolate(m, size=x.shape[-2:], mode="area")
        t = t * (m if m.shape[0] in (1, x.shape[0]) else m[:1])
    t = t.to(x.device)
    if mode is BlendMode.SLERP:
        xf, yf = x.float().flatten(1), y.float().flatten(1)
        cos = (xf * yf).sum(1) / (xf.norm(dim=1) * yf.norm(dim=1)).clamp_min(1e-8)
        omega = torch.arccos(cos.clamp(-1 + 1e-6, 1 - 1e-6)).view(-1, 1, 1, 1)
        so = torch.sin(omega)
        out = (torch.sin((1 - t) * omega) / so) * x.float() + (torch.sin(t * omega) / so) * y.float()
    else:
        out = x.float() * (1 - t) + y.float() * t
    return Latent(out.to(x.dtype), a.family, a.scale_factor)
