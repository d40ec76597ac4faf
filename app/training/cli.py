"""`imagebash train-lora FOLDER --base MODEL --out FILE [options]`: train a style LoRA or DoRA.

Settings come from the defaults, then `--preset`, then `--config file.toml`, then the options
given on the command line (only those actually given override). With `--engine URL` the same
training runs on a remote engine (`app.engine.remote_cli.train_remote`): the dataset goes up by
hash, the checkpoints stay there, the LoRA comes back here. `--gpus N` trains data-parallel in N
processes, one per GPU (`app.training.distributed`), rank 0 reporting here. A progress bar shows steps,
loss and ETA on a terminal, plain lines otherwise. The first Ctrl-C stops after the current step
and saves a checkpoint (`--resume` continues from it); a second one aborts at once. torch is
imported only when a command runs, so `imagebash --help` stays fast.
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import threading
from typing import Any

#: option dest -> TrainConfig field, for the options that map one to one
_OPTION_FIELDS = {
    "trigger": "trigger", "default_caption": "default_caption", "resolution": "resolution",
    "network": "network", "rank": "rank", "alpha": "alpha", "targets": "targets",
    "text_encoder": "train_text_encoder", "lr": "learning_rate", "text_encoder_lr": "text_encoder_lr",
    "scheduler": "lr_scheduler", "warmup": "warmup_steps", "optimizer": "optimizer", "steps": "max_steps",
    "epochs": "epochs", "batch_size": "batch_size", "grad_accum": "grad_accum",
    "gradient_checkpointing": "gradient_checkpointing", "mixed_precision": "mixed_precision",
    "caption_dropout": "caption_dropout", "noise_offset": "noise_offset", "min_snr_gamma": "min_snr_gamma",
    "seed": "seed", "save_every": "save_every", "sample_every": "sample_every", "sample_prompt": "sample_prompts",
    "sample_steps": "sample_steps", "device": "device", "cache_dir": "cache_dir",
    "checkpoint_dir": "checkpoint_dir", "title": "title", "timestep_sampling": "timestep_sampling",
    "shift": "shift", "weighting": "weighting", "guidance": "guidance", "blocks": "blocks",
    "base_precision": "base_precision", "gpus": "gpus",
}


def register(subparsers: Any) -> None:
    """Add the `train-lora` subcommand to the `imagebash` parser."""
    from app.training.config import (
        BASE_PRECISIONS,
        NETWORKS,
        OPTIMIZERS,
        PRECISIONS,
        SCHEDULERS,
        TARGETS,
        TIMESTEP_SAMPLING,
        WEIGHTINGS,
        preset_names,
    )

    S = argparse.SUPPRESS
    p = subparsers.add_parser(
        "train-lora", help="train a style LoRA/DoRA from a folder of images",
        description="Train a LoRA or DoRA on a folder of images (captions from .txt/.caption files, kohya "
                    "repeat folders like 10_style/). Writes FILE in kohya/A1111/ComfyUI format and, for a "
                    "plain LoRA, FILE.peft.safetensors in diffusers/peft format.",
        argument_default=S)
    p.add_argument("folder", type=pathlib.Path, help="folder of images (PNG, JPEG, WebP; subfolders too)")
    p.add_argument("--base", required=True, help="base model: a diffusers folder or a .safetensors checkpoint")
    p.add_argument("--out", help="output .safetensors (default: <data dir>/loras/<folder>.safetensors)")
    presets = ", ".join(preset_names()) or "none installed"
    p.add_argument("--preset", help=f"start from a preset ({presets})")
    p.add_argument("--config", type=pathlib.Path, help="TOML file with settings (same keys as the presets)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    from app.engine.remote_cli import add_engine_options

    add_engine_options(p)
    p.add_argument("--trigger", help="trigger word put in front of every caption")
    p.add_argument("--default-caption", help="caption for images without a caption file")
    p.add_argument("--resolution", type=int, help="training resolution (buckets keep about this area)")
    p.add_argument("--network", choices=NETWORKS, help="lora or dora (default lora)")
    p.add_argument("--rank", type=int, help="adapter rank (default 16)")
    p.add_argument("--alpha", type=float, help="lora alpha; the effective scale is alpha/rank")
    p.add_argument("--targets", choices=TARGETS, help="layers to adapt (default attention)")
    p.add_argument("--text-encoder", action=argparse.BooleanOptionalAction, help="train the text encoder(s) too")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-4)")
    p.add_argument("--text-encoder-lr", type=float, help="text encoder learning rate (default 5e-5)")
    p.add_argument("--scheduler", choices=SCHEDULERS, help="learning-rate schedule (default cosine)")
    p.add_argument("--warmup", type=int, help="warm-up steps")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="adamw or adamw8bit (needs bitsandbytes)")
    p.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=int, help="epochs (default 10)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int, help="gradient accumulation steps")
    p.add_argument("--gpus", type=int, metavar="N",
                   help="train data-parallel in N processes, one per GPU (accelerate); the global batch is "
                        "batch size x N. Without a GPU the N processes run on the CPU (for testing)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                   help="less memory, slower steps (the presets turn it on)")
    p.add_argument("--mixed-precision", choices=PRECISIONS, help="GPU only; auto picks bf16 or fp16")
    p.add_argument("--caption-dropout", type=float, help="probability of training on the empty caption")
    p.add_argument("--noise-offset", type=float)
    p.add_argument("--min-snr-gamma", type=float, help="min-SNR loss weighting (5 is usual; 0 off)")
    p.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLING,
                   help="flow-matching models: how timesteps are drawn (auto: the family's reference)")
    p.add_argument("--shift", type=float, help="flow-matching timestep shift (0: the family's)")
    p.add_argument("--weighting", choices=WEIGHTINGS, help="flow-matching loss weighting (auto: the family's)")
    p.add_argument("--guidance", type=float,
                   help="Flux dev: distilled guidance while training (0: 1.0, as kohya; diffusers uses 3.5)")
    p.add_argument("--blocks", help='train only these blocks, e.g. "double:0-9, single:20-37" (Flux)')
    p.add_argument("--base-precision", choices=BASE_PRECISIONS,
                   help="how the frozen base is stored: full, fp8 weights, nf4 (CUDA, bitsandbytes)")
    p.add_argument("--seed", type=int)
    p.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps")
    p.add_argument("--sample-every", type=int, metavar="N", help="sample images every N steps")
    p.add_argument("--sample-prompt", action="append", help="prompt for sample images (repeatable)")
    p.add_argument("--sample-steps", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--cache-dir", help="where latents and text embeddings are cached")
    p.add_argument("--no-cache", action="store_true", help="do not keep latents on disk")
    p.add_argument("--checkpoint-dir", help="checkpoint folder (default: beside --out)")
    p.add_argument("--title", help="title written into the file's metadata")
    p.add_argument("--quiet", "-q", action="store_true", help="print only warnings and the result")
    p.set_defaults(func=cmd_train_lora)


def build_config(args: argparse.Namespace) -> Any:
    """TrainConfig from preset < config file < given options; ConfigError names a bad setting."""
    from app.training.config import TrainConfig, apply, load_preset, load_toml

    cfg = TrainConfig()
    if getattr(args, "preset", None):
        cfg = load_preset(args.preset, cfg)
    if getattr(args, "config", None):
        cfg = load_toml(args.config, cfg)
    values: dict[str, Any] = {"data": str(args.folder), "base": str(args.base)}
    if getattr(args, "out", None):
        values["out"] = str(args.out)
    for opt, fld in _OPTION_FIELDS.items():
        if hasattr(args, opt):
            values[fld] = getattr(args, opt)
    if getattr(args, "no_cache", False):
        values["cache_latents"] = False
    if "max_steps" not in values and "epochs" in values:
        values["max_steps"] = 0
    return apply(cfg, values, source="command line").validate()


def cmd_train_lora(args: argparse.Namespace) -> int:
    from app.cli import CliError
    from app.training.base import BaseModelError
    from app.training.checkpoint import CheckpointError
    from app.training.config import ConfigError
    from app.training.dataset import DatasetError

    quiet = getattr(args, "quiet", False)
    try:
        cfg = build_config(args)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    from app.engine.remote_cli import engine_url, train_remote

    if engine_url(args):
        return train_remote(args, cfg)
    from app.training.loop import Trainer, TrainingStopped

    stop = threading.Event()
    bar = _ProgressPrinter(quiet=quiet, tty=sys.stderr.isatty())
    resume = getattr(args, "resume", False)
    if cfg.gpus > 1:  # N processes (app.training.distributed); rank 0 reports here as one trainer would
        from app.training.distributed import train as train_parallel

        def run() -> Any:
            return train_parallel(cfg, resume=resume, progress=bar, log=bar.log, stop=stop)
    else:
        trainer = Trainer(cfg, progress=bar, log=bar.log, stop=stop)

        def run() -> Any:
            return trainer.run(resume=resume)
    previous = _install_sigint(stop, bar)
    try:
        result = run()
    except TrainingStopped as exc:
        bar.close()
        print(f"imagebash: {exc}; continue with --resume", file=sys.stderr)
        return 130
    except (DatasetError, BaseModelError, CheckpointError, ConfigError) as exc:
        bar.close()
        raise CliError(str(exc)) from None
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    print("\n".join(str(p) for p in (result.lora, result.peft) if p is not None))
    if not quiet:
        last = sum(result.losses[-20:]) / max(1, len(result.losses[-20:]))
        print(f"trained {result.steps} steps, final loss {last:.4f}; checkpoints in {result.checkpoint.parent}",
              file=sys.stderr)
    return 0


def _install_sigint(stop: threading.Event, bar: _ProgressPrinter) -> Any:
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        bar.log("stopping after this step and saving a checkpoint (Ctrl-C again to abort)")

    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, the caller owns signals
        return signal.getsignal(signal.SIGINT)


class _ProgressPrinter:
    """A tqdm bar (steps, loss, ETA) on a terminal; a line per ~5% otherwise."""

    def __init__(self, quiet: bool, tty: bool) -> None:
        self.quiet = quiet
        self.tty = tty
        self.bar: Any = None
        self.last = -1

    def __call__(self, p: Any) -> None:
        if self.quiet:
            return
        if p.phase != "train":
            if self.bar is not None:
                self.bar.set_description_str(p.phase)
            else:
                print(p.phase, file=sys.stderr)
            return
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=p.total, initial=p.step - 1, unit="step", file=sys.stderr, dynamic_ncols=True)
            self.bar.set_description_str("training")
            self.bar.set_postfix_str(f"loss {p.avg_loss:.4f} lr {p.lr:.1e}", refresh=False)
            self.bar.update(p.step - self.bar.n)
            return
        pct = int(100 * p.fraction) // 5
        if pct != self.last or p.step == p.total:
            self.last = pct
            print(p.text(), file=sys.stderr)

    def log(self, msg: str) -> None:
        if self.quiet and not msg.startswith("warning"):
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
