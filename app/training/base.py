"""Load a base model for training: a private copy, because training injects adapters into it.

The model manager's pipelines are shared with sampling nodes, so the trainer loads its own from
a diffusers folder (`from_pretrained`, offline) or a single `.safetensors` checkpoint
(`from_single_file` with the offline configs in `resources/model_configs/`). Pickled `.ckpt`
files are refused: they can run code when loaded.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

from app.paths import resource


class BaseModelError(ValueError):
    """The base model is missing or cannot be used for training; one line naming the file."""


@dataclass
class BaseModel:
    """The parts of a pipeline training touches, and the family ('sd15' or 'sdxl')."""

    family: str
    pipe: Any
    source: str

    @property
    def unet(self) -> Any:
        return self.pipe.unet

    @property
    def vae(self) -> Any:
        return self.pipe.vae

    @property
    def text_encoders(self) -> list[Any]:
        return [t for t in (self.pipe.text_encoder, getattr(self.pipe, "text_encoder_2", None)) if t is not None]

    @property
    def tokenizers(self) -> list[Any]:
        return [t for t in (self.pipe.tokenizer, getattr(self.pipe, "tokenizer_2", None)) if t is not None]


def detect_family_folder(folder: pathlib.Path) -> str:
    index = folder / "model_index.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaseModelError(f"{folder} is not a diffusers model folder (no model_index.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BaseModelError(f"cannot read {index}: {exc}") from None
    cls = str(data.get("_class_name", ""))
    if "XL" in cls:
        return "sdxl"
    if cls.startswith("StableDiffusion") or cls == "DiffusionPipeline":
        return "sd15"
    raise BaseModelError(f"{folder}: training supports SD 1.x and SDXL pipelines, not {cls or 'this model'}")


def detect_family_file(path: pathlib.Path) -> str:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:  # noqa: BLE001 - safetensors raises several error types for bad files
        raise BaseModelError(f"cannot read {path} as safetensors: {exc}") from None
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.") for k in keys):
        return "sd15"
    raise BaseModelError(f"{path}: not an SD 1.x or SDXL checkpoint (no text encoder keys found)")


def _pipeline_class(family: str) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def load_base(source: str | pathlib.Path, device: str = "cpu", dtype: Any = None) -> BaseModel:
    """Load `source` (a diffusers folder or a single .safetensors file) for training."""
    import torch

    p = pathlib.Path(source).expanduser()
    if not str(source):
        raise BaseModelError("no base model given (--base FOLDER_OR_FILE)")
    if not p.exists():
        raise BaseModelError(f"base model not found: {p}")
    if p.is_file() and p.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin"):
        raise BaseModelError(f"{p.name}: pickled checkpoints can run code when loaded; "
                             "convert it to .safetensors first")
    dtype = dtype or torch.float32
    if p.is_dir():
        family = detect_family_folder(p)
        try:
            pipe = _pipeline_class(family).from_pretrained(p, local_files_only=True, torch_dtype=dtype)
        except (OSError, ValueError) as exc:
            raise BaseModelError(f"cannot load {p}: {str(exc).splitlines()[0]}") from None
    elif p.suffix.lower() == ".safetensors":
        family = detect_family_file(p)
        config = resource("model_configs", family)
        if not config.is_dir():
            raise BaseModelError(f"{p.name}: no offline config for {family} in {config}; "
                                 "use a diffusers folder instead")
        try:
            pipe = _pipeline_class(family).from_single_file(str(p), config=str(config), local_files_only=True,
                                                            torch_dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise BaseModelError(f"cannot load {p}: {str(exc).splitlines()[0]}") from None
    else:
        raise BaseModelError(f"{p.name}: expected a diffusers folder or a .safetensors checkpoint")
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.to(device, torch.float32)  # SDXL's VAE overflows in fp16; it only encodes once per image
    pipe.unet.to(device)
    for te in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if te is not None:
            te.to(device)
    return BaseModel(family, pipe, str(p))
