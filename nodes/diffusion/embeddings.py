"""Textual-inversion embeddings named in prompts, as ComfyUI writes them: `embedding:NAME`.

ComfyUI users (and their imported workflows) put `embedding:easynegative` or `(embedding:x:1.2)`
in a prompt; A1111 users the file's bare name, which we leave alone (it is an ordinary word too).
Each named file (`embeddings/NAME.safetensors`; pickled `.pt` files are never read) is loaded once
per base pipeline through diffusers' textual-inversion loader under a token of its own, and the
prompt's `embedding:NAME` is replaced by that token; SDXL files carry one tensor per text encoder
(`clip_l`, `clip_g`). A name that is not there, or a family without CLIP text encoders, is one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nodes.diffusion.catalog import find

#: `embedding:NAME` (NAME may hold dots, dashes and a file suffix), optionally inside ComfyUI's
#: `(embedding:NAME:weight)` emphasis, whose weight is kept for the prompt's own syntax.
PATTERN = re.compile(r"embedding:([\w.\-]+?)(?:\.safetensors|\.pt|\.bin)?(?=[\s,:)]|$)", re.IGNORECASE)


def names(text: str) -> list[str]:
    return [m.group(1) for m in PATTERN.finditer(text or "")]


def _token(name: str) -> str:
    return f"<emb-{name.lower()}>"


def _file(name: str) -> Path:
    path = find(name + ".safetensors", "embedding") or find(name, "embedding")
    if path is None:
        pickled = find(name + ".pt", "embedding")
        if pickled is not None:
            raise ValueError(f"embedding '{name}' is a pickle ({pickled.name}): imagebash never unpickles a "
                             "file it was handed; use its .safetensors version")
        raise ValueError(f"embedding '{name}' not found: put {name}.safetensors in the models folder's embeddings/")
    return path


def _load(pipe: Any, name: str, path: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    token = _token(name)
    pairs = [("clip_l", "text_encoder", "tokenizer"), ("clip_g", "text_encoder_2", "tokenizer_2")]
    if not any(k in tensors for k, _, _ in pairs):  # SD 1.x / 2.x: one tensor (emb_params, or any single key)
        if len(tensors) != 1:
            raise ValueError(f"{path.name}: not a textual-inversion embedding (keys: {', '.join(sorted(tensors))})")
        pairs, tensors = [("only", "text_encoder", "tokenizer")], {"only": next(iter(tensors.values()))}
    for key, encoder, tokenizer in pairs:
        if key not in tensors or getattr(pipe, encoder, None) is None:
            continue
        width = getattr(pipe, encoder).get_input_embeddings().weight.shape[1]
        if tensors[key].shape[-1] != width:
            raise ValueError(f"embedding '{name}' is {tensors[key].shape[-1]} wide, the model's text encoder "
                             f"{width}: it was made for another model family")
        pipe.load_textual_inversion({token: tensors[key]}, token=token, text_encoder=getattr(pipe, encoder),
                                    tokenizer=getattr(pipe, tokenizer))


def apply(entry: Any, prompts: list[Any]) -> list[Any]:
    """`prompts` (strings, lists of strings or None) with every `embedding:NAME` replaced by its
    token, loading each named embedding into the entry's base pipeline once."""
    wanted = {n for p in prompts for text in (p if isinstance(p, list) else [p]) if isinstance(text, str)
              for n in names(text)}
    if not wanted:
        return prompts
    pipe = entry.pipe
    if not hasattr(pipe, "load_textual_inversion"):
        raise ValueError(f"embeddings ({', '.join(sorted(wanted))}) are for SD 1.x, 2.x and XL text encoders; "
                         "this model has none")
    loaded: set[str] = entry.state.setdefault("embeddings", set())
    with entry.lock:
        for name in sorted(wanted):
            if name.lower() not in loaded:
                _load(pipe, name, _file(name))
                loaded.add(name.lower())

    def swap(text: Any) -> Any:
        if isinstance(text, list):
            return [swap(t) for t in text]
        return PATTERN.sub(lambda m: _token(m.group(1)), text) if isinstance(text, str) else text

    return [swap(p) for p in prompts]
