"""Sample images during training: fixed prompts and seed, the sampler users will actually run.

Samples drawn with another sampler than the Text to Image node's default look different from
what the user later gets, so the scheduler comes from `sampler_scheduler`, the same place the
node takes its default from. Images are written as PNG beside the checkpoints:
`samples/step_000050_0.png`.
"""

from __future__ import annotations

import pathlib
from typing import Any


def sampler_scheduler(pipe: Any) -> Any:
    """The scheduler the Text to Image node uses by default, configured for this pipeline."""
    import inspect

    from nodes.diffusion.generate import txt2img
    from nodes.diffusion.schedulers import make_scheduler

    fn = getattr(txt2img, "__wrapped__", txt2img)
    default = inspect.signature(fn).parameters["scheduler"].default
    return make_scheduler(default, dict(pipe.scheduler.config))


def render_samples(pipe: Any, prompts: list[str], *, seed: int, steps: int, size: tuple[int, int],
                   folder: pathlib.Path, step: int, device: str) -> list[pathlib.Path]:
    """Render one image per prompt at `size` (w, h) with `seed`; returns the written files."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    unet = pipe.unet
    was_training = unet.training
    original = pipe.scheduler
    pipe.scheduler = sampler_scheduler(pipe)
    unet.eval()
    written = []
    try:
        for i, prompt in enumerate(prompts):
            gen = torch.Generator("cpu").manual_seed(seed)
            with torch.no_grad():
                image = pipe(prompt, num_inference_steps=steps, width=size[0], height=size[1], generator=gen,
                             output_type="pil").images[0]
            path = folder / f"step_{step:06d}_{i}.png"
            image.save(path)
            written.append(path)
    finally:
        pipe.scheduler = original
        unet.train(was_training)
    return written
