"""Where the user's models live: the models folder setting and the lists behind the dropdowns.

The folders are `app.paths.models_dirs()` (`IMAGEBASH_MODELS`, else the Settings' models folder,
else `<data dir>/models`). Checkpoints are
looked for in `checkpoints/` (and A1111's `Stable-diffusion/`), LoRAs in `loras/` (and `Lora/`),
and both in the folder itself.
"""

from __future__ import annotations

from pathlib import Path

from app.paths import models_dirs

CHECKPOINT_DIRS = ("checkpoints", "Stable-diffusion", "")
LORA_DIRS = ("loras", "Lora", "")


def search_dirs(kind: str) -> list[Path]:
    subs = CHECKPOINT_DIRS if kind == "checkpoint" else LORA_DIRS
    return [root / sub if sub else root for root in models_dirs() for sub in subs]


def _kind_of(path: Path) -> str | None:
    """"lora" or "checkpoint" for a .safetensors file, from its header (one memoised read, which
    Load Model's detection then reuses); None for a file that is not readable safetensors, so it
    is listed as neither."""
    from app.engine.probe import ProbeError, probe

    try:
        return "lora" if probe(path).looks_like_lora() else "checkpoint"
    except ProbeError:
        return None


def _listing(kind: str) -> list[str]:
    found: dict[str, None] = {}
    for folder in search_dirs(kind):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() == ".safetensors" and _kind_of(p) == kind:
                found.setdefault(p.name, None)
            elif kind == "checkpoint" and p.is_dir() and (p / "model_index.json").is_file():
                found.setdefault(p.name, None)
    return list(found)


def list_checkpoints() -> list[str]:
    """Checkpoint files and diffusers folders in the models folders, by name (workflows stay
    portable: a name is looked up in the models folders of whoever opens the workflow)."""
    return _listing("checkpoint")


def list_loras() -> list[str]:
    """LoRA/DoRA .safetensors files in the models folders, by name."""
    return _listing("lora")


def find(name: str, kind: str) -> Path | None:
    """A relative name looked up in the models folders (None when not there)."""
    for folder in search_dirs(kind):
        candidate = folder / name
        if candidate.exists():
            return candidate
    return None
