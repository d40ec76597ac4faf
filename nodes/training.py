"""Train LoRA: a folder of images in, a LoRA file out, so a workflow can train and then use it.

The node runs `app.training.Trainer` with a preset (the "style" preset of the base model's family
unless one is named), overridden by the node's own settings. It is also how the Tools ▸ Train
LoRA dialog trains: the dialog submits a one-node workflow to the engine, so training holds the
device lock and moves the engine's pipelines off the GPU like any other run. Progress goes to
the engine as node progress with metrics (step, total, loss) for a loss plot, sample images as
previews and as "sample" files, the trained LoRA as a "lora" file; cancelling saves a checkpoint
first, and `resume` continues from it. When the output file already holds a LoRA trained with
exactly these settings on exactly these images, the node returns it at once.
"""

from __future__ import annotations

import enum
import hashlib
import json
from pathlib import Path
from typing import Annotated

from app.engine.families import get_family
from nodes.registry import node
from nodes.types import Cancelled, Choices, Context, FileFilter, Help, Multiline, Range, Seed


def _checkpoints() -> list[str]:
    from nodes.diffusion.catalog import list_checkpoints

    return list_checkpoints()


def _presets() -> list[str]:
    from app.training.config import preset_names

    return preset_names()


#: The preset a family trains with when the node names none.


def _base_key(params: dict) -> str:
    """The base model's content (resolved as the node resolves it), so replacing the file re-trains."""
    from app.engine.fingerprint import fingerprint
    from app.engine.models import resolve_source
    from nodes.diffusion.catalog import search_dirs

    path, hub_id = resolve_source(str(params.get("base", "")), search_dirs("checkpoint"))
    return fingerprint(path) if path is not None else f"hub:{hub_id}"


class Network(str, enum.Enum):
    LORA = "lora"
    DORA = "dora"


class Targets(str, enum.Enum):
    ATTENTION = "attention"
    ATTENTION_FF = "attention+ff"


@node("imagebash.training.train_lora", version=1, title="Train LoRA", category="training", device="gpu",
      cacheable=True, cache_key=_base_key)
def train_lora(
    folder: Annotated[Path, FileFilter(folder=True), Help("training images; captions in .txt/.caption files")],
    base: Annotated[str, Choices(_checkpoints, model="checkpoint"),
                    Help("SD 1.x/2.x/XL, Flux.1, SD 3.5 or Qwen-Image: a .safetensors file or "
                         "diffusers folder")] = "",
    out: Annotated[Path | None, FileFilter(("*.safetensors",), save=True)] = None,
    trigger: str = "",
    network: Network = Network.LORA,
    targets: Targets = Targets.ATTENTION,
    rank: Annotated[int, Range(1, 256)] = 16,
    alpha: Annotated[float, Range(0.01, 1024.0, step=0.5)] = 8.0,
    steps: Annotated[int, Range(0, 1_000_000)] = 1000,
    learning_rate: Annotated[float, Range(1e-7, 1.0, step=1e-5)] = 1e-4,
    batch_size: Annotated[int, Range(1, 64)] = 1,
    resolution: Annotated[int, Range(0, 4096, step=64)] = 0,
    train_text_encoder: bool = False,
    seed: Seed = 42,
    save_every: Annotated[int, Range(0, 1_000_000)] = 250,
    sample_every: Annotated[int, Range(0, 1_000_000)] = 0,
    resume: bool = False,
    config: Annotated[Path | None, FileFilter(("*.toml",))] = None,
    preset: Annotated[str, Choices(_presets)] = "",
    epochs: Annotated[int, Range(0, 100_000)] = 0,
    sample_prompts: Annotated[str, Multiline()] = "",
    sample_steps: Annotated[int, Range(0, 1000)] = 0,
    gpus: Annotated[int, Range(1, 64)] = 1,
    ctx: Context = None,
) -> Path:
    """Train a style LoRA or DoRA on a folder of images and return the .safetensors file.

    The file is in kohya/A1111/ComfyUI format (for a plain LoRA, a diffusers/peft twin is written
    beside it as NAME.peft.safetensors), ready for a LoRA node downstream. Settings not shown here come from
    the "style" preset for the model family, or from a TOML config file.

    Args:
        folder: Folder of training images (PNG, JPEG, WebP, subfolders too; `10_name/` repeats 10x).
        base: The base model to train on.
        out: Where to write the LoRA (default: the models folder's loras/, named after the folder).
        trigger: Word put in front of every caption; use it in prompts to call up the style.
        network: LoRA, or DoRA (adds a learned magnitude per input channel).
        targets: Layers to adapt: attention only, or attention and feed-forward.
        rank: Adapter rank (capacity); 8-32 suits a style.
        alpha: LoRA alpha; the effective scale is alpha / rank.
        steps: Optimizer steps to train.
        learning_rate: U-Net learning rate.
        batch_size: Images per step.
        resolution: Training resolution; 0 uses the family's (512 for SD 1.x, 1024 for SDXL).
        train_text_encoder: Train the text encoder(s) too (SDXL presets keep them frozen).
        seed: Random seed: the same seed and data train the same weights.
        save_every: Save a resumable checkpoint every N steps (0: only at the end and on cancel).
        sample_every: Render a sample image every N steps (shown as the node's preview).
        resume: Continue from the newest checkpoint of a stopped run.
        config: Optional TOML file with more settings (same keys as the presets).
        preset: A training preset (resources/presets); empty: the style preset of the base's family.
        epochs: Passes over the images, used when steps is 0 (0: the preset's).
        sample_prompts: Prompts for the sample images, one per line (empty: the trigger word).
        sample_steps: Sampling steps of the sample images (0: the preset's).
        gpus: Train data-parallel on this many GPUs (accelerate; batch_size is per GPU).
    """
    from app.training.base import BaseModelError
    from app.training.checkpoint import CheckpointError
    from app.training.config import ConfigError
    from app.training.dataset import DatasetError
    from app.training.loop import Trainer, TrainingStopped

    cfg = _config(folder, base, out, trigger, network, targets, rank, alpha, steps, learning_rate, batch_size,
                  resolution, train_text_encoder, seed, save_every, sample_every, config, preset, epochs,
                  sample_prompts, sample_steps, ctx.device, gpus)
    key = _train_key(cfg)
    target = Path(cfg.out)
    if not resume and _trained_with(target, key):
        ctx.log(f"{target.name} is up to date with these settings and images; not training again")
        ctx.progress(1.0, text="up to date")
        return target

    # Training loads its own copy of the base: the engine's pipelines leave the GPU first (they stay
    # in RAM, and the next sampling node moves its model back), so train-then-use never holds two.
    ctx.service("models").offload_all()

    done = [0.0]  # the last progress fraction (a data-parallel run's trainer is in other processes)

    def progress(p) -> None:
        done[0] = p.fraction
        ctx.progress(p.fraction, text=p.text(), metrics=_metrics(p))

    def samples(paths: list[Path]) -> None:
        for path in paths:
            ctx.add_file(path, "sample")
        ctx.progress(done[0], preview=_preview(paths[-1]))

    metadata = {"imagebash.train_key": key}
    if cfg.gpus > 1:
        from app.training import distributed

        def run():
            return distributed.train(cfg, resume=resume, progress=progress, log=ctx.log, stop=ctx.cancel_event,
                                     on_samples=samples, extra_metadata=metadata)

        def close() -> None:
            """The launched processes have exited (and freed their copy) by the time run returns."""
    else:
        trainer = Trainer(cfg, progress=progress, log=ctx.log, stop=ctx.cancel_event)
        trainer.on_samples = samples
        trainer.extra_metadata = metadata

        def run():
            return trainer.run(resume=resume)

        close = trainer.close
    try:
        result = run()
    except TrainingStopped as exc:
        r = exc.result
        ctx.progress(done[0], text=f"stopped at step {r.steps}/{r.total_steps}",
                     metrics={"step": r.steps, "total": r.total_steps, "phase": "stopped",
                              "checkpoint": str(r.checkpoint or "")})
        ctx.log(f"{exc}; run again with resume on to continue")
        raise Cancelled(f"{exc}; run again with resume on to continue") from None
    except (DatasetError, BaseModelError, CheckpointError, ConfigError) as exc:
        raise ValueError(str(exc)) from None
    finally:
        close()  # the LoRA node downstream loads the base again: free this copy first
    ctx.annotate("lora_training", {"file": result.lora.name, "steps": result.steps, "network": cfg.network,
                                   "rank": cfg.rank, "alpha": cfg.alpha})
    for path in (result.lora, result.peft):
        if path is not None:
            ctx.add_file(path, "lora")
    return result.lora


def _metrics(p) -> dict:
    """A trainer Progress as plain numbers (NaN, which JSON lacks, as None)."""
    loss = p.avg_loss if p.avg_loss == p.avg_loss else None
    eta = p.eta if p.eta == p.eta and p.eta not in (float("inf"), float("-inf")) else None
    return {"step": p.step, "total": p.total, "loss": loss, "lr": p.lr, "elapsed": p.elapsed, "eta": eta,
            "phase": p.phase}


def _config(folder, base, out, trigger, network, targets, rank, alpha, steps, learning_rate, batch_size,
            resolution, train_text_encoder, seed, save_every, sample_every, config, preset="", epochs=0,
            sample_prompts="", sample_steps=0, device="auto", gpus=1):
    from app.engine.models import ModelError, detect_family, resolve_source
    from app.training.config import ConfigError, TrainConfig, load_preset, load_toml, lora_out_path
    from nodes.diffusion.catalog import search_dirs

    if not str(base).strip():
        raise ValueError("no base model chosen")
    try:
        path, _hub = resolve_source(base, search_dirs("checkpoint"))
        if path is None:
            raise ValueError(f"base model not found: {base} (training needs a local file or folder)")
        family = detect_family(path)
    except ModelError as exc:
        raise ValueError(str(exc)) from None
    try:
        spec = get_family(family).training
        if spec is None and not str(preset).strip():
            raise ValueError(f"{path.name} is a {get_family(family).title} model: LoRA training covers "
                             "Stable Diffusion 1.x, 2.x and XL for now")
        cfg = load_preset(str(preset).strip() or spec.preset, TrainConfig())
        if config is not None and str(config):
            cfg = load_toml(config, cfg)
        folder = Path(folder).expanduser()
        out = "" if out is None or str(out) in ("", ".") else str(Path(out).expanduser())
        values = {"data": str(folder), "base": str(path), "out": out, "trigger": trigger,
                  "network": network.value, "targets": targets.value, "rank": rank, "alpha": alpha,
                  "max_steps": steps, "learning_rate": learning_rate, "batch_size": batch_size,
                  "train_text_encoder": train_text_encoder, "seed": int(seed), "save_every": save_every,
                  "sample_every": sample_every, "device": device, "gpus": gpus}
        if resolution:
            values["resolution"] = resolution
        if epochs:
            values["epochs"] = epochs
        prompts = tuple(line.strip() for line in str(sample_prompts).splitlines() if line.strip())
        if prompts:
            values["sample_prompts"] = prompts
        if sample_steps:
            values["sample_steps"] = sample_steps
        cfg = cfg.replace(**values)
        return cfg.replace(out=str(lora_out_path(cfg))).validate()
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


#: TrainConfig fields added after the first trainer (flow matching, data-parallel GPUs): see `_train_key`.
FLOW_FIELDS = ("timestep_sampling", "shift", "logit_mean", "logit_std", "weighting", "guidance", "blocks",
               "base_precision", "family", "gpus")


def _train_key(cfg) -> str:
    """A digest of the settings and of every training image and caption, and of the base model."""
    from app.engine.fingerprint import fingerprint

    d = cfg.to_dict()
    for k in ("out", "checkpoint_dir", "cache_dir", "device", "extra"):
        d.pop(k, None)
    from app.training.config import TrainConfig

    defaults = TrainConfig().to_dict()
    for k in FLOW_FIELDS:  # settings added with flow matching: at their defaults they leave the key as it
        if d.get(k) == defaults[k]:  # was, so a LoRA trained before them is still up to date
            d.pop(k, None)
    d["data_fingerprint"] = fingerprint(cfg.data)
    d["base_fingerprint"] = fingerprint(cfg.base)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]


def _trained_with(path: Path, key: str) -> bool:
    from app.engine.probe import ProbeError, probe

    if not path.is_file():
        return False
    try:
        return probe(path).metadata.get("imagebash.train_key") == key
    except ProbeError:  # an unreadable file is simply not up to date
        return False


def _preview(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return (np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)[None]
