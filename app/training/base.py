"""Load a base model for training: a private copy, because training injects adapters into it.

The model manager's pipelines are shared with sampling nodes, so the trainer loads its own from
a diffusers folder (`from_pretrained`, offline) or a single `.safetensors` checkpoint
(`from_single_file` with the offline configs in `resources/model_configs/`). Pickled weights
(`.ckpt` files, or a folder of `.bin` files) are refused: they can run code when loaded.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any


class BaseModelError(ValueError):
    """The base model is missing or cannot be used for training; one line naming the file."""


@dataclass
class BaseModel:
    """The parts of a pipeline training touches, and the family ('sd1', 'sd2' or 'sdxl')."""

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


def load_base(source: str | pathlib.Path, device: str = "cpu", dtype: Any = None,
              search: list[pathlib.Path] | None = None) -> BaseModel:
    """Load `source` (a diffusers folder or a single .safetensors file, or a name in the models
    folders) for training; the family detection and configs are the model manager's."""
    import torch

    from app.engine.models import (
        ModelError,
        config_folder,
        detect_family,
        folder_variant,
        pipeline_class,
        refuse_pickle,
        refuse_pickle_folder,
        resolve_source,
    )

    if not str(source).strip():
        raise BaseModelError("no base model given (--base FOLDER_OR_FILE)")
    try:
        path, _hub = resolve_source(str(source), search)
        if path is None:
            raise BaseModelError(f"base model not found: {source} (training needs a local file or folder)")
        refuse_pickle(path)
        family = detect_family(path)
        cls = pipeline_class(family)
        kwargs: dict[str, Any] = {"dtype": dtype or torch.float32, "local_files_only": True}
        if family != "sdxl":
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        if path.is_dir():
            refuse_pickle_folder(path)  # the model manager's rule: Load Model refuses the same folders
            pipe = cls.from_pretrained(str(path), use_safetensors=True, variant=folder_variant(path), **kwargs)
        else:
            pipe = cls.from_single_file(str(path), config=str(config_folder(family)), **kwargs)
    except BaseModelError:
        raise
    except ModelError as exc:
        raise BaseModelError(str(exc)) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BaseModelError(f"cannot load base model {source}: {first[:200]}") from None
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.to(device)  # kept in float32: SDXL's VAE overflows in fp16, and it encodes each image once
    pipe.unet.to(device)
    for te in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if te is not None:
            te.to(device)
    return BaseModel(family, pipe, str(path))
