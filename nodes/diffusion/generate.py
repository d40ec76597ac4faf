"""Text to Image, Image to Image, Inpaint, Outpaint and Edit: the one-node ways to sample a model.

The nodes are the same for every family: the model's family picks the pipeline (sharing the
base pipeline's weights), its defaults (steps 0 and guidance 0 mean "the model's own": 28 and
3.5 for Flux.1 dev, 4 for schnell, 20 and 7 for SD), how prompts and guidance are passed
(classifier-free, Flux dev's distilled guidance, Qwen's true CFG) and which scheduler choices
apply. Latents are decoded with the tiling policy, so a large image never needs a separate node.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Annotated, Any

import numpy as np
import PIL.Image

from nodes.diffusion import tiling
from nodes.diffusion.sampling import (
    check_size,
    describe,
    family_of,
    open_model,
    run_pipeline,
    task_pipeline,
    to_tensor,
)
from nodes.diffusion.schedulers import Scheduler
from nodes.registry import node
from nodes.types import Context, Help, Image, Mask, Model, Multiline, Range, Seed

Prompt = Annotated[str, Multiline()]
Steps = Annotated[int, Range(0, 200), Help("Denoising steps; 0 uses the model's default (e.g. 4 for Flux schnell).")]
Guidance = Annotated[float, Range(0.0, 30.0, step=0.5),
                     Help("How strongly to follow the prompt; 0 uses the model's default.")]
Shift = Annotated[float, Range(0.0, 20.0, step=0.1),
                  Help("Flow-matching models: a fixed timestep shift (higher favours composition); 0 keeps "
                       "the model's own.")]
Size = Annotated[int, Range(64, 4096, step=8)]
Batch = Annotated[int, Range(1, 64)]
Instruction = Annotated[str, Multiline(), Help("What to change, e.g. 'make it night, keep the house'.")]


def _decode(ctx: Context, entry: Any, latents: Any) -> np.ndarray:
    mode, tile, overlap = tiling.settings_tile(ctx)
    return tiling.decode(entry, latents, mode, tile, overlap, lambda m: ctx.log(m, "warning"))


def _accepted(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the pipeline takes (a family's pipelines differ: Fill has no
    negative prompt, Kontext has no strength); None values are left to the pipeline's defaults."""
    params = inspect.signature(type(pipe).__call__).parameters
    return {k: v for k, v in kwargs.items() if k in params and v is not None}


def sample_latents(ctx: Context, model: Model, task: str, size: tuple[int, int], batch: int, seed: int,
            scheduler: Scheduler, shift: float, prompt: Any, negative: Any, steps: int, guidance: float,
            *, after_step: Any = None, scheduler_hook: Any = None, latents_hook: Any = None,
            **task_kwargs: Any) -> tuple[Any, Any]:
    """(entry, model-space latents) of one sampling call in the model family's terms;
    `after_step` and `scheduler_hook` go to `run_pipeline` (a Sample's step window)."""
    entry = open_model(ctx, model)
    fam = family_of(entry)
    variant = fam.variant(entry.variant)
    describe(ctx, entry)
    if variant.note and task == "edit" and variant.name != "kontext" and "edit" not in variant.name:
        ctx.log(variant.note, "warning")
    has_negative = any(negative) if isinstance(negative, list) else bool(negative)
    if has_negative and not fam.negative_prompt:
        ctx.log(f"negative prompt ignored: {fam.title} has no negative prompt ({fam.guidance_kind} guidance)",
                "warning")
    steps = int(steps) or variant.steps
    guidance = float(guidance) if guidance > 0 else variant.guidance
    choice = Scheduler(scheduler)
    if choice is Scheduler.AUTO:
        choice = Scheduler(fam.default_scheduler)
    pixels = task_kwargs.pop("pixels", None)  # the source image, for pipelines that encode it themselves
    pipe = task_pipeline(ctx, entry, task)
    if "embedding:" in " ".join(_texts(prompt) + _texts(negative)).lower():
        from nodes.diffusion import embeddings

        prompt, negative = (_map_texts(p, lambda t: embeddings.apply(entry, [t])[0]) for p in (prompt, negative))
    # an empty negative is the encoding of "" as in ComfyUI (diffusers would zero SDXL's)
    empty = None if fam.guidance_kind != "cfg" else [""] * len(prompt) if isinstance(prompt, list) else ""
    kwargs = {**fam.call_kwargs(entry.variant, prompt=prompt, negative_prompt=negative or empty,
                                guidance=guidance, steps=steps), **task_kwargs}
    adapters = [a for a in model.ip_adapters if a.weight != 0]
    step_hook = None
    if adapters or entry.state.get("ip_loaded"):
        from nodes.guidance.ip_adapter import apply_ip_adapters

        with entry.lock:
            extra, step_hook = apply_ip_adapters(ctx.service("models"), entry, adapters, pipe, size)
            kwargs.update(extra)
    controls = [c for c in model.controls if c.strength != 0]  # strength 0: exactly as without it
    with contextlib.ExitStack() as guards:
        if controls:
            from nodes.guidance.controlnet import masks_active

            pipe, extra = control_stack(ctx, entry, task, controls, size)
            kwargs.update(extra)
            if task == "img2img" and fam.denoiser != "unet":  # the transformer ControlNet pipelines encode pixels
                kwargs["image"] = pixels if pixels is not None else to_tensor(_decode(ctx, entry, kwargs["image"]))
            models = ctx.service("models")
            guards.enter_context(masks_active([models.control(c).model for c in controls],
                                              [c.mask for c in controls], size, entry.device))
        if adapters and "ip_adapter_image" not in inspect.signature(type(pipe).__call__).parameters:
            raise ValueError(f"IP-Adapters do not steer {type(pipe).__name__} ({fam.variant(entry.variant).title} "
                             f"{task}): use another task or model")
        if model.regions:
            from nodes.guidance.regions import regions_active

            guards.enter_context(entry.lock)
            guards.enter_context(regions_active(pipe, list(model.regions), size, entry.device))
        if after_step is not None:
            step_hook = _chain(step_hook, after_step)
        _conditioning_taken(ctx, pipe, fam.title, kwargs)
        travel = _blended(ctx, pipe, entry.device, kwargs)
        kwargs = {k: _map_texts(v, str) if k in _PROMPT_KEYS else v for k, v in kwargs.items()}
        latents = run_pipeline(ctx, entry, pipe, model, choice, size, batch, seed, shift=shift, step_hook=step_hook,
                               scheduler_hook=scheduler_hook, latents_hook=latents_hook, prepare=travel,
                               **_accepted(pipe, kwargs))
    ctx.annotate("sampling", {"family": fam.name, "variant": variant.name, "steps": steps,
                              "guidance": guidance, "scheduler": choice.value, "shift": float(shift)})
    return entry, latents


#: SDXL's second-encoder texts and micro-conditioning: given to the pipelines that take them.
_SDXL_KEYS = {"prompt_2": "second text encoder", "negative_prompt_2": "second text encoder",
              "original_size": "size conditioning", "crops_coords_top_left": "size conditioning",
              "target_size": "size conditioning", "aesthetic_score": "aesthetic-score conditioning",
              "negative_aesthetic_score": "aesthetic-score conditioning"}


def _conditioning_taken(ctx: Context, pipe: Any, family: str, kwargs: dict[str, Any]) -> None:
    """One line for the SDXL conditioning given where the pipeline has none (`_accepted` then drops it)."""
    params = inspect.signature(type(pipe).__call__).parameters
    left = {what for key, what in _SDXL_KEYS.items() if kwargs.get(key) and key not in params}
    names = [k for k in _SDXL_KEYS if kwargs.get(k) and k not in params]
    if left:
        ctx.log(f"{', '.join(names)} ignored: {family} ({type(pipe).__name__}) has no {' or '.join(sorted(left))}",
                "warning")


def _blend_of(prompt: Any) -> tuple[tuple[str, float], ...] | None:
    """A travelling prompt's (prompt, weight) pairs (`nodes.schedule.TravelPrompt.blend`), when it mixes several."""
    first = prompt[0] if isinstance(prompt, list) and prompt else prompt
    blend = getattr(first, "blend", None)
    return tuple((str(p), float(w)) for p, w in blend) if blend and len(blend) > 1 else None


def _texts(prompt: Any) -> list[str]:
    """Every text in a prompt argument: a str, a list of them, and the prompts a travelling prompt blends."""
    items = prompt if isinstance(prompt, list) else [prompt]
    out = []
    for p in items:
        if isinstance(p, str):
            out.append(str(p))
            out.extend(str(t) for t, _w in getattr(p, "blend", ()))
    return out


def _map_texts(prompt: Any, fn: Any) -> Any:
    """`prompt` with `fn` applied to each text, a travelling prompt's blend included (it stays a blend)."""
    if isinstance(prompt, list):
        return [_map_texts(p, fn) for p in prompt]
    if not isinstance(prompt, str):
        return prompt
    blend = getattr(prompt, "blend", None)
    if blend and fn is not str:
        from nodes.schedule import TravelPrompt

        return TravelPrompt(tuple((fn(str(t)), float(w)) for t, w in blend))
    return fn(prompt)


#: Prompt arguments, passed to pipelines as plain str (diffusers compares the prompt's and negative's types).
_PROMPT_KEYS = ("prompt", "negative_prompt", "prompt_2", "negative_prompt_2")
#: What each pipeline's `encode_prompt` returns where: (embeddings index, pooled index or None).
_ENCODED = {2: (0, None), 3: (0, 1), 4: (0, 2)}  # SD / Qwen (embeds, mask); Flux (embeds, pooled, ids); SDXL, SD3


def _blended(ctx: Context, pipe: Any, device: str, kwargs: dict[str, Any]) -> Any:
    """Prompt travel between frames: a prompt (or negative) that blends several prompts is the weighted sum
    of their embeddings (and pooled embeddings), passed to the pipeline as prompt_embeds.

    Returns None when nothing blends, else `encode(pipe, call_kwargs) -> kwargs update`, run by
    `run_pipeline` under the model's lock after the LoRA stack is active (a text-encoder LoRA applies to the
    blend as to a plain prompt) and inside the scheduler hook (clip skip). Each prompt of the blend is
    encoded exactly as the pipeline encodes a plain prompt (same clip skip, second-encoder text, batch), so a
    blend of one prompt is that prompt's image."""
    params = inspect.signature(type(pipe).__call__).parameters
    keys = []
    for key, emb, pooled, second in (("prompt", "prompt_embeds", "pooled_prompt_embeds", "prompt_2"),
                                     ("negative_prompt", "negative_prompt_embeds", "negative_pooled_prompt_embeds",
                                      "negative_prompt_2")):
        blend = _blend_of(kwargs.get(key))
        if blend is None:
            continue
        if emb not in params or not hasattr(pipe, "encode_prompt") or "prompt_embeds_mask" in params:
            ctx.log(f"{type(pipe).__name__} takes no prompt embeddings to blend: the travelling prompt uses its "
                    "heaviest prompt", "warning")
            continue
        keys.append((key, emb, pooled, second, blend))
    if not keys:
        return None

    def encode(p: Any, call: dict[str, Any]) -> dict[str, Any]:
        import torch

        enc = inspect.signature(p.encode_prompt).parameters
        out: dict[str, Any] = {}
        for key, emb, pooled, second, blend in keys:
            n = len(call[key]) if isinstance(call.get(key), list) else 1
            total, total_pooled, lengths = None, None, set()
            with torch.no_grad():
                for text, weight in blend:
                    args: dict[str, Any] = {"prompt": [text] * n, "device": device, "num_images_per_prompt": 1,
                                            "do_classifier_free_guidance": False}
                    for extra in ("prompt_2", "prompt_3"):  # SD3's encode_prompt takes them positionally
                        if extra in enc:
                            args[extra] = None
                    other = call.get(second)
                    if other and "prompt_2" in enc:  # the second encoder's own text, as the pipeline passes it
                        args["prompt_2"] = other if isinstance(other, list) else [str(other)] * n
                    if "clip_skip" in enc and call.get("clip_skip"):
                        args["clip_skip"] = call["clip_skip"]
                    if "max_sequence_length" in enc and call.get("max_sequence_length"):
                        args["max_sequence_length"] = call["max_sequence_length"]
                    got = p.encode_prompt(**{k: v for k, v in args.items() if k in enc})
                    ie, ip = _ENCODED.get(len(got), (0, None))
                    e = got[ie]
                    lengths.add(tuple(e.shape))
                    if len(lengths) > 1:  # embeddings as long as their prompt cannot be summed
                        break
                    total = e * weight if total is None else total + e * weight
                    if ip is not None and got[ip] is not None:
                        pe = got[ip]
                        total_pooled = pe * weight if total_pooled is None else total_pooled + pe * weight
            if len(lengths) > 1:
                ctx.log(f"{type(p).__name__}: prompts of different lengths cannot blend; the travelling prompt "
                        "uses its heaviest prompt", "warning")
                continue
            out[key] = None
            if second in inspect.signature(type(p).__call__).parameters:
                out[second] = None
            out[emb] = total
            if total_pooled is not None and pooled in inspect.signature(type(p).__call__).parameters:
                out[pooled] = total_pooled
        return out

    return encode


def _chain(first: Any, then: Any) -> Any:
    if first is None:
        return then

    def both(pipe: Any, i: int, total: int) -> None:
        first(pipe, i, total)
        then(pipe, i, total)
    return both


def control_stack(ctx: Context, entry: Any, task: str, controls: list[Any], size: tuple[int, int]) -> tuple[Any, dict]:
    """(the family's ControlNet pipeline for `task` and the nets, its control keyword arguments)."""
    import torch

    if task == "edit":
        raise ValueError("ControlNets steer Text to Image, Image to Image, Inpaint and Sample, not Edit")
    models = ctx.service("models")
    nets = [models.control(c) for c in controls]
    fam = family_of(entry)
    adapters = [n for n in nets if n.is_adapter]
    if adapters and len(adapters) != len(nets):
        raise ValueError("a sampling takes ControlNets or T2I-Adapters, not both (diffusers has no pipeline "
                         "for the mix): chain one kind")
    if adapters:
        pipe = models.adapter_pipeline(entry, task, nets)
        if any(c.start > 0 for c in controls) or (not fam.adapter_window and any(c.end < 1 for c in controls)):
            raise ValueError(f"T2I-Adapters on {fam.title} steer from the first step"
                             + ("" if fam.adapter_window else " to the last") + ": set start 0"
                             + ("" if fam.adapter_window else " and end 1"))
    else:
        pipe = models.control_pipeline(entry, task, nets)
    width, height = size
    images = []
    for c in controls:
        img = c.image
        if img.shape[1:3] != (height, width):
            ctx.log(f"ControlNet {c.source.replace(chr(92), '/').rsplit('/', 1)[-1]}: control image "
                    f"{img.shape[2]}x{img.shape[1]} resized to {width}x{height}")
        t = to_tensor(img)
        if t.shape[-2:] != (height, width):
            t = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
        images.append(t[:1])
    if adapters:
        one = len(images) == 1
        out: dict[str, Any] = {"image": images[0] if one else images,
                               "adapter_conditioning_scale": controls[0].strength if one else
                               [c.strength for c in controls]}
        if fam.adapter_window:
            out["adapter_conditioning_factor"] = max(c.end for c in controls)
        return pipe, out
    union = any(n.is_union for n in nets)
    if union and any(c.mode < 0 for c in controls):
        raise ValueError("a Union ControlNet needs its control type: set the ControlNet node's mode (xinsir's SDXL "
                         "promax: 0 pose, 1 depth, 2 soft edge/scribble, 3 canny/line art, 4 normal, 5 segment, "
                         "6 tile, 7 repaint)")
    return pipe, fam.control_kwargs(task, images, [c.strength for c in controls], [c.start for c in controls],
                                    [c.end for c in controls], [c.mode for c in controls], union)


@node("imagebash.diffusion.txt2img", version=1, title="Text to Image", category="diffusion", device="gpu")
def txt2img(model: Model, prompt: Prompt = "", negative_prompt: Prompt = "",
            width: Size = 512, height: Size = 512, steps: Steps = 0, guidance: Guidance = 0.0,
            scheduler: Scheduler = Scheduler.AUTO, shift: Shift = 0.0, seed: Seed = 0, batch_size: Batch = 1,
            ctx: Context = None) -> Image:
    """Generate images from a prompt with the model and its LoRA stack.

    Args:
        prompt: What to draw.
        negative_prompt: What to steer away from (models with real guidance only).
        steps: Denoising steps.
        guidance: Guidance scale (how strongly to follow the prompt).
        seed: Image i of the batch uses seed + i, so any image can be reproduced alone.
        batch_size: Images to generate.
    """
    entry = open_model(ctx, model)
    check_size(width, height, family_of(entry).size_multiple)
    entry, latents = sample_latents(ctx, model, "txt2img", (width, height), batch_size, seed, scheduler, shift,
                             prompt, negative_prompt, steps, guidance, width=width, height=height,
                             num_images_per_prompt=batch_size)
    return _decode(ctx, entry, latents)


@node("imagebash.diffusion.img2img", version=1, title="Image to Image", category="diffusion", device="gpu")
def img2img(model: Model, image: Image, prompt: Prompt = "", negative_prompt: Prompt = "",
            strength: Annotated[float, Range(0.0, 1.0, step=0.01)] = 0.6, steps: Steps = 0,
            guidance: Guidance = 0.0, scheduler: Scheduler = Scheduler.AUTO, shift: Shift = 0.0, seed: Seed = 0,
            batch_size: Batch = 1, ctx: Context = None) -> Image:
    """Restyle an image: noise it by `strength`, then denoise toward the prompt.

    Args:
        image: The source image(s); sides must be multiples of 8 (16 for Flux, SD 3.5, Qwen-Image).
        strength: 0 keeps the image, 1 ignores it.
        batch_size: Variations per input image.
    """
    entry = open_model(ctx, model)
    n, h, w = image.shape[0], image.shape[1], image.shape[2]
    check_size(w, h, family_of(entry).size_multiple)
    mode, tile, overlap = tiling.settings_tile(ctx)
    latents = tiling.encode(entry, image, mode, tile, overlap, lambda m: ctx.log(m, "warning"))
    if strength <= 0:
        return _decode(ctx, entry, latents.repeat_interleave(batch_size, 0))
    entry, out = sample_latents(ctx, model, "img2img", (w, h), n * batch_size, seed, scheduler, shift,
                         [prompt] * n, [negative_prompt] * n if negative_prompt else None, steps, guidance,
                         image=latents, strength=strength, height=h, width=w, num_images_per_prompt=batch_size,
                         pixels=to_tensor(image))
    return _decode(ctx, entry, out)


def _mask_batch(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    n, h, w = image.shape[:3]
    if mask.shape[1:] != (h, w):
        raise ValueError(f"mask is {mask.shape[2]}x{mask.shape[1]} but the image is {w}x{h}")
    m = np.broadcast_to(mask, (n, h, w)) if mask.shape[0] == 1 else mask
    if m.shape[0] != n:
        raise ValueError(f"mask batch {mask.shape[0]} does not match image batch {n}")
    return m


def _inpaint(ctx: Context, model: Model, image: np.ndarray, mask: np.ndarray, prompt: str, negative: str,
             strength: float, steps: int, guidance: float, scheduler: Scheduler, shift: float, seed: int,
             batch_size: int) -> np.ndarray:
    n, h, w = image.shape[:3]
    m = _mask_batch(image, mask)
    entry = open_model(ctx, model)
    check_size(w, h, family_of(entry).size_multiple)
    entry, out = sample_latents(ctx, model, "inpaint", (w, h), n * batch_size, seed, scheduler, shift,
                         [prompt] * n, [negative] * n if negative else None, steps, guidance,
                         image=to_tensor(image), mask_image=to_tensor(np.ascontiguousarray(m)[..., None])[:, :1],
                         strength=strength, height=h, width=w, num_images_per_prompt=batch_size)
    result = _decode(ctx, entry, out)
    src = np.tile(image[..., :3], (batch_size, 1, 1, 1))  # diffusers orders a batch image-major
    keep = np.tile(m, (batch_size, 1, 1))[..., None]
    return (src * (1.0 - keep) + result * keep).astype(np.float32)


@node("imagebash.diffusion.inpaint", version=1, title="Inpaint", category="diffusion", device="gpu")
def inpaint(model: Model, image: Image, mask: Mask, prompt: Prompt = "", negative_prompt: Prompt = "",
            strength: Annotated[float, Range(0.0, 1.0, step=0.01)] = 1.0, steps: Steps = 0,
            guidance: Guidance = 0.0, scheduler: Scheduler = Scheduler.AUTO, shift: Shift = 0.0, seed: Seed = 0,
            batch_size: Batch = 1, ctx: Context = None) -> Image:
    """Repaint the masked part of an image (white = repaint); pixels outside the mask are kept.

    Works with any model; inpainting models (SD inpainting U-Nets, Flux.1 Fill) see the mask and
    the masked image, so edges match best with them.

    Args:
        image: The image to repaint; sides must be multiples of 8 (16 for Flux, SD 3.5, Qwen-Image).
        mask: Where to repaint (1) and where to keep (0); soft edges blend.
        strength: How much of the masked area's content is replaced.
    """
    return _inpaint(ctx, model, image, mask, prompt, negative_prompt, strength, steps, guidance, scheduler, shift,
                    seed, batch_size)


@node("imagebash.diffusion.outpaint", version=1, title="Outpaint", category="diffusion", device="gpu")
def outpaint(model: Model, image: Image, prompt: Prompt = "", negative_prompt: Prompt = "",
             left: Annotated[int, Range(0, 2048, step=16)] = 0, right: Annotated[int, Range(0, 2048, step=16)] = 128,
             top: Annotated[int, Range(0, 2048, step=16)] = 0, bottom: Annotated[int, Range(0, 2048, step=16)] = 0,
             feather: Annotated[int, Range(0, 256, step=4), Help("Pixels of the old image blended into the new.")] = 16,
             steps: Steps = 0, guidance: Guidance = 0.0, scheduler: Scheduler = Scheduler.AUTO, shift: Shift = 0.0,
             seed: Seed = 0, batch_size: Batch = 1, ctx: Context = None) -> Image:
    """Extend the canvas on any side and paint the new area to match (best with Flux.1 Fill).

    The image is padded with its edge pixels, the padding (plus `feather` pixels into the old
    image) becomes the mask, and the model inpaints it; the old pixels outside the feather are
    kept exactly.
    """
    if not (left or right or top or bottom):
        raise ValueError("Outpaint: give at least one side a size (left, right, top or bottom)")
    img = np.asarray(image, np.float32)[..., :3]
    padded = np.pad(img, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="edge")
    h, w = padded.shape[1:3]
    mask = np.ones((1, h, w), np.float32)
    y0, y1, x0, x1 = top, h - bottom, left, w - right
    inner = np.zeros((y1 - y0, x1 - x0), np.float32)
    if feather:  # distance (in pixels) of each old pixel to the nearest padded side
        ys, xs = np.arange(y1 - y0, dtype=np.float32), np.arange(x1 - x0, dtype=np.float32)
        sides = [(top, ys[:, None] + 1), (bottom, ys[::-1, None] + 1), (left, xs[None, :] + 1),
                 (right, xs[None, ::-1] + 1)]
        dist = np.minimum.reduce([np.broadcast_to(d, inner.shape) for pad, d in sides if pad])
        inner = np.clip(1.0 - (dist - 1) / float(feather), 0.0, 1.0) * (dist <= feather)
    mask[0, y0:y1, x0:x1] = inner
    return _inpaint(ctx, model, padded, mask, prompt, negative_prompt, 1.0, steps, guidance, scheduler, shift,
                    seed, batch_size)


@node("imagebash.diffusion.edit", version=1, title="Edit (instruction)", category="diffusion", device="gpu")
def edit(model: Model, image: Image, instruction: Instruction = "", negative_prompt: Prompt = "",
         steps: Steps = 0, guidance: Guidance = 0.0, scheduler: Scheduler = Scheduler.AUTO, shift: Shift = 0.0,
         seed: Seed = 0, batch_size: Batch = 1, ctx: Context = None) -> Image:
    """Change an image by an instruction with an editing model (Flux.1 Kontext, Qwen-Image-Edit).

    Each input image is edited on its own, at its own size (sides rounded down to the model's
    multiple; Kontext keeps it instead of resizing to its preferred sizes); `batch_size` gives
    variations of each. Qwen-Image-Edit reads the image through its vision encoder at ~1 MP.
    """
    if not instruction.strip():
        raise ValueError("Edit: write an instruction (what to change)")
    entry = open_model(ctx, model)
    multiple = family_of(entry).size_multiple
    img = np.asarray(image, np.float32)[..., :3]
    h, w = img.shape[1] // multiple * multiple, img.shape[2] // multiple * multiple
    if h < multiple or w < multiple:
        raise ValueError(f"Edit: the image is smaller than {multiple}x{multiple}")
    img = np.ascontiguousarray(img[:, :h, :w])
    outs = []
    for i in range(img.shape[0]):
        source = PIL.Image.fromarray((np.clip(img[i], 0, 1) * 255).round().astype(np.uint8))
        entry, out = sample_latents(ctx, model, "edit", (w, h), batch_size, seed + i * batch_size, scheduler, shift,
                                    instruction, negative_prompt or None, steps, guidance, image=source,
                                    height=h, width=w, num_images_per_prompt=batch_size, max_area=h * w,
                                    _auto_resize=False)
        outs.append(_decode(ctx, entry, out))
    return np.concatenate(outs, axis=0)
