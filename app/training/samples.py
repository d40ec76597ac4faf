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


def sampler_scheduler(pipe: Any, family: Any = None) -> Any:
    """The scheduler the Text to Image node uses by default, configured for this pipeline."""
    from app.engine.families import family_of_pipeline
    from nodes.diffusion.schedulers import make_scheduler

    fam = family or family_of_pipeline(pipe)
    return make_scheduler(node_default("scheduler"), dict(pipe.scheduler.config), flow=fam.flow_matching,
                          family=fam.title)


def decode(pipe: Any, latents: Any, family: str | None = None) -> Any:
    """PIL images from model-space latents (N, C, h, w), decoded by the VAE in the VAE's dtype."""
    from app.engine.families import family_of_pipeline, get_family

    fam = get_family(family) if family else family_of_pipeline(pipe)
    vae = pipe.vae
    z = fam.from_model_space(vae, latents.to(device=vae.device, dtype=vae.dtype))
    return pipe.image_processor.postprocess(fam.vae_decode(vae, z), output_type="pil")


def render_samples(pipe: Any, prompts: list[str], *, seed: int, steps: int, size: tuple[int, int],
                   folder: pathlib.Path, step: int, device: str, family: str | None = None) -> list[pathlib.Path]:
    """Render one image per prompt at `size` (w, h) with `seed`, as the Text to Image node would
    with its defaults (sampler, the family's guidance); returns the written files."""
    import torch

    from app.engine.families import family_of_pipeline, get_family

    fam = get_family(family) if family else family_of_pipeline(pipe)
    folder.mkdir(parents=True, exist_ok=True)
    den = getattr(pipe, fam.denoiser)
    was_training = den.training
    original = pipe.scheduler
    pipe.scheduler = sampler_scheduler(pipe, fam)
    guidance = float(node_default("guidance"))
    if guidance <= 0:  # "the model's default", as the node reads it
        guidance = fam.variants[0].guidance
    den.eval()
    written = []
    try:
        for i, prompt in enumerate(prompts):
            gen = torch.Generator("cpu").manual_seed(seed)
            kwargs = fam.call_kwargs(fam.variants[0].name, prompt=prompt, negative_prompt=None, guidance=guidance,
                                     steps=steps)
            with torch.no_grad():
                latents = pipe(width=size[0], height=size[1], generator=gen, output_type="latent",
                               **{k: v for k, v in kwargs.items() if v is not None}).images
                image = decode(pipe, fam.unpack(pipe, latents, size[0], size[1]), fam.name)[0]
            path = folder / f"step_{step:06d}_{i}.png"
            image.save(path)
            written.append(path)
    finally:
        pipe.scheduler = original
        den.train(was_training)
    return written
