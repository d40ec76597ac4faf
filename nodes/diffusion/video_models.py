"""Video models: Generate Video (Wan 2.1 / 2.2) and AnimateDiff (SD 1.5 + a motion adapter).

Both sample with diffusers' own video pipelines over the model manager's shared weights (Wan's
text-, image- and video-to-video pipelines derived from the loaded one; AnimateDiff's built once
per motion adapter beside the SD model), apply the model's LoRA stack, report every step and
stop at the next step when cancelled. They return a `Video` of float frames in [0, 1].

Wan clips have 4k+1 frames (its VAE compresses time 4x after the first frame): other counts are
rounded, and the log says so. Wan 2.2 A14B models sample with both experts, switching at the
model's boundary; `guidance_2` is the low-noise expert's guidance. An AnimateDiff prompt given
as a keyframe schedule (an object with `keyframes`, `[(frame, text), ...]`) becomes FreeNoise
prompt travel (`{frame: text}`); clips longer than the adapter's window use FreeNoise context
windows too.

The motion U-Net (the SD U-Net plus the adapter's motion modules) follows the SD model's memory
mode (`motion_placement`): on the device in the model's dtype, fp8-stored under fp8, or hooked
like the SD pipeline under the offload modes (model offload is re-armed before each call: the
VAE and text encoder it shares with the SD pipeline carry the hooks of whichever pipeline armed
them last; sequential and group offload hook the motion U-Net alone).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from app.engine.families.wan import round_frames
from nodes.diffusion.loras import activate, adapter_name, ensure_adapter
from nodes.diffusion.sampling import (
    apply_loras,
    check_size,
    describe,
    family_of,
    manager,
    open_model,
    seeds_generators,
    step_callback,
)
from nodes.registry import node
from nodes.types import Cancelled, Context, FileFilter, Help, Image, Model, Multiline, Range, Seed, Video

Prompt = Annotated[str, Multiline()]
Size = Annotated[int, Range(64, 2048, step=16)]
Steps = Annotated[int, Range(0, 200), Help("Denoising steps; 0 uses the model's default.")]
Guidance = Annotated[float, Range(0.0, 30.0, step=0.5), Help("Classifier-free guidance; 0 uses the model's default.")]
Strength = Annotated[float, Range(0.0, 1.0, step=0.05),
                     Help("Video to video: how much of the source clip is re-noised (1 ignores it).")]
Fps = Annotated[float, Range(1.0, 120.0, step=1.0)]


def _value(v: Any, frame: int = 0) -> Any:
    """A plain value from a port that may carry a keyframe schedule (its value at `frame`)."""
    return v.at(frame) if hasattr(v, "keyframes") and hasattr(v, "at") else v


def _pil_frames(video: Video, count: int, width: int, height: int) -> list[Any]:
    import PIL.Image

    out = []
    for i in range(min(count, len(video))):
        f = np.clip(video.frame(i)[0, ..., :3], 0, 1)
        img = PIL.Image.fromarray((f * 255).round().astype(np.uint8))
        out.append(img if img.size == (width, height) else img.resize((width, height), PIL.Image.LANCZOS))
    return out


def _pil_image(image: np.ndarray, width: int, height: int) -> Any:
    import PIL.Image

    f = np.clip(np.asarray(image)[0, ..., :3], 0, 1)
    img = PIL.Image.fromarray((f * 255).round().astype(np.uint8))
    return img if img.size == (width, height) else img.resize((width, height), PIL.Image.LANCZOS)


def _accepted(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(type(pipe).__call__).parameters
    return {k: v for k, v in kwargs.items() if k in params and v is not None}


def _to_video(frames: Any, fps: float) -> Video:
    arr = np.asarray(frames, dtype=np.float32)
    if arr.ndim == 5:
        arr = arr[0]
    return Video.from_batch(np.ascontiguousarray(np.clip(arr, 0.0, 1.0)), fps)


def _sample(ctx: Context, pipe: Any, steps: int, kwargs: dict[str, Any]) -> Any:
    """`pipe(**kwargs)` with per-step progress and cancellation; the output's frames."""
    def on_step(p: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = getattr(p, "num_timesteps", 0) or steps
        ctx.progress((i + 1) / max(total, 1), text=f"step {i + 1}/{total}")
        if ctx.cancelled:
            raise Cancelled("cancelled")
        return tensors

    ctx.check_cancelled()
    return pipe(output_type="np", **step_callback(pipe, on_step), **_accepted(pipe, kwargs)).frames


@contextlib.contextmanager
def _scheduler(entry: Any, pipe: Any, shift: float) -> Iterator[None]:
    """A flow-shift override for one call (0: the model's own), restored after."""
    if shift <= 0:
        yield
        return
    base = pipe.scheduler
    cache = entry.state.setdefault("video_schedulers", {})
    key = (type(base).__name__, float(shift))
    if key not in cache:
        name = "flow_shift" if "flow_shift" in base.config else "shift"
        cache[key] = type(base).from_config(base.config, **{name: float(shift)})
    pipe.scheduler = cache[key]
    try:
        yield
    finally:
        pipe.scheduler = base


# ------------------------------------------------------------------------------------- Wan


@node("imagebash.diffusion.generate_video", version=1, title="Generate Video", category="diffusion", device="gpu")
def generate_video(model: Model, prompt: Prompt = "", negative_prompt: Prompt = "",
                   num_frames: Annotated[int, Range(1, 1025)] = 33, width: Size = 832, height: Size = 480,
                   steps: Steps = 0, guidance: Guidance = 0.0,
                   guidance_2: Annotated[float, Range(0.0, 30.0, step=0.5),
                                         Help("Wan 2.2 A14B: the low-noise expert's guidance (0: its default)")] = 0.0,
                   shift: Annotated[float, Range(0.0, 20.0, step=0.5),
                                    Help("flow shift (0: the model's; 3 for 480p, 5 for 720p)")] = 0.0,
                   seed: Seed = 0, image: Image | None = None, video: Video | None = None,
                   strength: Strength = 0.7, fps: Fps = 16.0, ctx: Context = None) -> Video:
    """Generate a clip with a Wan 2.1 / 2.2 model: from a prompt, a first frame or a source clip.

    Args:
        model: A Wan model (Load Model: a diffusers folder or a single-file checkpoint).
        num_frames: Frames of the clip; Wan makes 4k+1 (17, 33, 49, 81): others are rounded.
        width: Multiples of 16 (Wan 2.1 1.3B: 832x480; 14B also 1280x720).
        guidance: Classifier-free guidance (the high-noise expert's on Wan 2.2 A14B).
        image: First frame: image to video (an I2V model).
        video: Source clip: video to video, re-noised by `strength` (a T2V model).
        fps: Frame rate of the returned clip (Wan: 16; Wan 2.2 TI2V 5B: 24).
    """
    entry = open_model(ctx, model)
    fam = family_of(entry)
    if fam.name != "wan":
        raise ValueError(f"Generate Video needs a Wan model, not {fam.title}: use AnimateDiff for SD 1.5")
    variant = fam.variant(entry.variant)
    check_size(width, height, fam.size_multiple)
    describe(ctx, entry)
    if hasattr(prompt, "keyframes"):
        ctx.log("Generate Video: Wan takes one prompt; the schedule's first keyframe is used", "warning")
    prompt, negative_prompt = str(_value(prompt)), str(_value(negative_prompt))
    frames = round_frames(int(_value(num_frames)))
    if frames != int(_value(num_frames)):
        ctx.log(f"num_frames {int(_value(num_frames))} rounded to {frames}: Wan makes 4k+1 frames")
    steps = int(_value(steps)) or variant.steps
    guidance = float(_value(guidance)) or variant.guidance
    guidance_2 = float(_value(guidance_2)) or getattr(variant, "guidance_2", 0.0) or guidance
    models = manager(ctx)
    if image is not None and video is not None:
        raise ValueError("Generate Video takes a first frame (image) or a source clip (video), not both")
    kwargs: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative_prompt, "height": height,
                              "width": width, "num_inference_steps": steps, "guidance_scale": guidance,
                              "generator": seeds_generators(int(seed), 1)[0]}
    two = getattr(entry.pipe, "transformer_2", None) is not None and getattr(entry.pipe.config, "boundary_ratio",
                                                                              None)
    if two:
        kwargs["guidance_scale_2"] = guidance_2
    if video is not None:
        if len(video) < 1:
            raise ValueError("Generate Video: the source clip has no frames")
        usable = round_frames(len(video))
        usable = usable if usable <= len(video) else usable - 4
        if usable != frames:
            ctx.log(f"video to video: {usable} frames of the {len(video)}-frame source (4k+1 frames, at most "
                    f"{frames})" if usable < frames else f"video to video: the first {frames} frames of the source")
        frames = min(frames, usable)
        task = "video2video"
        pipe = models.derived(entry, task)
        if two:  # diffusers' video-to-video pipeline has one transformer: the expert of the noise levels used
            low = float(strength) <= float(entry.pipe.config.boundary_ratio)
            if low:
                pipe = _low_noise_v2v(entry, pipe)
            ctx.log(f"video to video on Wan 2.2: the {'low' if low else 'high'}-noise expert only "
                    f"(strength {float(strength):g}, boundary {float(entry.pipe.config.boundary_ratio):g})")
            kwargs["guidance_scale"] = guidance_2 if low else guidance
        kwargs.update(video=_pil_frames(video, frames, width, height), strength=float(strength))
    elif image is not None:
        task = "img2video"
        pipe = models.derived(entry, task)
        kwargs.update(image=_pil_image(image, width, height), num_frames=frames)
    else:
        task = "txt2video"
        pipe = models.derived(entry, task)
        kwargs["num_frames"] = frames
    with entry.lock, _scheduler(entry, pipe, float(_value(shift))):
        apply_loras(entry, model)
        kwargs.update(_encode(pipe, kwargs.pop("prompt"), kwargs.pop("negative_prompt"),
                              max(kwargs["guidance_scale"], kwargs.get("guidance_scale_2", 0.0)) > 1.0))
        out = _sample(ctx, pipe, steps, kwargs)
    clip = _to_video(out, float(fps))
    ctx.annotate("sampling", {"family": fam.name, "variant": variant.name, "task": task, "steps": steps,
                              "guidance": guidance, "frames": clip.length, "shift": float(_value(shift))})
    return clip


def _encode(pipe: Any, prompt: str, negative: str, cfg: bool) -> dict[str, Any]:
    """Wan's UMT5 prompt embeddings, encoded with WanPipeline's own code for every task (diffusers
    0.42's image- and video-to-video pipelines clean prompts with ftfy unconditionally, which
    imagebash does not depend on)."""
    from diffusers import WanPipeline

    def one(text: str) -> Any:
        return WanPipeline._get_t5_prompt_embeds(pipe, prompt=text, max_sequence_length=512,
                                                 device=pipe._execution_device)

    return {"prompt_embeds": one(prompt), "negative_prompt_embeds": one(negative) if cfg else None}


def _low_noise_v2v(entry: Any, pipe: Any) -> Any:
    with entry.lock:
        low = entry.derived.get("video2video-low")
        if low is None:
            low = type(pipe).from_pipe(entry.pipe, transformer=entry.pipe.transformer_2)
            low.set_progress_bar_config(disable=True)
            entry.derived["video2video-low"] = low
        return low


# ------------------------------------------------------------------------------------- AnimateDiff


def _motion_key(params: dict) -> str:
    from app.engine.fingerprint import fingerprint

    path = params.get("motion_adapter")
    try:
        return fingerprint(Path(str(path))) if path else "none"
    except (OSError, ValueError):
        return "missing"


def motion_placement(entry: Any) -> str:
    """How the AnimateDiff pipeline of an SD entry is placed, from the entry's memory plan:
    "model_offload" (components moved in while they run: the mode, or encoders offloaded),
    "sequential_offload", "group_offload" (the motion U-Net's blocks streamed), "fp8" (fp8
    storage on the device) or "device" (everything on the entry's device)."""
    plan = entry.state.get("plan")
    mode = str(getattr(plan, "mode", None) or entry.state.get("memory") or "full")
    if mode in ("sequential_offload", "group_offload", "model_offload"):
        return mode
    if getattr(plan, "offload_encoders", False):
        return "model_offload"
    return "fp8" if mode == "fp8" else "device"


def _place_motion(entry: Any, pipe: Any, dtype: Any) -> str:
    """Put the AnimateDiff pipeline where the entry's memory mode says (see `motion_placement`);
    a LoRA loaded into the placed motion U-Net later is hooked in by `ensure_adapter`."""
    import torch

    from app.engine import memory_modes

    how = motion_placement(entry)
    unet = pipe.unet
    device = entry.device
    if how == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif how == "sequential_offload":  # the motion U-Net only: the shared VAE / text encoder keep
        if getattr(unet, "_hf_hook", None) is None:  # the SD pipeline's hooks (they chain nothing)
            from accelerate import cpu_offload

            unet.to("cpu")
            cpu_offload(unet, torch.device(device), offload_buffers=True)
    elif how == "group_offload":
        from diffusers.hooks.group_offloading import _is_group_offload_enabled

        if not _is_group_offload_enabled(unet):
            plan = entry.state.get("plan")
            unet.to("cpu")
            unet.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                      offload_type="block_level", num_blocks_per_group=1,
                                      use_stream=bool(getattr(plan, "stream", False)),
                                      low_cpu_mem_usage=bool(getattr(plan, "low_cpu_mem_usage", False)))
    else:
        if getattr(unet, "_hf_hook", None) is not None or getattr(pipe, "_all_hooks", None):
            pipe.remove_all_hooks()  # the mode went from offloading to on-device
        if how == "fp8" and not memory_modes._has_layerwise_casting(unet):
            memory_modes.cast_fp8(unet, dtype)
        unet.to(device=device) if how == "fp8" else unet.to(device=device, dtype=dtype)
    return how


def _motion_loras(entry: Any, holder: Any, model: Model) -> None:
    """The model's LoRA stack on the motion U-Net too (its text-encoder keys stay with the SD model)."""
    from app.engine.fingerprint import short_hash

    stack = []
    for ref in model.loras:
        digest = ref.hash or short_hash(ref.path)
        try:
            info = ensure_adapter(holder, Path(ref.path), digest, keep={adapter_name(digest)})
        except ValueError:  # a text-encoder-only LoRA: nothing for the U-Net
            continue
        stack.append((info.name, ref.weight))
    activate(holder, stack)


@contextlib.contextmanager
def _readable_unet(entry: Any) -> Iterator[None]:
    """While the motion U-Net is built: under sequential offload the SD U-Net's weights live in
    its hooks (its parameters are on the meta device), so the build reads a copy-free plain U-Net
    over the hooks' CPU weights instead, and the SD pipeline gets its own back after."""
    import torch

    unet = entry.pipe.unet
    if not any(p.device.type == "meta" for p in unet.parameters()):
        yield
        return
    from accelerate.utils.modeling import get_state_dict_offloaded_model
    from diffusers import UNet2DConditionModel

    state = {k.replace(".base_layer.", "."): v for k, v in get_state_dict_offloaded_model(unet).items()
             if ".lora_" not in k}
    with torch.device("meta"):
        plain = UNet2DConditionModel.from_config(unet.config)
    plain.load_state_dict(state, strict=True, assign=True)
    entry.pipe.unet = plain
    try:
        yield
    finally:
        entry.pipe.unet = unet


@node("imagebash.diffusion.animatediff", version=1, title="AnimateDiff", category="diffusion", device="gpu",
      cache_key=_motion_key, schedules=True)
def animatediff(model: Model,
                motion_adapter: Annotated[Path, FileFilter(folder=True),
                                          Help("a diffusers MotionAdapter folder or its .safetensors file")],
                prompt: Prompt = "", negative_prompt: Prompt = "",
                frames: Annotated[int, Range(1, 512)] = 16, width: Size = 512, height: Size = 512,
                steps: Steps = 0, guidance: Guidance = 0.0, seed: Seed = 0, video: Video | None = None,
                strength: Strength = 0.7, fps: Fps = 8.0, ctx: Context = None) -> Video:
    """Animate an SD 1.5 model with an AnimateDiff motion adapter.

    Args:
        model: An SD 1.5 model (with its LoRA stack).
        motion_adapter: The motion module: a diffusers MotionAdapter folder or one .safetensors
            file (.ckpt pickles are refused).
        prompt: What to animate; a keyframe schedule travels between its prompts.
        frames: Clip length (beyond the adapter's 16-32 frame window FreeNoise slides it).
        video: Source clip: video to video, re-noised by `strength`.
    """
    from app.engine.models import animatediff_pipeline

    width, height, seed, strength, fps = (int(_value(width)), int(_value(height)), int(_value(seed)),
                                          float(_value(strength)), float(_value(fps)))
    entry = open_model(ctx, model)
    fam = family_of(entry)
    if fam.name != "sd1":
        raise ValueError(f"AnimateDiff animates SD 1.5 models, not {fam.title} ({fam.variant(entry.variant).title})")
    check_size(width, height, 8)
    describe(ctx, entry)
    variant = fam.variant(entry.variant)
    steps = int(_value(steps)) or variant.steps
    guidance = float(_value(guidance)) or 7.5
    count = int(_value(frames))
    task = "video2video" if video is not None else "txt2video"
    adapter = Path(str(motion_adapter)).expanduser()
    if not adapter.exists():
        raise FileNotFoundError(f"motion adapter not found: {str(motion_adapter)!r}")
    with entry.lock, _readable_unet(entry):
        pipe, holder = animatediff_pipeline(manager(ctx), entry, adapter, task)
    travel = hasattr(prompt, "keyframes")
    text: Any = {int(f): str(v) for f, v in prompt.keyframes} if travel else str(prompt)
    if travel and 0 not in text:
        text[0] = text[min(text)]
    kwargs: dict[str, Any] = {"prompt": text, "negative_prompt": str(_value(negative_prompt)), "height": height,
                              "width": width, "num_inference_steps": steps, "guidance_scale": guidance,
                              "generator": seeds_generators(int(seed), 1)[0], "num_frames": count}
    if video is not None:
        kwargs.pop("num_frames")
        if len(video) < count:
            ctx.log(f"video to video: the source has {len(video)} frames, fewer than {count}")
        kwargs.update(video=_pil_frames(video, count, width, height), strength=float(strength))
        count = len(kwargs["video"])
    window = int(pipe.unet.config.get("motion_max_seq_length", 32) or 32)
    free_noise = travel or count > window
    with entry.lock:
        apply_loras(entry, model)
        _motion_loras(entry, holder, model)
        how = _place_motion(entry, pipe, manager(ctx).dtype)
        if how != "device":
            ctx.log(f"AnimateDiff: motion U-Net placed for {how.replace('_', ' ')} on {entry.device}")
        if free_noise:
            length = min(16, window, count)
            pipe.enable_free_noise(context_length=length, context_stride=max(1, length // 4))
            ctx.log(f"AnimateDiff: FreeNoise over {count} frames, windows of {length}"
                    + (f", prompt travel over {len(text)} keyframes" if travel else ""))
        try:
            out = _sample(ctx, pipe, steps, kwargs)
        finally:
            if free_noise:
                pipe.disable_free_noise()
    clip = _to_video(out, float(fps))
    ctx.annotate("sampling", {"family": fam.name, "variant": variant.name, "task": f"animatediff-{task}",
                              "steps": steps, "guidance": guidance, "frames": clip.length,
                              "motion_adapter": adapter.name})
    return clip
