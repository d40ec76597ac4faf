"""Regional prompts: a prompt that applies only inside a mask, combined into one sampling.

As ComfyUI's ConditioningSetMask / SetArea do, each region's prompt gets its own prediction of the
noise at every step, and the predictions are averaged per latent pixel, weighted by the masks
(times their strengths) with the main prompt weighing 1 everywhere; the unconditional half of
classifier-free guidance stays the negative prompt's. Done by wrapping the shared U-Net's forward
for the length of one sampling call (under the model's lock), so LoRAs, ControlNets and
IP-Adapters apply to every region alike. SD 1.x/2.x/XL for now: the transformer families' text
tokens are joined with the image's, which needs another mechanism.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated, Any

import numpy as np

from app.engine.families import get_family
from nodes.registry import node
from nodes.types import Context, Help, Mask, Model, Multiline, Range, RegionRef


@node("imagebash.guidance.regional_prompt", version=1, title="Regional Prompt", category="guidance")
def regional_prompt(model: Model, mask: Mask, prompt: Annotated[str, Multiline()] = "",
                    strength: Annotated[float, Range(0.0, 4.0, step=0.05),
                                        Help("weight against the main prompt inside the mask")] = 1.0,
                    ctx: Context = None) -> Model:
    """Add a prompt that applies where the mask is white (chain several for several regions).

    Args:
        mask: Where this prompt applies; soft edges blend with the main prompt. Any size: it is
            scaled to the sampled image.
        prompt: What to draw there.
        strength: 1 weighs it like the main prompt inside the mask; more lets it dominate.
    """
    fam = get_family(model.family)
    if fam.denoiser != "unet":
        raise ValueError(f"Regional Prompt: {fam.title} is not supported yet (SD 1.x, 2.x and XL are)")
    if not prompt.strip():
        raise ValueError("Regional Prompt: write the prompt for the region")
    m = np.asarray(mask, np.float32)
    m = m.max(axis=0) if m.ndim == 3 else m
    if float(m.max(initial=0.0)) <= 0.0:
        raise ValueError("Regional Prompt: the mask covers nothing (all black)")
    digest = hashlib.blake2b(np.ascontiguousarray(m).tobytes(), digest_size=8).hexdigest()
    return replace(model, regions=(*model.regions, RegionRef(prompt.strip(), float(strength), digest,
                                                             np.ascontiguousarray(m))))


def _slice(value: Any, part: slice, n: int) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n:
        return value[part]
    if isinstance(value, dict):
        return {k: _slice(v, part, n) for k, v in value.items()}
    return value


@contextlib.contextmanager
def regions_active(pipe: Any, regions: list[RegionRef], size: tuple[int, int], device: str) -> Iterator[None]:
    """While active, the pipeline's U-Net predicts each region's prompt inside its mask."""
    import torch

    if not regions:
        yield
        return
    unet = pipe.unet
    width, height = size
    scale = pipe.vae_scale_factor
    h, w = height // scale, width // scale
    embeds, weights = [], []
    with torch.no_grad():
        for r in regions:
            e = pipe.encode_prompt(prompt=r.prompt, device=device, num_images_per_prompt=1,
                                   do_classifier_free_guidance=False)[0]
            embeds.append(e)
            m = torch.from_numpy(r.mask)[None, None].float()
            weights.append(torch.nn.functional.interpolate(m, size=(h, w), mode="area").to(device) * r.strength)
    patched_before = "forward" in unet.__dict__
    original = unet.forward

    def forward(sample: Any, timestep: Any, encoder_hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(sample, timestep, encoder_hidden_states, *args, **kwargs)
        pred = out[0] if isinstance(out, tuple) else out.sample
        n = sample.shape[0]
        start = n // 2 if getattr(pipe, "do_classifier_free_guidance", False) else 0  # the conditional half
        cond = slice(start, n)
        b = n - start
        total = pred[cond] * 1.0
        weight = torch.ones_like(weights[0])
        for emb, wr in zip(embeds, weights, strict=True):
            region = original(sample[cond], _slice(timestep, cond, n),
                              emb.to(encoder_hidden_states.dtype).expand(b, -1, -1), *args,
                              **{k: _slice(v, cond, n) for k, v in kwargs.items()})
            region = region[0] if isinstance(region, tuple) else region.sample
            total = total + region * wr
            weight = weight + wr
        pred = torch.cat([pred[:start], total / weight]) if start else total / weight
        return (pred,) if isinstance(out, tuple) else type(out)(sample=pred)

    unet.forward = forward
    try:
        yield
    finally:
        if patched_before:
            unet.forward = original
        else:
            del unet.forward  # back to the class's forward
