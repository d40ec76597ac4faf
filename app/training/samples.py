"""Sample images during training: fixed prompts and seed, the sampler users will actually run.

Samples drawn with another sampler or guidance than the Text to Image node's defaults look
different from what the user later gets, so both are read from the node's signature. Under mixed
precision the U-Net and text encoders run in fp16/bf16 while the VAE stays float32 (SDXL's VAE
overflows in fp16), so the pipeline stops at latents and the VAE decodes them in its own dtype.
Images are written as PNG beside the checkpoints: `samples/step_000050_0.png`.
"""

from __future__ import annotations

import pathlib
from typing import Any


def node_default(name: str) -> Any:
    """The default of the Text to Image node's parameter `name`."""
    import inspect

    from nodes.diffusion.generate import txt2img

    fn = getattr(txt2img, "__wrapped__", txt2img)
    return inspect.signature(fn).parameters[name].default


def sampler_scheduler(pipe: Any) -> Any:
    """The scheduler the Text to Image node uses by default, configured for this pipeline."""
    from nodes.diffusion.schedulers import make_scheduler

    return make_scheduler(node_default("scheduler"), dict(pipe.scheduler.config))


def decode(pipe: Any, latents: Any) -> Any:
    """PIL images from the pipeline's raw latents, decoded by the VAE in the VAE's dtype."""
    vae = pipe.vae
    latents = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        latents = latents + shift
    return pipe.image_processor.postprocess(vae.decode(latents).sample, output_type="pil")


def render_samples(pipe: Any, prompts: list[str], *, seed: int, steps: int, size: tuple[int, int],
                   folder: pathlib.Path, step: int, device: str) -> list[pathlib.Path]:
    """Render one image per prompt at `size` (w, h) with `seed`; returns the written files."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    unet = pipe.unet
    was_training = unet.training
    original = pipe.scheduler
    pipe.scheduler = sampler_scheduler(pipe)
    guidance = float(node_default("guidance"))
    if guidance <= 0:  # "the model's default", as the node reads it
        from app.engine.families import family_of_pipeline

        guidance = family_of_pipeline(pipe).variants[0].guidance
    unet.eval()
    written = []
    try:
        for i, prompt in enumerate(prompts):
            gen = torch.Generator("cpu").manual_seed(seed)
            with torch.no_grad():
                latents = pipe(prompt, num_inference_steps=steps, width=size[0], height=size[1],
                               guidance_scale=guidance, generator=gen, output_type="latent").images
                image = decode(pipe, latents)[0]
            path = folder / f"step_{step:06d}_{i}.png"
            image.save(path)
            written.append(path)
    finally:
        pipe.scheduler = original
        unet.train(was_training)
    return written
