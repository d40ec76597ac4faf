"""ControlNet: steer a model's composition with a control image (edges, depth, pose, tiles).

The node loads the net once into the model manager (shared, like a base model) and adds it to
the model handle's control stack, as the LoRA node adds a LoRA: chain several for several nets,
each with its own image, strength and window of the steps. The sampling nodes (Text to Image,
Image to Image, Inpaint, Outpaint, Sample) then run the family's ControlNet pipeline over the
base's modules, so changing a strength or an image never reloads a model. A net of another family
than the model, a window that ends before it starts, or a missing file is one clear line.

A mask limits where a net steers: its residuals (spatial maps for U-Nets, image tokens for Flux)
are multiplied by the mask at their own resolution. The multiplication is installed once on a
net's forward and reads the masks of the sampling running in this context (a ContextVar), so a
net shared by two models sampling at once never sees the other's mask.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from app.engine.families import get_family
from app.engine.fingerprint import fingerprint
from nodes.diffusion.catalog import find, list_controlnets, search_dirs
from nodes.registry import node
from nodes.types import Choices, Context, ControlRef, Help, Image, Mask, Model, Range


def controlnet_path(name: str) -> str:
    """The ControlNet a node names: a path, a name in the models folders' controlnet/, or a hub id."""
    text = str(name).strip()
    if not text:
        raise ValueError("no ControlNet chosen: pick a file or folder from the models folder's controlnet/")
    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute():
        path = find(text, "controlnet") or path
    return str(path) if path.exists() else text


def _key(params: dict) -> str:
    try:
        source = controlnet_path(str(params.get("controlnet", "")))
    except ValueError:
        return "missing"
    return fingerprint(Path(source)) if Path(source).exists() else f"hub:{source}"


def image_hash(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image, np.float32).tobytes(), digest_size=8).hexdigest()


@node("imagebash.guidance.controlnet", version=1, title="ControlNet", category="guidance", device="gpu",
      cache_key=_key)
def controlnet(
    model: Model,
    image: Image,
    controlnet: Annotated[str, Choices(list_controlnets, model="controlnet"),
                          Help("a ControlNet folder or .safetensors file of the model's family")] = "",
    strength: Annotated[float, Range(0.0, 2.0, step=0.05)] = 1.0,
    start: Annotated[float, Range(0.0, 1.0, step=0.01), Help("fraction of the steps where it starts")] = 0.0,
    end: Annotated[float, Range(0.0, 1.0, step=0.01), Help("fraction of the steps where it stops")] = 1.0,
    mode: Annotated[int, Range(-1, 12), Help("Union ControlNets: the control type; -1 for other nets")] = -1,
    mask: Mask | None = None,
    ctx: Context = None,
) -> Model:
    """Add a ControlNet (or a T2I-Adapter) with its control image to the model's stack (Load and
    Apply in one node; T2I-Adapters load here too, as in ComfyUI).

    Args:
        image: The control image (an edge map, depth map, pose skeleton...); resized to the
            sampled size when it differs.
        strength: How strongly it steers; 0 leaves the sampling exactly as without it.
        start: Where in the steps it begins to steer (0 = the first step).
        end: Where it stops (1 = the last step); composition is set early, detail late.
        mask: Where it steers (white); elsewhere the prompt alone decides. Any size: it is
            scaled to the sampled image.
    """
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"ControlNet: start {start:g} must be below end {end:g} (fractions of the steps, 0-1)")
    models = ctx.service("models")
    entry = models.load_control(controlnet_path(controlnet), lambda f, t: ctx.progress(f, text=t),
                                search_dirs("controlnet"))
    fam = get_family(model.family)
    name = Path(entry.source).name
    if entry.family and entry.family != model.family:
        raise ValueError(f"ControlNet {name} is for {get_family(entry.family).title}, but the model is {fam.title}")
    misfit = fam.controlnet_misfit(models.entry(model).pipe, entry.model)
    if misfit:
        raise ValueError(f"ControlNet {name} does not fit this {fam.title} model: {misfit}")
    img = np.ascontiguousarray(np.asarray(image, np.float32)[..., :3])
    m, m_hash = guide_mask(mask, "ControlNet")
    ctx.log(f"ControlNet {name}: strength {strength:g}, steps {start:.0%}-{end:.0%}"
            + (", masked" if m is not None else ""))
    ref = ControlRef(entry.key, entry.source, float(strength), float(start), float(end), image_hash(img), img,
                     int(mode), m_hash, m)
    return replace(model, controls=(*model.controls, ref))


def guide_mask(mask: Any, node: str) -> tuple[np.ndarray | None, str]:
    """(an (H, W) float32 mask or None, its hash); a mask that covers nothing is one line."""
    if mask is None:
        return None, ""
    m = np.asarray(mask, np.float32)
    m = m.max(axis=0) if m.ndim == 3 else m
    if float(m.max(initial=0.0)) <= 0.0:
        raise ValueError(f"{node}: the mask covers nothing (all black)")
    m = np.ascontiguousarray(np.clip(m, 0.0, 1.0))
    return m, hashlib.blake2b(m.tobytes(), digest_size=8).hexdigest()


_MASKS: contextvars.ContextVar[dict[int, Any] | None] = contextvars.ContextVar("controlnet_masks", default=None)


def _scaled(value: Any, mask: Any, size: tuple[int, int]) -> Any:
    """`value`'s residual tensors times the mask at their resolution: (N, C, h, w) maps, or
    (N, tokens, C) image tokens laid out row-major over the image (Flux)."""
    import torch
    import torch.nn.functional as F

    if isinstance(value, torch.Tensor):
        if value.ndim == 4:
            m = F.interpolate(mask, size=value.shape[-2:], mode="area")
            return value * m.to(value.dtype)
        if value.ndim == 3:
            width, height = size
            cell = math.sqrt(width * height / value.shape[1])
            h, w = round(height / cell), round(width / cell)
            if h * w != value.shape[1]:
                return value
            m = F.interpolate(mask, size=(h, w), mode="area").reshape(1, h * w, 1)
            return value * m.to(value.dtype)
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_scaled(v, mask, size) for v in value)
    if isinstance(value, dict):  # diffusers' BaseOutput is an OrderedDict
        return type(value)(**{k: _scaled(v, mask, size) for k, v in value.items()})
    return value


def _install(net: Any) -> None:
    if getattr(net, "_imagebash_masked", False):
        return
    original = net.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        active = (_MASKS.get() or {}).get(id(net))
        return out if active is None else _scaled(out, *active)

    net.forward = forward
    net._imagebash_masked = True


@contextlib.contextmanager
def masks_active(nets: list[Any], masks: list[Any], size: tuple[int, int], device: str) -> Iterator[None]:
    """While active (in this context), each net whose mask is not None steers only inside it."""
    import torch

    active: dict[int, Any] = {}
    for net, mask in zip(nets, masks, strict=True):
        if mask is not None:
            _install(net)
            active[id(net)] = (torch.from_numpy(mask)[None, None].to(device), size)
    token = _MASKS.set({**(_MASKS.get() or {}), **active}) if active else None
    try:
        yield
    finally:
        if token is not None:
            _MASKS.reset(token)
