"""Regional prompts: a prompt that applies only inside a mask or a rectangle, in one sampling.

As ComfyUI's ConditioningSetMask / SetArea do, each region's prompt gets its own prediction of the
noise at every step, and the predictions are averaged per latent cell, weighted by the regions'
masks (times their strengths) with the main prompt weighing 1 everywhere; the unconditional half of
classifier-free guidance stays the negative prompt's. Done by wrapping the shared denoiser's
forward (U-Net or transformer) for the length of one sampling call (under the model's lock), so
LoRAs, ControlNets and IP-Adapters apply to every region alike.

What differs between families are hooks on their `Family` (app/engine/families/base.py): how a
region's prompt becomes the forward's text arguments (`region_inputs`), which rows of a call are
conditional (`region_rows`: SD and SD 3.5 batch [negative, prompt] in one call, Flux.1's true CFG
and Qwen-Image call the transformer once for each) and how a mask lies over the prediction
(`region_weight`: latent cells, or Flux's and Qwen's packed 2x2 tokens). The region prompts are
encoded right after the pipeline encodes its own prompt, with that call's other arguments (LoRA
scale, clip skip, sequence length, a Qwen edit's source image).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated, Any

import numpy as np

from nodes.registry import node
from nodes.types import Context, Help, Mask, Model, Multiline, Range, RegionRef


@node("imagebash.guidance.regional_prompt", version=1, title="Regional Prompt", category="guidance")
def regional_prompt(model: Model, mask: Mask | None = None, prompt: Annotated[str, Multiline()] = "",
                    strength: Annotated[float, Range(0.0, 4.0, step=0.05),
                                        Help("weight against the main prompt inside the region")] = 1.0,
                    x: Annotated[int, Range(0, 16384, step=8), Help("the rectangle's left edge, in pixels")] = 0,
                    y: Annotated[int, Range(0, 16384, step=8), Help("the rectangle's top edge, in pixels")] = 0,
                    width: Annotated[int, Range(0, 16384, step=8),
                                     Help("the rectangle's width in pixels; 0: no rectangle")] = 0,
                    height: Annotated[int, Range(0, 16384, step=8),
                                      Help("the rectangle's height in pixels; 0: no rectangle")] = 0,
                    ctx: Context = None) -> Model:
    """Add a prompt that applies where the mask is white, or inside a rectangle (chain several for
    several regions).

    Args:
        mask: Where this prompt applies; soft edges blend with the main prompt. Any size: it is
            scaled to the sampled image. With a rectangle too, only the part inside it counts.
        prompt: What to draw there.
        strength: 1 weighs it like the main prompt inside the region; more lets it dominate.
        x: The rectangle's left edge in pixels of the sampled image.
        y: The rectangle's top edge in pixels of the sampled image.
        width: The rectangle's width; 0 (with height 0) for none: the mask alone.
        height: The rectangle's height; 0 (with width 0) for none.
    """
    if not prompt.strip():
        raise ValueError("Regional Prompt: write the prompt for the region")
    if (width > 0) != (height > 0):
        raise ValueError(f"Regional Prompt: the rectangle needs a width and a height ({width}x{height}; "
                         "0x0 for none)")
    rect = (int(x), int(y), int(width), int(height)) if width > 0 else None
    if mask is None and rect is None:
        raise ValueError("Regional Prompt: connect a mask or set a rectangle (width and height) for the region")
    m, digest = None, ""
    if mask is not None:
        m = np.asarray(mask, np.float32)
        m = m.max(axis=0) if m.ndim == 3 else m
        if float(m.max(initial=0.0)) <= 0.0:
            raise ValueError("Regional Prompt: the mask covers nothing (all black)")
        m = np.ascontiguousarray(np.clip(m, 0.0, 1.0))
        digest = hashlib.blake2b(m.tobytes(), digest_size=8).hexdigest()
    return replace(model, regions=(*model.regions, RegionRef(prompt.strip(), float(strength), digest, m, rect)))


def _area(region: RegionRef, size: tuple[int, int]) -> Any:
    """A region's weight before its strength, as an (H, W) float tensor: its mask at its own size,
    or its rectangle rasterised at the sampled size (times the mask scaled to that size)."""
    import torch

    width, height = size
    m = None if region.mask is None else torch.from_numpy(np.asarray(region.mask, np.float32))
    if region.rect is None:
        return m
    x, y, w, h = region.rect
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    where = f"x {x}, y {y}, {w}x{h}"
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"Regional Prompt: the rectangle ({where}) lies outside the {width}x{height} image")
    box = torch.zeros(height, width)
    box[y0:y1, x0:x1] = 1.0
    if m is None:
        return box
    if tuple(m.shape) != (height, width):
        m = torch.nn.functional.interpolate(m[None, None], size=(height, width), mode="bilinear",
                                            align_corners=False, antialias=True)[0, 0].clamp(0.0, 1.0)
    m = m * box
    if float(m.max()) <= 0.0:
        raise ValueError(f"Regional Prompt: the mask is black inside the rectangle ({where}): nothing to prompt")
    return m


def _family(pipe: Any) -> Any:
    from app.engine.families import family_of_pipeline

    try:
        return family_of_pipeline(pipe)
    except KeyError:
        raise ValueError(f"Regional Prompt: {type(pipe).__name__} is not a pipeline of a known model family") from None


def _slice(value: Any, part: slice, n: int) -> Any:
    """`value` (a call argument) cut to the rows `part` of an `n`-row batch, inside dicts and lists."""
    import torch

    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n:
        return value[part]
    if isinstance(value, dict):
        return {k: _slice(v, part, n) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_slice(v, part, n) for v in value)
    return value


def _like(new: Any, old: Any) -> Any:
    """A replacement argument on the device (and, when floating, in the dtype) of the one it replaces."""
    import torch

    if isinstance(new, dict):  # a dict of arguments (SDXL's added_cond_kwargs) is updated, not replaced
        base = old if isinstance(old, dict) else {}
        return {**base, **{k: _like(v, base.get(k)) for k, v in new.items()}}
    if isinstance(new, torch.Tensor) and isinstance(old, torch.Tensor):
        dtype = old.dtype if new.is_floating_point() and old.is_floating_point() else new.dtype
        return new.to(device=old.device, dtype=dtype)
    return new


def _named(sig: inspect.Signature, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments by name (a `**kwargs` parameter's entries flattened in)."""
    bound = sig.bind(*args, **kwargs)
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def _with(sig: inspect.Signature, args: tuple, kwargs: dict[str, Any], rows: slice | None, n: int,
          new: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """(args, kwargs) of a call cut to `rows` (None: all) with the arguments `new` replaced."""
    bound = sig.bind(*args, **kwargs)
    arguments = dict(bound.arguments)
    if rows is not None:
        arguments = {k: _slice(v, rows, n) for k, v in arguments.items()}
    var_kw = next((p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    for name, value in new.items():
        if name in sig.parameters and name != var_kw:
            arguments[name] = _like(value, arguments.get(name))
        elif var_kw is not None:
            extra = dict(arguments.get(var_kw, {}))
            extra[name] = _like(value, extra.get(name))
            arguments[var_kw] = extra
    call = inspect.BoundArguments(sig, arguments)  # type: ignore[arg-type]
    return call.args, call.kwargs


def _prediction(out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out.sample


class _Sampling:
    """What the wrappers share over one pipeline call (reset when an out-of-memory retry starts one)."""

    def __init__(self) -> None:
        self.weights: dict[tuple, Any] = {}  # (region, prediction shape, device) -> laid-out weight
        self.reset()

    def reset(self) -> None:
        self.inputs: list[dict[str, Any]] | None = None  # region_inputs per region
        self.seen: dict[str, Any] = {}  # region_rows' memory
        self.denoised = False  # the denoiser ran since the prompts were encoded
        self.encoding = False  # inside our own encoding of the regions' prompts


@contextlib.contextmanager
def regions_active(pipe: Any, regions: list[RegionRef], size: tuple[int, int], device: str) -> Iterator[None]:
    """While active, the pipeline's denoiser predicts each region's prompt inside its region."""
    import torch

    regions = [r for r in regions if r.strength > 0]  # strength 0: exactly as without it
    if not regions:
        yield
        return
    fam = _family(pipe)
    areas = [_area(r, size) for r in regions]  # a rectangle off the image fails before sampling
    den = getattr(pipe, fam.denoiser)
    state = _Sampling()

    def encode_regions(call: dict[str, Any] | None) -> None:
        state.encoding = True
        try:
            with torch.no_grad():
                state.inputs = [fam.region_inputs(pipe, r.prompt, device, call) for r in regions]
        finally:
            state.encoding = False

    encode = pipe.encode_prompt
    encode_sig = inspect.signature(encode)

    @functools.wraps(encode)  # region_encode reads the signature
    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        if state.encoding:
            return encode(*args, **kwargs)
        if state.denoised:  # the pipeline is called again (an out-of-memory retry)
            state.reset()
        out = encode(*args, **kwargs)
        if state.inputs is None:  # the prompt's call (pipelines encode the negative prompt after it)
            encode_regions(_named(encode_sig, args, kwargs))
        return out

    original = den.forward
    sig = inspect.signature(original)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()):
        sig = inspect.signature(functools.partial(type(den).forward, den))  # a wrapper's (*args, **kwargs)

    def weight(i: int, pred: Any) -> Any:
        key = (i, tuple(pred.shape[1:]), pred.device)
        if key not in state.weights:
            w = fam.region_weight(pipe, areas[i].to(pred.device), size, pred)
            state.weights[key] = w.to(pred.device, torch.float32) * regions[i].strength
        return state.weights[key]

    @functools.wraps(original)
    def forward(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        state.denoised = True
        rows = fam.region_rows(pipe, _named(sig, args, kwargs), state.seen)
        if rows is None:  # the negative prompt's own call
            return out
        if state.inputs is None:  # the pipeline encoded its prompt some other way
            encode_regions(None)
        pred = _prediction(out)
        n = int(pred.shape[0])
        start, stop, _ = rows.indices(n)
        cut = None if (start, stop) == (0, n) else rows
        total = pred[start:stop].float()
        norm = torch.ones((), dtype=torch.float32, device=pred.device)
        for i, inputs in enumerate(state.inputs or ()):
            a, kw = _with(sig, args, kwargs, cut, n, fam.region_expand(inputs, stop - start))
            w = weight(i, pred)
            total = total + _prediction(original(*a, **kw)).float() * w
            norm = norm + w
        blended = (total / norm).to(pred.dtype)
        pred = torch.cat([pred[:start], blended, pred[stop:]]) if cut is not None else blended
        return (pred, *out[1:]) if isinstance(out, tuple) else type(out)(sample=pred)

    forward_before, encode_before = "forward" in den.__dict__, "encode_prompt" in pipe.__dict__
    den.forward = forward
    pipe.encode_prompt = encode_prompt
    try:
        yield
    finally:
        if forward_before:
            den.forward = original
        else:
            del den.forward  # back to the class's forward
        if encode_before:
            pipe.encode_prompt = encode
        else:
            del pipe.encode_prompt
