"""Latent and text-embedding cache: the VAE and text encoders run once per image and caption.

Entries live on disk (safetensors, keyed by the image's content, its bucket and crop, and the
model) and in memory for the run, so epochs after the first skip the VAE and text encoders, and
a resumed or repeated run skips them from the start. The empty caption is cached like any
other, so caption dropout keeps working with a cached text encoder (kohya silently turns dropout
off when its text cache is on).
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

from app.engine.families import get_family
from app.training.dataset import Item, load_pixels

_VERSION = "1"


class EmbeddingCache:
    """get_latent(item) and get_text(caption), computed on first use and kept on disk and in RAM."""

    def __init__(self, base: Any, folder: pathlib.Path | None, device: str, model_key: str,
                 persist: bool = True) -> None:
        self.base = base
        self.device = device
        self.folder = folder / model_key[:24] if folder is not None else None
        self.persist = persist and folder is not None
        self.model_key = model_key
        self._latents: dict[str, Any] = {}
        self._texts: dict[str, dict[str, Any]] = {}
        self._hashes: dict[pathlib.Path, str] = {}
        self.encoded_images = 0  # how often the VAE ran (for tests and the benchmark)
        self.encoded_texts = 0

    # keys --------------------------------------------------------------------------------------
    def _image_key(self, item: Item) -> str:
        h = self._hashes.get(item.path)
        if h is None:
            h = self._hashes[item.path] = item.content_hash()
        f = item.fit
        spec = f"{_VERSION}|{h}|{f.bucket}|{f.resized}|{f.left},{f.top}"
        return hashlib.sha256(spec.encode()).hexdigest()[:32]

    def _text_key(self, caption: str) -> str:
        return hashlib.sha256(f"{_VERSION}|{caption}".encode()).hexdigest()[:32]

    # latents -----------------------------------------------------------------------------------
    def latent(self, item: Item) -> Any:
        """The scaled latent (4, h/8, w/8) of `item`, on the CPU in float32."""
        key = self._image_key(item)
        hit = self._latents.get(key)
        if hit is None:
            hit = self._read("latents", key)
            hit = hit["latent"] if hit is not None else None
        if hit is None:
            hit = self.encode_image(item)
            self.encoded_images += 1
            self._write("latents", key, {"latent": hit})
        self._latents[key] = hit
        return hit

    def encode_image(self, item: Item) -> Any:
        import torch

        fam = get_family(self.base.family)
        vae = self.base.vae
        px = load_pixels(item)[None].to(vae.device, vae.dtype)  # wherever the VAE is (parked on the CPU or not)
        with torch.no_grad():
            lat = fam.to_model_space(vae, fam.vae_encode(vae, px))
        return lat[0].float().cpu().contiguous()

    # text --------------------------------------------------------------------------------------
    def text(self, caption: str) -> dict[str, Any]:
        """{'hidden': (77, D)[, 'pooled': (D2,)]} for `caption`, on the CPU."""
        key = self._text_key(caption)
        hit = self._texts.get(key) or self._read("text", key)
        if hit is None:
            hit = {k: v[0].float().cpu().contiguous() for k, v in self.encode_text([caption]).items()}
            self.encoded_texts += 1
            self._write("text", key, hit)
        self._texts[key] = hit
        return hit

    def encode_text(self, captions: list[str], grad: bool = False) -> dict[str, Any]:
        """Run the text encoder(s) on a batch, as the model's family conditions on text."""
        return encode_prompts(self.base, captions, self.device, grad=grad)

    # disk --------------------------------------------------------------------------------------
    def _path(self, kind: str, key: str) -> pathlib.Path | None:
        return self.folder / kind / f"{key}.safetensors" if self.folder is not None else None

    def _read(self, kind: str, key: str) -> dict[str, Any] | None:
        p = self._path(kind, key)
        if not self.persist or p is None or not p.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError):
            return None  # a torn write from a killed run: recompute

    def _write(self, kind: str, key: str, tensors: dict[str, Any]) -> None:
        p = self._path(kind, key)
        if not self.persist or p is None:
            return
        from safetensors.torch import save_file

        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(p)


def encode_prompts(base: Any, captions: list[str], device: str, grad: bool = False) -> dict[str, Any]:
    """The family's text conditioning of a batch (see `Family.encode_prompts`)."""
    return get_family(base.family).encode_prompts(base.pipe, captions, device, grad=grad)
