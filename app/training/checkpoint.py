"""Resumable checkpoints: adapter weights, optimizer, LR scheduler, grad scaler, RNG state, step.

A checkpoint is a folder `step_000050/` with `adapter.safetensors`, `rng.safetensors`,
`optimizer.pt` / `scheduler.pt` (torch.save of plain state dicts, read back with
`weights_only=True` so a checkpoint cannot run code), `state.json` and a ready-to-use
`lora.safetensors`. It is written to a temporary folder and renamed, so a crash mid-write never
leaves a half checkpoint that `--resume` would pick up. The settings that shape the adapter or
the data order are stored too: resuming with different ones is an error, not a silent mix. The
batch counts as the global batch (batch_size x gpus): a run of 2 processes with batch 1 resumes in
one process with batch 2, and the other way round.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from dataclasses import dataclass
from typing import Any

#: Settings a resumed run must share with the checkpoint (they change the adapter or the data order).
MUST_MATCH = ("network", "rank", "alpha", "targets", "train_text_encoder", "resolution",
              "grad_accum", "seed", "caption_dropout", "noise_offset", "min_snr_gamma", "timestep_sampling", "shift",
              "logit_mean", "logit_std", "weighting", "guidance", "blocks", "base_precision")


class CheckpointError(ValueError):
    """No checkpoint to resume, or one that does not fit this run; one line saying which."""


@dataclass
class Checkpoint:
    folder: pathlib.Path
    step: int


def step_folder(root: pathlib.Path, step: int) -> pathlib.Path:
    return root / f"step_{step:06d}"


def latest(root: pathlib.Path) -> Checkpoint | None:
    """The newest complete checkpoint under `root`, or None."""
    if not root.is_dir():
        return None
    found = []
    for d in root.iterdir():
        if d.is_dir() and d.name.startswith("step_") and (d / "state.json").is_file():
            try:
                found.append(Checkpoint(d, int(d.name[5:])))
            except ValueError:
                continue
    return max(found, key=lambda c: c.step) if found else None


def save(root: pathlib.Path, step: int, *, adapter: dict[str, Any], optimizer: Any, scheduler: Any,
         scaler: Any | None, rng: dict[str, Any], state: dict[str, Any], keep: int = 3) -> pathlib.Path:
    """Write checkpoint `step` under `root` atomically; keeps the newest `keep` checkpoints."""
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = step_folder(root, step)
    tmp = root / f".tmp_{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, str(tmp / "adapter.safetensors"))
    save_file({k: v.cpu().contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(_scheduler_state(scheduler), tmp / "scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    _prune(root, keep)
    return final


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    # LambdaLR keeps plain functions as None in its state; only numbers and lists remain
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def _prune(root: pathlib.Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted((d for d in root.iterdir() if d.is_dir() and d.name.startswith("step_")), key=lambda d: d.name)
    for d in steps[:-keep]:
        shutil.rmtree(d, ignore_errors=True)


def read_state(ck: Checkpoint) -> dict[str, Any]:
    return json.loads((ck.folder / "state.json").read_text(encoding="utf-8"))


def check_compatible(state: dict[str, Any], config: dict[str, Any], folder: pathlib.Path) -> None:
    saved = state.get("config", {})
    if "batch_size" in saved and _global_batch(saved) != _global_batch(config):
        raise CheckpointError(f"cannot resume from {folder}: it was trained with {_batch_text(saved)}, "
                              f"this run has {_batch_text(config)}")
    for key in MUST_MATCH:
        if key in saved and saved[key] != config.get(key):
            raise CheckpointError(f"cannot resume from {folder}: it was trained with {key}={saved[key]!r}, "
                                  f"this run has {key}={config.get(key)!r}")


def _global_batch(config: dict[str, Any]) -> int:
    """The data order follows the global batch (batch_size x gpus), not how it is split."""
    return int(config.get("batch_size", 1)) * int(config.get("gpus", 1))


def _batch_text(config: dict[str, Any]) -> str:
    bs, gpus = int(config.get("batch_size", 1)), int(config.get("gpus", 1))
    return f"batch_size={bs}" if gpus == 1 else f"batch_size={bs} x gpus={gpus} (a global batch of {bs * gpus})"


def load(ck: Checkpoint, *, optimizer: Any, scheduler: Any,
         scaler: Any | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore optimizer, scheduler and scaler in place; returns (adapter tensors, rng tensors)."""
    import torch
    from safetensors.torch import load_file

    f = ck.folder
    try:
        adapter = load_file(str(f / "adapter.safetensors"))
        rng = load_file(str(f / "rng.safetensors"))
        optimizer.load_state_dict(torch.load(f / "optimizer.pt", weights_only=True, map_location="cpu"))
        sched = torch.load(f / "scheduler.pt", weights_only=True)
        scheduler.load_state_dict({**scheduler.state_dict(), **sched})
        if scaler is not None and (f / "scaler.pt").is_file():
            scaler.load_state_dict(torch.load(f / "scaler.pt", weights_only=True))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {f} is damaged: {str(exc).splitlines()[0]}") from None
    return adapter, rng
