"""Latent-level nodes for power users: Empty Latent, Encode, Sample, Decode, Latent Blend.

Latents on the wires are in the model's space (already multiplied by the VAE scaling factor),
like a diffusers pipeline's `output_type="latent"`, and carry the family they belong to.
"""

from __future__ import annotations

import enum
from typing import Annotated

import numpy as np

from nodes.diffusion import tiling
from nodes.diffusion.generate import Guidance, Prompt, Steps
from nodes.diffusion.sampling import open_model, run_pipeline, task_pipeline
from nodes.diffusion.schedulers import Scheduler
from nodes.diffusion.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, Tiling
from nodes.registry import node
from nodes.types import Context, Help, Image, Latent, Mask, Model, Range, Seed

#: The VAE tiling ports Encode and Decode share, declared once with their help.
TilingMode = Annotated[Tiling, Help("auto tiles large images or when memory is short.")]
TileSize = Annotated[int, Range(64, 4096, step=64), Help("Tile side in pixels.")]
Overlap = Annotated[float, Range(0.0, 0.75, step=0.05),
                    Help("Fraction of a tile blended with its neighbours (hides seams).")]


def _check_family(latent: Latent, model: Model, node_title: str) -> None:
    if latent.family != model.family:
        raise ValueError(f"{node_title}: the latent belongs to a {latent.family} model but the model is "
                         f"{model.family}; decode and re-encode to switch families")


@node("imagebash.diffusion.empty_latent", version=1, title="Empty Latent", category="diffusion/latent")
def empty_latent(model: Model, width: Annotated[int, Range(64, 4096, step=8)] = 512,
                 height: Annotated[int, Range(64, 4096, step=8)] = 512,
                 batch_size: Annotated[int, Range(1, 64)] = 1) -> Latent:
    """A blank latent of a size, the starting point of Sample at denoise 1."""
    import torch

    if width % 8 or height % 8:
        raise ValueError(f"width and height must be multiples of 8 (got {width}x{height})")
    return Latent(torch.zeros(batch_size, 4, height // 8, width // 8), model.family, 8)


@node("imagebash.diffusion.encode", version=1, title="Encode (VAE)", category="diffusion/latent", device="gpu")
def encode(model: Model, image: Image, tiling_mode: TilingMode = Tiling.AUTO, tile_size: TileSize = DEFAULT_TILE,
           tile_overlap: Overlap = DEFAULT_OVERLAP, ctx: Context = None) -> Latent:
    """Encode images into the model's latent space (tiled for large images)."""
    entry = open_model(ctx, model)
    z = tiling.encode(entry, image, tiling_mode.value, tile_size, tile_overlap, lambda m: ctx.log(m, "warning"))
    return Latent(z, model.family, tiling.vae_scale(entry.pipe.vae))


@node("imagebash.diffusion.decode", version=1, title="Decode (VAE)", category="diffusion/latent", device="gpu")
def decode(model: Model, latent: Latent, tiling_mode: TilingMode = Tiling.AUTO,
           tile_size: TileSize = DEFAULT_TILE, tile_overlap: Overlap = DEFAULT_OVERLAP, ctx: Context = None) -> Image:
    """Decode latents to images (tiled for large images, seams blended over the overlap)."""
    _check_family(latent, model, "Decode")
    entry = open_model(ctx, model)
    return tiling.decode(entry, latent.samples, tiling_mode.value, tile_size, tile_overlap,
                         lambda m: ctx.log(m, "warning"))


@node("imagebash.diffusion.sample", version=1, title="Sample", category="diffusion/latent", device="gpu")
def sample(model: Model, latent: Latent, prompt: Prompt = "", negative_prompt: Prompt = "",
           denoise: Annotated[float, Range(0.0, 1.0, step=0.01)] = 1.0, steps: Steps = 20,
           guidance: Guidance = 7.0, scheduler: Scheduler = Scheduler.EULER_A, seed: Seed = 0,
           ctx: Context = None) -> Latent:
    """Denoise a latent toward a prompt: denoise 1 starts from pure noise, less keeps structure.

    Args:
        latent: The latent to start from (its size sets the output size).
        denoise: How much noise to add before denoising (like img2img strength).
    """
    _check_family(latent, model, "Sample")
    entry = open_model(ctx, model)
    samples = latent.samples
    n, _c, h, w = samples.shape
    size = (w * latent.scale_factor, h * latent.scale_factor)
    common = dict(num_inference_steps=steps, guidance_scale=guidance,
                  negative_prompt=[negative_prompt] * n if negative_prompt else None)
    if denoise <= 0:
        return latent
    if denoise >= 1:
        out = run_pipeline(ctx, entry, task_pipeline(ctx, entry, "txt2img"), model, scheduler, size, n, seed,
                           prompt=prompt,
                           width=size[0], height=size[1], num_images_per_prompt=n,
                           **{**common, "negative_prompt": negative_prompt or None})
    else:
        out = run_pipeline(ctx, entry, task_pipeline(ctx, entry, "img2img"), model, scheduler, size, n, seed,
                           prompt=[prompt] * n, image=samples.to(entry.device, entry.pipe.unet.dtype),
                           strength=denoise, **common)
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
        raise ValueError(f"Latent Blend: cannot mix a {a.family} latent with a {b.family} latent")
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
