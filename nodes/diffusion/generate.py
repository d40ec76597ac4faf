"""Text to Image, Image to Image and Inpaint: the one-node ways to sample a model.

Each samples latents through the matching diffusers pipeline (sharing the base pipeline's
weights), then decodes with the tiling policy, so a large image never needs a separate node.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from nodes.diffusion import tiling
from nodes.diffusion.sampling import (
    check_size,
    open_model,
    run_pipeline,
    task_pipeline,
    to_tensor,
)
from nodes.diffusion.schedulers import Scheduler
from nodes.registry import node
from nodes.types import Context, Image, Mask, Model, Multiline, Range, Seed

Prompt = Annotated[str, Multiline()]
Steps = Annotated[int, Range(1, 200)]
Guidance = Annotated[float, Range(0.0, 30.0, step=0.5)]
Size = Annotated[int, Range(64, 4096, step=8)]
Batch = Annotated[int, Range(1, 64)]


def _decode(ctx: Context, entry, latents) -> np.ndarray:
    mode, tile, overlap = tiling.settings_tile(ctx)
    return tiling.decode(entry, latents, mode, tile, overlap, lambda m: ctx.log(m, "warning"))


@node("imagebash.diffusion.txt2img", version=1, title="Text to Image", category="diffusion", device="gpu")
def txt2img(model: Model, prompt: Prompt = "", negative_prompt: Prompt = "",
            width: Size = 512, height: Size = 512, steps: Steps = 20, guidance: Guidance = 7.0,
            scheduler: Scheduler = Scheduler.EULER_A, seed: Seed = 0, batch_size: Batch = 1,
            ctx: Context = None) -> Image:
    """Generate images from a prompt with the model and its LoRA stack.

    Args:
        prompt: What to draw.
        negative_prompt: What to steer away from.
        steps: Denoising steps.
        guidance: Classifier-free guidance scale (how strongly to follow the prompt).
        seed: Image i of the batch uses seed + i, so any image can be reproduced alone.
        batch_size: Images to generate.
    """
    check_size(width, height)
    entry = open_model(ctx, model)
    latents = run_pipeline(ctx, entry, task_pipeline(ctx, entry, "txt2img"), model, scheduler, (width, height),
                           batch_size, seed, prompt=prompt, negative_prompt=negative_prompt or None, width=width,
                           height=height, num_inference_steps=steps, guidance_scale=guidance,
                           num_images_per_prompt=batch_size)
    return _decode(ctx, entry, latents)


@node("imagebash.diffusion.img2img", version=1, title="Image to Image", category="diffusion", device="gpu")
def img2img(model: Model, image: Image, prompt: Prompt = "", negative_prompt: Prompt = "",
            strength: Annotated[float, Range(0.0, 1.0, step=0.01)] = 0.6, steps: Steps = 20,
            guidance: Guidance = 7.0, scheduler: Scheduler = Scheduler.EULER_A, seed: Seed = 0,
            batch_size: Batch = 1, ctx: Context = None) -> Image:
    """Restyle an image: noise it by `strength`, then denoise toward the prompt.

    Args:
        image: The source image(s); sides must be multiples of 8.
        strength: 0 keeps the image, 1 ignores it.
        batch_size: Variations per input image.
    """
    entry = open_model(ctx, model)
    mode, tile, overlap = tiling.settings_tile(ctx)
    latents = tiling.encode(entry, image, mode, tile, overlap, lambda m: ctx.log(m, "warning"))
    n, h, w = image.shape[0], image.shape[1], image.shape[2]
    if strength <= 0:
        return _decode(ctx, entry, latents.repeat_interleave(batch_size, 0))
    out = run_pipeline(ctx, entry, task_pipeline(ctx, entry, "img2img"), model, scheduler, (w, h),
                       n * batch_size, seed,
                       prompt=[prompt] * n, negative_prompt=[negative_prompt] * n if negative_prompt else None,
                       image=latents, strength=strength, num_inference_steps=steps,
                       guidance_scale=guidance, num_images_per_prompt=batch_size)
    return _decode(ctx, entry, out)


@node("imagebash.diffusion.inpaint", version=1, title="Inpaint", category="diffusion", device="gpu")
def inpaint(model: Model, image: Image, mask: Mask, prompt: Prompt = "", negative_prompt: Prompt = "",
            strength: Annotated[float, Range(0.0, 1.0, step=0.01)] = 1.0, steps: Steps = 20,
            guidance: Guidance = 7.0, scheduler: Scheduler = Scheduler.EULER_A, seed: Seed = 0,
            batch_size: Batch = 1, ctx: Context = None) -> Image:
    """Repaint the masked part of an image (white = repaint); pixels outside the mask are kept.

    Args:
        image: The image to repaint; sides must be multiples of 8.
        mask: Where to repaint (1) and where to keep (0); soft edges blend.
        strength: How much of the masked area's content is replaced.
    """
    n, h, w = image.shape[:3]
    check_size(w, h)
    if mask.shape[1:] != (h, w):
        raise ValueError(f"mask is {mask.shape[2]}x{mask.shape[1]} but the image is {w}x{h}")
    m = np.broadcast_to(mask, (n, h, w)) if mask.shape[0] == 1 else mask
    if m.shape[0] != n:
        raise ValueError(f"mask batch {mask.shape[0]} does not match image batch {n}")
    entry = open_model(ctx, model)
    pipe = task_pipeline(ctx, entry, "inpaint")
    out = run_pipeline(ctx, entry, pipe, model, scheduler, (w, h), n * batch_size, seed,
                       prompt=[prompt] * n, negative_prompt=[negative_prompt] * n if negative_prompt else None,
                       image=to_tensor(image), mask_image=to_tensor(np.ascontiguousarray(m)[..., None])[:, :1],
                       strength=strength, height=h, width=w, num_inference_steps=steps,
                       guidance_scale=guidance, num_images_per_prompt=batch_size)
    result = _decode(ctx, entry, out)
    src = np.tile(image[..., :3], (batch_size, 1, 1, 1))  # diffusers orders a batch image-major
    keep = np.tile(m, (batch_size, 1, 1))[..., None]
    return (src * (1.0 - keep) + result * keep).astype(np.float32)
