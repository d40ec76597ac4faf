"""Load Model and LoRA: handles into the model manager, never the weights themselves.

Load Model is an io node: it fetches its source (a hub download can take minutes) without the
engine's device lock, then takes the lock only to read the weights and place them.
"""

from __future__ import annotations

import enum
from dataclasses import replace
from pathlib import Path
from typing import Annotated

from app.engine.families import get_family
from app.engine.families.loading import Parts
from app.engine.fingerprint import fingerprint, short_hash
from nodes.diffusion.catalog import find, list_checkpoints, list_loras, list_text_encoders, list_vaes, search_dirs
from nodes.diffusion.loras import ensure_adapter, expert_choice
from nodes.diffusion.sampling import manager
from nodes.registry import node
from nodes.types import Choices, Context, FileFilter, Help, LoraRef, Model, Range


def model_hash(path: Path) -> str:
    """Short content hash for provenance: the file, or a diffusers folder's UNet weights."""
    if path.is_file():
        return short_hash(path)
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        for sub in ("unet", "transformer"):
            weights = path / sub / name
            if weights.is_file():
                return short_hash(weights)
    return fingerprint(path).split(":")[-1][:10]


def _checkpoint_key(params: dict) -> str:
    """The checkpoint's content, so replacing the file on disk re-runs Load Model."""
    from app.engine.models import resolve_source

    path, hub_id = resolve_source(str(params.get("checkpoint", "")), search_dirs("checkpoint"))
    return fingerprint(path) if path is not None else f"hub:{hub_id}"


def lora_path(file: str) -> Path:
    """The LoRA file a node's `file` names: a path, or a name in the models folders' loras/.

    Raises FileNotFoundError (one line, the name quoted) when there is no such file, including
    names no file system can hold (too long, an unknown ~user, a NUL byte)."""
    name = str(file).strip()
    if not name:
        raise ValueError("no LoRA file chosen")
    try:
        path = Path(name).expanduser()
        if not path.is_absolute() and not path.exists():
            path = find(name, "lora") or path
        if path.is_file():
            return path
    except (OSError, RuntimeError, ValueError):
        pass
    from app.library.missing import where_to_get

    raise FileNotFoundError(f"LoRA file not found: {name!r} ({where_to_get(name, 'lora')})")


def _lora_key(params: dict) -> str:
    """The LoRA file's content, so retraining a LoRA in place re-runs what uses it."""
    try:
        return fingerprint(lora_path(str(params.get("file", ""))))
    except (FileNotFoundError, ValueError):
        return "missing"


class LoraExpert(str, enum.Enum):
    """Which experts of a two-expert model (Wan 2.2 A14B) a LoRA reaches."""

    BOTH = "both"
    HIGH_NOISE = "high_noise"
    LOW_NOISE = "low_noise"


class MemoryMode(str, enum.Enum):
    AUTO = "auto"
    FULL = "full"
    FP8 = "fp8"
    NF4 = "nf4"
    MODEL_OFFLOAD = "model_offload"
    GROUP_OFFLOAD = "group_offload"
    SEQUENTIAL_OFFLOAD = "sequential_offload"


def part_path(name: str, kind: str) -> Path:
    """A split-layout file a Load Model port names: a path, or a name in the models folders."""
    path = Path(str(name).strip()).expanduser()
    if not path.is_absolute() and not path.exists():
        path = find(str(name).strip(), kind) or path
    if not path.is_file():
        from app.library.missing import where_to_get

        what = "text encoder" if kind == "text_encoder" else "VAE"
        raise FileNotFoundError(f"{what} file not found: {name!r} ({where_to_get(name, kind)})")
    return path


def _parts(text_encoder: str, text_encoder_2: str, text_encoder_3: str, vae: str) -> Parts:
    files = tuple(part_path(n, "text_encoder") for n in (text_encoder, text_encoder_2, text_encoder_3)
                  if str(n).strip())
    return Parts(files, part_path(vae, "vae") if str(vae).strip() else None)


def _load_key(params: dict) -> str:
    """The checkpoint's and the split-layout files' content, so replacing one re-runs Load Model."""
    key = _checkpoint_key(params)
    for port, kind in (("text_encoder", "text_encoder"), ("text_encoder_2", "text_encoder"),
                       ("text_encoder_3", "text_encoder"), ("vae", "vae")):
        name = str(params.get(port, "") or "").strip()
        if name:
            try:
                key += "|" + fingerprint(part_path(name, kind))
            except FileNotFoundError:
                key += "|missing:" + name
    return key


TextEncoderFile = Annotated[str, Choices(list_text_encoders, model="text_encoder"),
                            Help("split layout: a text-encoder file (ComfyUI models/text_encoders)")]


@node("imagebash.diffusion.load_model", version=1, title="Load Model", category="diffusion",
      io=True, cache_key=_load_key)
def load_model(
    checkpoint: Annotated[str, Choices(list_checkpoints, model="checkpoint"),
                          Help("a .safetensors checkpoint, a diffusers folder or a hub repo id")] = "",
    config: Annotated[Path | None, FileFilter(folder=True)] = None,
    text_encoder: TextEncoderFile = "",
    text_encoder_2: TextEncoderFile = "",
    text_encoder_3: TextEncoderFile = "",
    vae: Annotated[str, Choices(list_vaes, model="vae"),
                   Help("split layout: the VAE file (ComfyUI models/vae, e.g. ae.safetensors)")] = "",
    memory: Annotated[MemoryMode, Help("auto plans from free memory; the others force a mode")] = MemoryMode.AUTO,
    ctx: Context = None,
) -> Model:
    """Load a model of any supported family: SD 1.x/2.x/XL, Flux.1, SD 3.5, Qwen-Image.

    The family and variant are read from the weights, never from the file name. Loaded once and
    shared: every workflow naming the same files uses the same weights in memory.

    Args:
        checkpoint: A single-file .safetensors checkpoint (whole, or only the denoiser as ComfyUI's
            diffusion_models/ holds it), a diffusers folder, or a Hugging Face repo id (downloaded
            into the hub cache when online). Names are also looked up in the models folders.
        config: Optional diffusers config folder for a single-file checkpoint of unusual geometry
            (default: the configs shipped for each family's released variants).
        text_encoder: For a denoiser-only file: its text encoders (any order; each goes to the
            slot its weights fit, e.g. clip_l and t5xxl for Flux.1).
        vae: For a denoiser-only file: its VAE.
        memory: How the weights are held: auto picks from the model's size and the free memory
            (and says why in the log); fp8 halves the big layers, the offload modes trade speed
            for VRAM, nf4 needs bitsandbytes on CUDA.
    """
    models = manager(ctx)

    def progress(fraction: float, text: str) -> None:
        ctx.progress(fraction, text=text)

    search = search_dirs("checkpoint")
    parts = _parts(text_encoder, text_encoder_2, text_encoder_3, vae)
    # An io node: a hub download runs outside the device lock (GPU nodes keep running), and
    # only reading the weights and placing them on the device waits for it.
    models.fetch(checkpoint, progress, search)
    with ctx.device_lock():
        entry = models.load(checkpoint, config, progress, search=search, parts=parts, memory=memory.value)
    path = Path(entry.source)
    digest = model_hash(path)
    fam = get_family(entry.family)
    variant = fam.variant(entry.variant)
    ctx.annotate("model", {"name": path.name, "hash": digest, "family": entry.family, "variant": entry.variant})
    ctx.log(f"{path.name}: {variant.title} ({entry.family}/{entry.variant}), {entry.nbytes / 2**20:.0f} MiB on "
            f"{entry.device}, memory: {entry.state.get('memory_mode', 'full')}")
    if entry.state.get("memory_plan"):
        ctx.log(entry.state["memory_plan"])
    for warning in entry.state.get("warnings", ()):
        ctx.log(warning, "warning")
    extra: dict = {"config": str(config)} if config else {}
    if memory is not MemoryMode.AUTO:
        extra["memory"] = memory.value
    if parts:
        extra["text_encoders"] = [str(p) for p in parts.text_encoders]
        if parts.vae:
            extra["vae"] = str(parts.vae)
    return Model(key=entry.key, family=entry.family, source=entry.source, hash=digest, extra=extra)


@node("imagebash.diffusion.lora", version=1, title="LoRA", category="diffusion", device="gpu",
      cache_key=_lora_key)
def lora(
    model: Model,
    file: Annotated[str, Choices(list_loras, model="lora"),
                    Help("kohya/A1111, diffusers or peft .safetensors; LoRA or DoRA")] = "",
    weight: Annotated[float, Range(-4.0, 4.0, step=0.05)] = 1.0,
    expert: Annotated[LoraExpert, Help("Wan 2.2 A14B: the experts it reaches (high_noise: the early steps, "
                                       "low_noise: the late ones); one-expert models ignore it")] = LoraExpert.BOTH,
    ctx: Context = None,
) -> Model:
    """Add one LoRA (or DoRA) to the model's stack; chain several LoRA nodes for a stack.

    The base model is not reloaded: the file is loaded once as a named adapter and its weight is
    applied at sampling time, so changing the weight only re-runs the samplers. Keys that match
    no module of the model are counted and reported.

    Args:
        model: The model (with any LoRAs already stacked on it).
        file: The LoRA file, a path or a name in the models folder's loras/.
        weight: Strength; 0 turns this LoRA off, negative values invert it.
        expert: On a Wan 2.2 A14B model (two experts), which experts the file's keys reach when
            they do not say (ComfyUI, diffusion-pipe, musubi files): both, as one LoRA per expert
            in ComfyUI; keys under `transformer_2.` always go to the low-noise expert.
    """
    path = lora_path(file)
    digest = short_hash(path)
    entry = manager(ctx).entry(model, lambda f, t: ctx.progress(0.0, text=t))
    choice = LoraExpert(expert).value
    choice = "" if choice == LoraExpert.BOTH.value else choice
    _applied, note = expert_choice(entry, choice)
    if note:
        ctx.log(f"{path.name}: {note}")
    info = ensure_adapter(entry, path, digest, expert=choice)
    text = info.report()
    ctx.log(text, "warning" if info.unmatched else "info")
    ctx.progress(1.0, text=text)
    ctx.annotate("lora", {"name": path.name, "hash": digest, "weight": float(weight),
                          "unmatched_keys": len(info.unmatched)})
    return replace(model, loras=(*model.loras, LoraRef(str(path.resolve()), float(weight), digest, path.stem,
                                                       choice)))
