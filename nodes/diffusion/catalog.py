"""Where the user's models live: the models folder setting and the lists behind the dropdowns.

The folders are `app.paths.models_dirs()` (`IMAGEBASH_MODELS`, else the Settings' models folder,
else `<data dir>/models`). Checkpoints are looked for in `checkpoints/` (and A1111's
`Stable-diffusion/`, ComfyUI's `diffusion_models/` and `unet/` for denoiser-only files), LoRAs in
`loras/` (and `Lora/`), text encoders in `text_encoders/` (and `clip/`), VAEs in `vae/`, and
checkpoints and LoRAs also in the folder itself, so a ComfyUI `models/` folder works as is.
"""

from __future__ import annotations

from pathlib import Path

from app.paths import models_dirs

DIRS = {
    "checkpoint": ("checkpoints", "Stable-diffusion", "diffusion_models", "unet", ""),
    "lora": ("loras", "Lora", ""),
    "text_encoder": ("text_encoders", "clip"),
    "vae": ("vae", "VAE"),
    "controlnet": ("controlnet", "ControlNet"),
    "ipadapter": ("ipadapter", "ip_adapter"),
    "clip_vision": ("clip_vision", "image_encoder"),
    "embedding": ("embeddings",),
}


def search_dirs(kind: str) -> list[Path]:
    return [root / sub if sub else root for root in models_dirs() for sub in DIRS[kind]]


def _kind_of(path: Path, kind: str) -> str | None:
    """"lora" or "checkpoint" for a .safetensors file, from its header (one memoised read, which
    Load Model's detection then reuses); None for a file that is not readable safetensors, so it
    is listed as neither. Files in the text-encoder and VAE folders are what their folder says."""
    from app.engine.probe import ProbeError, probe

    try:
        header = probe(path)
    except ProbeError:
        return None
    if kind in ("text_encoder", "vae", "controlnet", "ipadapter", "clip_vision", "embedding"):
        return kind
    return "lora" if header.looks_like_lora() else "checkpoint"


def _listing(kind: str) -> list[str]:
    found: dict[str, None] = {}
    for folder in search_dirs(kind):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in (".safetensors", ".gguf") and (
                    (p.suffix.lower() == ".gguf" and kind == "checkpoint") or _kind_of(p, kind) == kind):
                found.setdefault(p.name, None)
            elif kind == "checkpoint" and p.is_dir() and (p / "model_index.json").is_file():
                found.setdefault(p.name, None)
            elif kind in ("controlnet", "clip_vision") and p.is_dir() and (p / "config.json").is_file():
                found.setdefault(p.name, None)
    return list(found)


def list_checkpoints() -> list[str]:
    """Checkpoint files and diffusers folders in the models folders, by name (workflows stay
    portable: a name is looked up in the models folders of whoever opens the workflow)."""
    return _listing("checkpoint")


def list_loras() -> list[str]:
    """LoRA/DoRA .safetensors files in the models folders, by name."""
    return _listing("lora")


def list_text_encoders() -> list[str]:
    """Text-encoder files (CLIP-L/G, T5-XXL, Qwen2.5-VL) for split-layout models, by name."""
    return _listing("text_encoder")


def list_controlnets() -> list[str]:
    """ControlNet files and diffusers folders in the models folders' controlnet/, by name."""
    return _listing("controlnet")


def list_ip_adapters() -> list[str]:
    """IP-Adapter .safetensors files in the models folders' ipadapter/, by name."""
    return _listing("ipadapter")


def list_image_encoders() -> list[str]:
    """CLIP vision encoder folders (transformers format) in clip_vision/, by name."""
    return _listing("clip_vision")


def list_vaes() -> list[str]:
    """VAE files for split-layout models, by name."""
    return _listing("vae")


def find(name: str, kind: str) -> Path | None:
    """A relative name looked up in the models folders (None when not there)."""
    for folder in search_dirs(kind):
        candidate = folder / name
        if candidate.exists():
            return candidate
    return None
