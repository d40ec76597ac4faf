"""Load a base model for training: a private copy, because training injects adapters into it.

The model manager's pipelines are shared with sampling nodes, so the trainer loads its own, but
through the manager's reader (`app.engine.models.read_pipeline`): the same family detection,
offline single-file configs, SD 2.x prediction type (the loss target follows it) and refusal of
pickled weights (`.ckpt` files, or a folder of `.bin` files), so Load Model and Train LoRA cannot
disagree about what a file is. Only the dtype and the device placement are the trainer's; an
inpainting (9-channel) U-Net is read right and then refused, as the objective is text-to-image.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

from app.engine.families import get_family


class BaseModelError(ValueError):
    """The base model is missing or cannot be used for training; one line naming the file."""


@dataclass
class BaseModel:
    """The parts of a pipeline training touches, and the family's name."""

    family: str
    pipe: Any
    source: str
    warnings: list[str] = field(default_factory=list)  # what loading had to assume (for the log)

    @property
    def denoiser(self) -> Any:
        """The U-Net or transformer, whichever the family denoises with."""
        return getattr(self.pipe, get_family(self.family).denoiser)

    @property
    def unet(self) -> Any:
        return self.denoiser

    @property
    def vae(self) -> Any:
        return self.pipe.vae

    @property
    def text_encoders(self) -> list[Any]:
        slots = get_family(self.family).text_encoders
        return [t for t in (getattr(self.pipe, s, None) for s in slots) if t is not None]

    @property
    def tokenizers(self) -> list[Any]:
        slots = [s.replace("text_encoder", "tokenizer") for s in get_family(self.family).text_encoders]
        return [t for t in (getattr(self.pipe, s, None) for s in slots) if t is not None]


def load_base(source: str | pathlib.Path, device: str = "cpu", dtype: Any = None,
              search: list[pathlib.Path] | None = None, parts: Any = None) -> BaseModel:
    """Load `source` (a diffusers folder or a single .safetensors file, or a name in the models
    folders) for training, with the model manager's reader; `warnings` says what it assumed."""
    import torch

    from app.engine.models import ModelError, detect_family, identify, read_pipeline, refuse_pickle, resolve_source

    if not str(source).strip():
        raise BaseModelError("no base model given (--base FOLDER_OR_FILE)")
    try:
        path, _hub = resolve_source(str(source), search)
        if path is None:
            raise BaseModelError(f"base model not found: {source} (training needs a local file or folder)")
        refuse_pickle(path)
        family = detect_family(path)
        spec = get_family(family).training
        if spec is None:
            raise BaseModelError(f"{path.name} is a {get_family(family).title} model, which imagebash cannot "
                                 "train LoRAs for yet")
        pipe, warnings = read_pipeline(path, family, None, dtype or torch.float32, parts)
    except BaseModelError:
        raise
    except ModelError as exc:
        raise BaseModelError(str(exc)) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # e.g. an unreadable model_index.json
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BaseModelError(f"cannot load base model {source}: {first[:200]}") from None
    fam = get_family(family)
    den = getattr(pipe, fam.denoiser)
    in_channels = den.config.in_channels
    _, variant = identify(path)
    if fam.variant(variant).inpaint_native:  # read correctly, but the objective is text-to-image
        what = f"{in_channels}-channel U-Net" if fam.denoiser == "unet" else fam.variant(variant).title
        raise BaseModelError(f"{path.name} is an inpainting model ({what}): LoRA training "
                             "uses the text-to-image objective; train on the model it was made from")
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.to(device)  # kept in float32: SDXL's VAE overflows in fp16, and it encodes each image once
    den.to(device)
    for slot in fam.text_encoders:
        te = getattr(pipe, slot, None)
        if te is not None:
            te.to(device)
    return BaseModel(family, pipe, str(path), warnings)
