"""Shared sampling plumbing: open a model handle, apply its LoRA stack, scheduler and attention
policy, run a diffusers pipeline with per-step progress, preview and cancellation, and retry
once with slicing and VAE tiling on an out-of-memory error.

Each attempt holds the entry's lock while it activates the handle's LoRA stack and samples, so
two threads sharing one pipeline never sample with each other's stacks, and builds its own seed
generators, so a retried run gives the pixels a normal run gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.engine import memory
from app.engine.families import Family, get_family
from app.engine.fingerprint import short_hash
from app.engine.models import Entry
from nodes.diffusion import tiling
from nodes.diffusion.loras import activate, adapter_name, ensure_adapter, expert_choice
from nodes.diffusion.preview import latent_preview
from nodes.diffusion.schedulers import Scheduler, make_scheduler
from nodes.types import Cancelled, Model


def manager(ctx: Any) -> Any:
    return ctx.service("models")


def open_model(ctx: Any, model: Model) -> Entry:
    """The loaded base behind `model` (reloaded if it was evicted); `run_pipeline` applies its LoRAs."""
    return manager(ctx).entry(model, lambda f, t: ctx.progress(0.0, text=t))


def family_of(entry: Entry) -> Family:
    return get_family(entry.family)


def denoiser(entry: Entry) -> Any:
    """The pipeline's U-Net or transformer, whichever the family samples with."""
    return getattr(entry.pipe, family_of(entry).denoiser)


def task_pipeline(ctx: Any, entry: Entry, task: str) -> Any:
    """The txt2img/img2img/inpaint/edit pipeline that shares `entry`'s weights."""
    variant = family_of(entry).variant(entry.variant)
    if variant.tasks == ("inpaint",) and task != "inpaint":
        raise ValueError(f"{Path(entry.source).name} is an inpainting model ({variant.title}): use it with "
                         "the Inpaint node")
    return manager(ctx).derived(entry, task)


def describe(ctx: Any, entry: Entry) -> None:
    """One log line: which family, variant, dtype and memory mode a node used."""
    fam = family_of(entry)
    variant = fam.variant(entry.variant)
    dtype = str(getattr(denoiser(entry), "dtype", "")).replace("torch.", "")
    mode = entry.state.get("memory_mode", "full")
    ctx.log(f"{variant.title} ({fam.name}/{variant.name}), {dtype}, memory: {mode}, on {entry.device}")


def apply_loras(entry: Entry, model: Model) -> None:
    """Load (once) and activate `model`'s LoRA stack; call with `entry.lock` held up to sampling."""
    hashes = [ref.hash or short_hash(ref.path) for ref in model.loras]
    experts = [ref.expert for ref in model.loras]
    with entry.lock:
        keep = {adapter_name(h, expert_choice(entry, e)[0]) for h, e in zip(hashes, experts, strict=True)}
        stack = []
        for ref, file_hash, expert in zip(model.loras, hashes, experts, strict=True):
            info = ensure_adapter(entry, Path(ref.path), file_hash, keep=keep, expert=expert)
            stack.append((info.name, ref.weight))
        activate(entry, stack)


def seeds_generators(seed: int, count: int) -> list[Any]:
    """One CPU generator per image (seed, seed+1, ...): the same seed gives the same pixels on any device."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(seed) + i) for i in range(count)]


def configure(ctx: Any, entry: Entry, pipe: Any, scheduler: Scheduler | str, width: int, height: int,
              batch: int, force_slicing: bool = False, shift: float = 0.0) -> None:
    """Scheduler for this call, and attention slicing decided from free memory (never on CPU in auto)."""
    base = entry.state.setdefault("scheduler_config", dict(entry.pipe.scheduler.config))
    schedulers = entry.state.setdefault("schedulers", {})
    choice = Scheduler(scheduler)
    fam = family_of(entry)
    key = (choice, float(shift))
    if key not in schedulers:  # reused: set_timesteps resets a scheduler at every call
        schedulers[key] = make_scheduler(choice, base, flow=fam.flow_matching, shift=shift, family=fam.title)
    if pipe.scheduler is not schedulers[key]:
        pipe.scheduler = schedulers[key]
    model = denoiser(entry)
    heads = model.config.get("attention_head_dim", 8) if fam.denoiser == "unet" else \
        model.config.get("num_attention_heads", 8)
    heads = max(heads) if isinstance(heads, (list, tuple)) else heads
    need = memory.attention_bytes(width, height, batch, int(heads or 8), model.dtype.itemsize,
                                  entry.pipe.vae_scale_factor * (2 if fam.denoiser != "unet" else 1))
    mode = getattr(getattr(ctx, "settings", None), "attention_slicing", "auto")
    slicing = "max" if force_slicing else memory.attention_slicing(mode, entry.device, need)
    if entry.state.get("ip_loaded"):  # IP-Adapter attention processors have no sliced form
        slicing = None
    if entry.state.get("slicing", "unset") != slicing:  # the UNet is shared by every task's pipeline
        if slicing:
            pipe.enable_attention_slicing(slicing)
        else:
            pipe.disable_attention_slicing()
        entry.state["slicing"] = slicing


def run_pipeline(ctx: Any, entry: Entry, pipe: Any, model: Model, scheduler: Scheduler | str,
                 size: tuple[int, int], batch: int, seed: int, shift: float = 0.0,
                 step_hook: Callable[[Any, int, int], None] | None = None,
                 scheduler_hook: Callable[[Any], contextlib.AbstractContextManager] | None = None,
                 latents_hook: Callable[[Any, int, Any, Any], Any] | None = None,
                 prepare: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None,
                 **kwargs: Any) -> Any:
    """Call `pipe(**kwargs)` for latents with `model`'s LoRA stack and `batch` generators from `seed`
    (seed, seed+1, ...), reporting each step; returns (N, C, h, w) model-space latents.
    `step_hook(pipe, next_step, total)` runs after every step, before the next (per-step weights);
    `scheduler_hook(scheduler)` wraps the call on the configured scheduler (a Sample's step window);
    `latents_hook(pipe, i, t, latents)` returns the latents the next step starts from (a latent noise mask);
    `prepare(pipe, kwargs)` returns changes to the call's arguments, made with the LoRA stack active and
    inside `scheduler_hook` (a travelling prompt's blended embeddings)."""
    ctx.check_cancelled()
    width, height = size
    fam = family_of(entry)

    def on_step(p: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = getattr(p, "num_timesteps", 0) or kwargs.get("num_inference_steps", 1)
        if latents_hook is not None and "latents" in tensors:
            tensors["latents"] = latents_hook(p, i, _t, tensors["latents"])
        latents = fam.unpack(p, tensors["latents"][:1], width, height)
        ctx.progress((i + 1) / max(total, 1), latent_preview(latents, fam.preview),
                     text=f"step {i + 1}/{total}")
        if step_hook is not None:
            step_hook(p, i + 1, total)
        if ctx.cancelled:
            raise Cancelled("cancelled")
        return tensors

    def attempt(retry: bool) -> Any:
        with entry.lock, _vae_tiled(ctx, entry.pipe.vae, retry):  # inpaint encodes inside the pipeline
            apply_loras(entry, model)
            configure(ctx, entry, pipe, scheduler, width, height, batch, retry, shift)
            hooked = scheduler_hook(pipe.scheduler) if scheduler_hook else contextlib.nullcontext()
            with hooked:
                call = dict(kwargs)
                if prepare is not None:
                    call.update(prepare(pipe, call))
                out = pipe(output_type="latent", generator=seeds_generators(seed, batch),
                           **step_callback(pipe, on_step), **call).images
            return fam.unpack(pipe, out, width, height)

    def cheaper() -> str | None:  # on the CPU, RAM is met by tiling and slicing alone
        return None if entry.device == "cpu" else manager(ctx).degrade(entry)

    return memory.with_oom_retry(lambda: attempt(False), lambda: attempt(True), entry.device,
                                 lambda m: ctx.log(m, "warning"), "sampling", cheaper)


def step_callback(pipe: Any, on_step: Any) -> dict[str, Any]:
    """The per-step callback in the form the pipeline takes: `callback_on_step_end`, or the older
    `callback(step, timestep, latents)` of pipelines that predate it (SD's T2I-Adapter pipeline)."""
    import inspect

    params = inspect.signature(type(pipe).__call__).parameters
    if "callback_on_step_end" in params:
        return {"callback_on_step_end": on_step}
    return {"callback": lambda i, t, latents: on_step(pipe, i, t, {"latents": latents}), "callback_steps": 1}


@contextlib.contextmanager
def _vae_tiled(ctx: Any, vae: Any, on: bool) -> Iterator[None]:
    """VAE tiling on for the OOM retry (restored after); unchanged otherwise."""
    if not on:
        yield
        return
    was = bool(getattr(vae, "use_tiling", False))
    _mode, tile, overlap = tiling.settings_tile(ctx)
    tiling.configure_vae(vae, True, tile, overlap)
    try:
        yield
    finally:
        if not was:
            vae.disable_tiling()


def to_tensor(image: np.ndarray, device: str = "cpu") -> Any:
    """Image (N, H, W, C) -> torch (N, 3, H, W) in [0, 1]."""
    import torch

    return torch.from_numpy(np.array(image[..., :3], dtype=np.float32)).permute(0, 3, 1, 2).to(device)


def check_size(width: int, height: int, multiple: int = 8) -> None:
    if width % multiple or height % multiple or width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive multiples of {multiple} (got {width}x{height})")
