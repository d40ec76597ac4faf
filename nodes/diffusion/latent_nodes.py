"""Latent-level nodes for power users: Empty Latent, Encode, Sample, Decode, Latent Blend,
Latent Upscale and Latent Composite.

Latents on the wires are in the model's space (the VAE's latents scaled, shifted or normalised
as the family says), unpacked to (N, C, h, w) for every family (Flux's and Qwen's pipelines
pack them into patch sequences internally), and carry the family they belong to: two families'
latents never mix.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np

from app.engine.families import get_family
from nodes.diffusion import tiling
from nodes.diffusion.comfy_noise import NoiseMode, Schedule, comfy_noise, comfy_sigmas, model_sigmas
from nodes.diffusion.generate import Guidance, Prompt, Shift, Steps, sample_latents
from nodes.diffusion.sampling import check_size, describe, family_of, open_model
from nodes.diffusion.schedulers import (
    Sampler,
    Scheduler,
    custom_sigmas,
    patched,
    sampler_scheduler,
    standing_in,
    step_window,
    takes_custom_sigmas,
)
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


def noise_mask(latent: Latent) -> Any:
    """A latent's noise mask (torch (N, 1, H, W) in [0, 1], any size; 1 is denoised, 0 kept), or None."""
    return latent.noise_mask


def like(src: Latent, samples: Any, family: str | None = None, scale: int | None = None) -> Latent:
    """New samples in `src`'s place, keeping its noise mask (as ComfyUI's latent dict carries it)."""
    return Latent(samples, src.family if family is None else family,
                  src.scale_factor if scale is None else scale, noise_mask=src.noise_mask)


def _mask_tensor(mask: np.ndarray) -> Any:
    import torch

    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
    return m.reshape(-1, 1, m.shape[-2], m.shape[-1])


@node("imagebash.diffusion.set_noise_mask", version=1, title="Set Latent Noise Mask", category="diffusion/latent")
def set_noise_mask(latent: Latent, mask: Mask) -> Latent:
    """Sample denoises only where the mask is 1; elsewhere the latent is kept (ComfyUI's SetLatentNoiseMask).

    Args:
        mask: Image-size (or any size) mask; it is resized to the latent.
    """
    return Latent(latent.samples, latent.family, latent.scale_factor, noise_mask=_mask_tensor(mask))


@node("imagebash.diffusion.encode_for_inpaint", version=1, title="Encode for Inpaint (VAE)",
      category="diffusion/latent", device="gpu")
def encode_for_inpaint(model: Model, image: Image, mask: Mask,
                       grow_mask_by: Annotated[int, Range(0, 64), Help("Pixels the noise mask grows by (seams).")]
                       = 6, ctx: Context = None) -> Latent:
    """Encode an image for inpainting with a normal model, as ComfyUI's VAEEncodeForInpaint: the masked
    pixels become 0.5 grey before encoding, and the latent carries the (grown) mask as its noise mask.

    Args:
        mask: Where to repaint (1); rounded to 0 / 1.
    """
    import math

    import torch

    entry = open_model(ctx, model)
    describe(ctx, entry)
    mult = tiling.vae_scale(entry.pipe.vae)
    px = torch.from_numpy(np.array(image[..., :3], dtype=np.float32))
    h, w = px.shape[1] // mult * mult, px.shape[2] // mult * mult
    m = torch.nn.functional.interpolate(_mask_tensor(mask), size=tuple(px.shape[1:3]), mode="bilinear")
    if (h, w) != tuple(px.shape[1:3]):  # centre crop to the VAE's multiple, as ComfyUI
        oy, ox = (px.shape[1] % mult) // 2, (px.shape[2] % mult) // 2
        px, m = px[:, oy:oy + h, ox:ox + w], m[:, :, oy:oy + h, ox:ox + w]
    if grow_mask_by:
        kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
        grown = torch.clamp(torch.nn.functional.conv2d(m.round(), kernel, padding=math.ceil((grow_mask_by - 1) / 2)),
                            0, 1)[:, :, :h, :w]
    else:
        grown = m
    keep = (1.0 - m.round())[:, 0, :, :, None]
    if keep.shape[0] != px.shape[0]:
        keep = keep[:1] if keep.shape[0] > px.shape[0] else keep
    px = (px - 0.5) * keep + 0.5
    z = tiling.encode(entry, px.numpy(), Tiling.AUTO.value, DEFAULT_TILE, DEFAULT_OVERLAP,
                      lambda msg: ctx.log(msg, "warning"))
    return Latent(z, model.family, tiling.vae_scale(entry.pipe.vae), noise_mask=grown.round())


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


ClipSkip = Annotated[int, Range(0, 12),
                     Help("Text-encoder layers to skip from the end; 0 is off. A1111's Clip skip 2 and ComfyUI's "
                          "stop_at_clip_layer -2 are 1.")]
StepIndex = Annotated[int, Range(0, 10000)]
SizeCond = Annotated[int, Range(0, 16384, step=8)]


def _sdxl_conditioning(size: tuple[int, int], prompt_2: str, negative_2: str, original: tuple[int, int],
                       crop: tuple[int, int], target: tuple[int, int], aesthetic: float, negative_aesthetic: float,
                       n: int | None) -> dict[str, Any]:
    """The SDXL pipelines' second-encoder texts and micro-conditioning (original_size, crops_coords_top_left,
    target_size as (height, width) / (top, left), the refiner's aesthetic scores), only where set."""
    w, h = size
    out: dict[str, Any] = {}
    for key, text in (("prompt_2", prompt_2), ("negative_prompt_2", negative_2)):
        if text:
            out[key] = [text] * n if n is not None else text
    if original != (0, 0):
        out["original_size"] = (original[1] or h, original[0] or w)
    if crop != (0, 0):
        out["crops_coords_top_left"] = (crop[1], crop[0])
    if target != (0, 0):
        out["target_size"] = (target[1] or h, target[0] or w)
    if aesthetic != 6.0 or negative_aesthetic != 2.5:
        out.update(aesthetic_score=float(aesthetic), negative_aesthetic_score=float(negative_aesthetic))
    return out


@node("imagebash.diffusion.sample", version=1, title="Sample", category="diffusion/latent", device="gpu")
def sample(model: Model, latent: Latent, prompt: Prompt = "", negative_prompt: Prompt = "",
           denoise: Annotated[float, Range(0.0, 1.0, step=0.01)] = 1.0, steps: Steps = 0,
           guidance: Guidance = 0.0, scheduler: Scheduler = Scheduler.AUTO, shift: Shift = 0.0, seed: Seed = 0,
           start_step: Annotated[StepIndex, Help("First step of the schedule to run (0: from the start).")] = 0,
           end_step: Annotated[StepIndex, Help("Stop before this step (0: run to the end).")] = 0,
           add_noise: Annotated[bool, Help("Off: the latent is used as it is, already noisy at start_step.")] = True,
           leftover_noise: Annotated[bool, Help("Stopping early, return the still-noisy latent (for a next Sample "
                                                "with add_noise off) instead of the denoised one.")] = False,
           clip_skip: ClipSkip = 0,
           sampler: Annotated[Sampler, Help("ComfyUI's sampler_name; auto: the class `scheduler` gives.")]
           = Sampler.AUTO,
           schedule: Annotated[Schedule, Help("ComfyUI's scheduler (sigma spacing); default: the diffusers "
                                              "scheduler's own.")] = Schedule.DEFAULT,
           noise: Annotated[NoiseMode, Help("imagebash: one generator per image (seed, seed+1, ...); comfyui: "
                                            "one randn of the whole batch, as ComfyUI.")] = NoiseMode.IMAGEBASH,
           prompt_2: Annotated[Prompt, Help("SDXL: the text for the second encoder (OpenCLIP-G; `prompt` goes "
                                            "to CLIP-L); empty: the prompt.")] = "",
           negative_prompt_2: Annotated[Prompt, Help("SDXL: the negative for the second encoder.")] = "",
           original_width: Annotated[SizeCond, Help("SDXL size conditioning: the original size; 0 is the "
                                                    "image size.")] = 0,
           original_height: SizeCond = 0,
           crop_left: Annotated[SizeCond, Help("SDXL: crop coordinates conditioning (top left, in pixels).")] = 0,
           crop_top: SizeCond = 0,
           target_width: Annotated[SizeCond, Help("SDXL: the target size; 0 is the image size.")] = 0,
           target_height: SizeCond = 0,
           aesthetic_score: Annotated[float, Range(0.0, 20.0, step=0.5),
                                      Help("SDXL refiner: the aesthetic score conditioning.")] = 6.0,
           negative_aesthetic_score: Annotated[float, Range(0.0, 20.0, step=0.5)] = 2.5,
           ctx: Context = None) -> Latent:
    """Denoise a latent toward a prompt: denoise 1 starts from pure noise, less keeps structure.

    start_step / end_step run only steps [start, end) of a `steps`-step schedule, as ComfyUI's
    KSamplerAdvanced: a base model's 0-20 of 25 with leftover noise, then a refiner's 20-25 with
    add_noise off, samples one schedule across two models.

    Args:
        latent: The latent to start from (its size sets the output size).
        denoise: How much noise to add before denoising (like img2img strength).
    """
    _check_family(latent, model, "Sample")
    samples = latent.samples
    n, _c, h, w = samples.shape
    size = (w * latent.scale_factor, h * latent.scale_factor)
    entry = open_model(ctx, model)
    total = int(steps) or family_of(entry).variant(entry.variant).steps
    end = min(end_step, total) if end_step > 0 else total
    start = max(int(start_step), total - min(int(total * denoise), total))  # denoise < 1 starts later
    if start >= end:
        return latent
    runs = end - start
    after = None
    if end < total:
        def after(pipe: object, done: int, _total: int) -> None:
            if done >= runs * getattr(pipe.scheduler, "order", 1):
                pipe._interrupt = True
    final = runs if end < total and not leftover_noise else None

    sampler, schedule, noise = Sampler(sampler), Schedule(schedule), NoiseMode(noise)
    comfy = sampler is not Sampler.AUTO or schedule is not Schedule.DEFAULT
    flow = get_family(model.family).flow_matching
    if flow and (comfy or noise is NoiseMode.COMFYUI):  # an imported Flux / SD 3.5 graph still runs
        ctx.log(f"ComfyUI's sampler, schedule and noise settings apply to DDPM-family models; "
                f"{_title(model.family)} (flow matching) samples with its own flow-matching Euler", "warning")
        sampler, schedule, noise, comfy = Sampler.AUTO, Schedule.DEFAULT, NoiseMode.IMAGEBASH, False
    initial = comfy_noise(seed, tuple(samples.shape)) if noise is NoiseMode.COMFYUI else None
    mask = noise_mask(latent)
    masked = mask is not None
    if masked and initial is None:  # the noise the pipeline would draw, made here to renoise the kept region with
        import torch

        from nodes.diffusion.sampling import seeds_generators

        initial = torch.cat([torch.randn((1, *samples.shape[1:]), generator=g) for g in seeds_generators(seed, n)])
    # ComfyUI's ancestral / SDE steps draw from one generator seeded with the seed on the latent's device
    step_noise = noise is NoiseMode.COMFYUI

    @contextlib.contextmanager
    def hook(scheduler: object) -> Iterator[None]:  # entered under the model's lock, around the pipeline call
        with contextlib.ExitStack() as stack:
            if comfy:
                base = entry.state.get("scheduler_config", dict(scheduler.config))
                if sampler is not Sampler.AUTO:
                    stack.enter_context(standing_in(scheduler, sampler_scheduler(sampler, base, schedule.value)))
                if schedule is not Schedule.DEFAULT and takes_custom_sigmas(scheduler):
                    train = model_sigmas(scheduler.alphas_cumprod)
                    stack.enter_context(custom_sigmas(scheduler, comfy_sigmas(schedule, total, train), train))
                elif schedule is not Schedule.DEFAULT and getattr(ctx, "log", None):
                    ctx.log(f"{type(scheduler).__name__} takes no custom sigmas: {schedule.value} uses its own "
                            "flag where diffusers has one", "warning")
            if initial is not None and add_noise and (start > 0 or masked) and hasattr(scheduler, "add_noise"):
                stack.enter_context(_noise_as(scheduler, initial, max_denoise=start == 0 and not flow))
            if step_noise and hasattr(scheduler, "step"):
                stack.enter_context(_step_noise(scheduler, seed, entry.device))
            if not add_noise or final is not None:
                stack.enter_context(step_window(scheduler, add_noise=add_noise, final_step=final))
            if clip_skip:
                stack.enter_context(_clip_skip_layout(entry.pipe))
            yield

    extra = {"clip_skip": clip_skip or None, "after_step": after, "scheduler_hook": hook}
    if masked:
        extra["latents_hook"] = _mask_blend(mask, samples, initial if add_noise else None, flow,
                                            runs if final is not None else None)
    if start == 0 and add_noise and not masked:
        if initial is not None:
            extra["latents"] = initial.to(entry.device, getattr(entry.pipe, get_family(model.family).denoiser).dtype)
        extra.update(_sdxl_conditioning(size, prompt_2, negative_prompt_2, (original_width, original_height),
                                        (crop_left, crop_top), (target_width, target_height), aesthetic_score,
                                        negative_aesthetic_score, None))
        entry, out = sample_latents(ctx, model, "txt2img", size, n, seed, scheduler, shift, prompt, negative_prompt,
                                    total, guidance, width=size[0], height=size[1], num_images_per_prompt=n, **extra)
    else:
        image = samples.to(entry.device, getattr(entry.pipe, get_family(model.family).denoiser).dtype)
        strength = min(1.0, (total - start) / total + 1e-6)  # diffusers starts at total - int(total * strength)
        extra.update(_sdxl_conditioning(size, prompt_2, negative_prompt_2, (original_width, original_height),
                                        (crop_left, crop_top), (target_width, target_height), aesthetic_score,
                                        negative_aesthetic_score, n))
        entry, out = sample_latents(ctx, model, "img2img", size, n, seed, scheduler, shift, [prompt] * n,
                                    [negative_prompt] * n if negative_prompt else None, total, guidance, image=image,
                                    strength=strength, width=size[0], height=size[1], **extra)
    return like(latent, out, model.family)


@contextlib.contextmanager
def _noise_as(scheduler: object, noise: object, max_denoise: bool = False) -> Iterator[None]:
    """img2img's noising of the input latent uses `noise` (ComfyUI's batch noise) instead of the pipeline's;
    with `max_denoise` (sampling from the first step) a k-diffusion scheduler's noise is scaled by
    sqrt(1 + sigma^2) / sigma, as ComfyUI's noise_scaling at the top sigma."""
    add = scheduler.add_noise

    def add_noise(original: object, _noise: object, *args: object, **kwargs: object) -> object:
        use = noise.to(_noise.device, _noise.dtype)
        sigmas = getattr(scheduler, "sigmas", None)
        if max_denoise and sigmas is not None and float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0:
            s = float(sigmas[getattr(scheduler, "begin_index", None) or 0])
            use = use * ((1 + s * s) ** 0.5 / s)
        return add(original, use, *args, **kwargs)

    with patched(scheduler, add_noise=add_noise):
        yield


@contextlib.contextmanager
def _step_noise(scheduler: object, seed: int, device: str) -> Iterator[None]:
    """The scheduler's per-step noise (ancestral, SDE) drawn from one generator seeded with `seed` on `device`,
    a randn of the whole batch per step: k-diffusion's default_noise_sampler, as ComfyUI's KSampler."""
    import inspect

    import torch

    step = scheduler.step
    if "generator" not in inspect.signature(step).parameters:
        yield
        return
    gen = torch.Generator(device=device).manual_seed(int(seed))

    def stepped(*args: object, generator: object = None, **kwargs: object) -> object:
        return step(*args, generator=gen, **kwargs)

    with patched(scheduler, step=stepped):
        yield


def _mask_blend(mask: object, clean: object, noise: object, flow: bool, last: int | None) -> object:
    """ComfyUI's KSampler with a noise mask: after every step the region outside the mask is the input
    latent noised to the step's sigma with the initial noise (the input itself at sigma 0, or on the
    `last` step of a run that stops early with a denoised result), so only the masked region is denoised."""
    import torch

    from nodes.diffusion.comfy_noise import prepare_mask, renoised

    m = prepare_mask(mask, tuple(clean.shape))
    noise = torch.zeros_like(clean) if noise is None else noise
    cache: dict[str, object] = {}

    def blend(pipe: object, i: int, t: object, x: object) -> object:
        if "m" not in cache or cache["m"].device != x.device:
            cache.update(m=m.to(x.device, torch.float32), c=clean.to(x.device, torch.float32),
                         n=noise.to(x.device, torch.float32))
        sch = pipe.scheduler
        done = last is not None and i + 1 >= last * getattr(sch, "order", 1)
        keep = cache["c"] if done else renoised(sch, cache["c"], cache["n"], t, flow)
        return (x.float() * cache["m"] + keep * (1 - cache["m"])).to(x.dtype)

    return blend


@contextlib.contextmanager
def _clip_skip_layout(pipe: object) -> Iterator[None]:
    """diffusers' SD clip skip reads `text_encoder.text_model.final_layer_norm`, a level transformers 5
    dropped: alias it to the encoder itself for the call (an attribute, not a registered submodule)."""
    added = []
    for name in ("text_encoder", "text_encoder_2"):
        te = getattr(pipe, name, None)
        if te is not None and hasattr(te, "final_layer_norm") and "text_model" not in te.__dict__ \
                and not hasattr(te, "text_model"):
            object.__setattr__(te, "text_model", te)
            added.append(te)
    try:
        yield
    finally:
        for te in added:
            te.__dict__.pop("text_model", None)


class UpscaleMethod(str, enum.Enum):
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    AREA = "area"


@node("imagebash.diffusion.latent_upscale", version=1, title="Latent Upscale", category="diffusion/latent")
def latent_upscale(latent: Latent, width: Annotated[int, Range(0, 16384, step=8)] = 0,
                   height: Annotated[int, Range(0, 16384, step=8)] = 0,
                   factor: Annotated[float, Range(0.05, 8.0, step=0.05)] = 1.5,
                   method: UpscaleMethod = UpscaleMethod.NEAREST_EXACT,
                   crop: Annotated[bool, Help("Crop the centre to the new aspect first instead of stretching.")]
                   = False) -> Latent:
    """Resize latents without decoding them (the hires-fix step before a Sample at denoise < 1).

    Args:
        width: Target width in pixels; 0 with height 0 scales by `factor`, 0 alone keeps the aspect.
        height: Target height in pixels.
        factor: Scale when width and height are both 0.
    """
    import torch

    x = latent.samples
    h, w = x.shape[-2:]
    scale = latent.scale_factor
    step = max(1, _multiple(latent.family) // scale)
    if width == 0 and height == 0:
        tw, th = round(w * factor), round(h * factor)
    else:
        tw = width // scale if width else round(w * height / scale / h)
        th = height // scale if height else round(h * width / scale / w)
    tw, th = max(step, tw // step * step), max(step, th // step * step)
    if crop and (tw, th) != (w, h):
        if w * th > h * tw:  # wider than the target: trim the sides
            keep = max(1, round(h * tw / th))
            x = x[..., (w - keep) // 2:(w - keep) // 2 + keep]
        else:
            keep = max(1, round(w * th / tw))
            x = x[..., (h - keep) // 2:(h - keep) // 2 + keep, :]
    out = torch.nn.functional.interpolate(x.float(), size=(th, tw), mode=UpscaleMethod(method).value)
    return like(latent, out.to(x.dtype))


def _multiple(family: str) -> int:
    try:
        return get_family(family).size_multiple
    except KeyError:
        return 8


@node("imagebash.diffusion.latent_composite", version=1, title="Latent Composite", category="diffusion/latent")
def latent_composite(destination: Latent, source: Latent, x: Annotated[int, Range(0, 16384, step=8)] = 0,
                     y: Annotated[int, Range(0, 16384, step=8)] = 0,
                     feather: Annotated[int, Range(0, 4096, step=8), Help("Edge blend in pixels.")] = 0) -> Latent:
    """Paste `source` into `destination` with its top-left corner at (x, y) in pixels (as ComfyUI's
    LatentComposite: positions and feather in steps of one latent cell, the part outside is cut)."""
    if destination.family != source.family:
        raise ValueError(f"Latent Composite: cannot paste a {_title(source.family)} latent into a "
                         f"{_title(destination.family)} latent")
    scale = destination.scale_factor
    out = destination.samples.clone()
    src = source.samples.to(out.device, out.dtype)
    if src.shape[0] != out.shape[0]:
        if src.shape[0] != 1:
            raise ValueError(f"Latent Composite: batches differ ({src.shape[0]} vs {out.shape[0]})")
        src = src.expand(out.shape[0], -1, -1, -1)
    cx, cy = x // scale, y // scale
    h, w = min(src.shape[2], out.shape[2] - cy), min(src.shape[3], out.shape[3] - cx)
    f = min(feather // scale, h, w)
    if h <= 0 or w <= 0:
        raise ValueError(f"Latent Composite: ({x}, {y}) is outside the {out.shape[3] * scale}x"
                         f"{out.shape[2] * scale} destination")
    piece = src[:, :, :h, :w]
    if f == 0:
        out[:, :, cy:cy + h, cx:cx + w] = piece
    else:
        import torch

        mask = torch.ones((1, 1, h, w), dtype=out.dtype, device=out.device)
        for t in range(f):
            ramp = (t + 1) / f
            if cy != 0:
                mask[:, :, t] *= ramp
            if cy + h < out.shape[2]:
                mask[:, :, h - 1 - t] *= ramp
            if cx != 0:
                mask[:, :, :, t] *= ramp
            if cx + w < out.shape[3]:
                mask[:, :, :, w - 1 - t] *= ramp
        out[:, :, cy:cy + h, cx:cx + w] = piece * mask + out[:, :, cy:cy + h, cx:cx + w] * (1 - mask)
    return like(destination, out)


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
    return like(a, out.to(x.dtype))
