"""Reading a family's weights into a diffusers pipeline: folders, single files, split layouts.

The families call these; the model manager calls the family. A single file is read with the
variant's config folder (shipped, or the user's `config=` folder) and `local_files_only`, so no
hub access is needed. ComfyUI's split layout (a denoiser in `diffusion_models/`, encoders in
`text_encoders/`, a VAE in `vae/`) arrives as `Parts`: each extra file is matched to the
pipeline slot its keys and widths fit, never by its name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Prefixes under which single files nest a denoiser (ComfyUI checkpoints, some trainers).
DENOISER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "model.")

#: Components a pipeline is built without: their weights are never read.
UNUSED_COMPONENTS = {"safety_checker", "feature_extractor", "image_encoder"}


class LoadError(ValueError):
    """A model whose files cannot be assembled, with what to do about it."""


@dataclass(frozen=True)
class Parts:
    """Extra files for a split layout: text encoders and a VAE beside a denoiser-only file."""

    text_encoders: tuple[Path, ...] = ()
    vae: Path | None = None

    def __bool__(self) -> bool:
        return bool(self.text_encoders or self.vae)

    def key(self) -> str:
        return "|".join(str(p) for p in (*self.text_encoders, self.vae or "")) if self else ""


def read_tensors(path: Path) -> dict[str, Any]:
    """Every tensor of a .safetensors file; a file that is not one is a LoadError naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types: one line with the name
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LoadError(f"{path.name} is not a readable .safetensors file ({first[:120]})") from None


def load_config(folder: Path, sub: str) -> dict[str, Any]:
    for name in ("config.json", "scheduler_config.json"):
        f = folder / sub / name
        if f.is_file():
            return json.loads(f.read_text(encoding="utf-8"))
    raise LoadError(f"{folder.name}/{sub} has no config.json")


def model_index(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))


def strip_prefix(state: Mapping[str, Any], prefixes: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(denoiser tensors without their prefix, the rest) of a single file."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            return inner, {k: v for k, v in state.items() if not k.startswith(prefix)}
    return dict(state), {}


def component_class(index: Mapping[str, Any], name: str) -> Any:
    """The class model_index.json names for a component (diffusers or transformers)."""
    import importlib

    library, cls_name = index[name]
    module = importlib.import_module(library if library in ("diffusers", "transformers") else "diffusers")
    return getattr(module, cls_name)


def build_empty(cls: Any, config: Mapping[str, Any]) -> Any:
    """A model of `cls` from `config` with no memory behind its weights (filled by `fill`)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if hasattr(cls, "from_config"):
            return cls.from_config(dict(config))
        return cls(cls.config_class(**{k: v for k, v in config.items() if not k.startswith("_")}))


def build_text_model(cls: Any, folder: Path, sub: str) -> Any:
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder / sub), local_files_only=True)
    with init_empty_weights():
        return cls(config)


def fill(model: Any, state: Mapping[str, Any], dtype: Any, what: str) -> Any:
    """Load `state` into an empty model (strict: a missing or extra tensor is an error naming
    `what`), cast to `dtype`; tied tensors the file stores once (T5's embeddings) are tied again."""
    import torch

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    tied = {k for k in missing if _is_tied(model, k)}
    missing = [k for k in missing if k not in tied]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        raise LoadError(f"{what} does not fit the model's config: {'; '.join(parts)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise LoadError(f"{what}: {k} has shape {tuple(v.shape)}, the config expects {tuple(own[k].shape)} "
                            "(a file of another model, or another size of this one: check the file, or set "
                            "Load Model's config folder)")
    cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(cast, strict=False, assign=True)
    if tied and hasattr(model, "tie_weights"):  # T5's embed_tokens is `shared`: files store it once
        model.tie_weights()
    for p in model.parameters():
        if p.device.type == "meta":
            raise LoadError(f"{what}: a weight stayed empty")
    model.to(torch.device("cpu"))
    return model.eval()


def _is_tied(model: Any, key: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or ()
    if isinstance(tied, dict):
        tied = list(tied)
    return any(key == t or key.endswith("." + t) or t in key for t in tied)
