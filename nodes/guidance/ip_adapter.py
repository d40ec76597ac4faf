"""IP-Adapter: steer a model with a reference image's look (style, subject, composition).

Like the LoRA and ControlNet nodes, the node only adds the adapter, its image encoder, a weight,
a window of the steps, an optional mask and the reference image to the model handle's stack; the
sampling nodes load the stack's adapters into the base pipeline's denoiser when it differs from
what is loaded (diffusers' IP-Adapter loaders, fed the state dict we read from the .safetensors
file: nothing is unpickled; the family says how the file's keys split) and set the weights per
run and per step (the window), so a weight change never reloads. A run without IP-Adapters takes
them out again, so other workflows sharing the base see it unchanged. SD 1.x/2.x/XL (h94's
files) and Flux.1 (XLabs' files).

Masks: SD's attention processors take `ip_adapter_masks`; diffusers' Flux processor accepts the
argument but ignores it, so for Flux the loaded processors are given a subclass that weighs each
adapter's attention output by its mask over the image tokens.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from app.engine.families import get_family
from app.engine.fingerprint import fingerprint
from nodes.diffusion.catalog import find, list_image_encoders, list_ip_adapters
from nodes.guidance.controlnet import guide_mask, image_hash
from nodes.registry import node
from nodes.types import AdapterRef, Choices, Context, Help, Image, Mask, Model, Range


def _resolve(name: str, kind: str, what: str) -> Path:
    text = str(name).strip()
    if not text:
        raise ValueError(f"no {what} chosen")
    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute():
        path = find(text, kind) or path
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {text!r}")
    return path


def encoder_for(adapter: Path, encoder: str) -> Path:
    """The image encoder folder: the one named, else an `image_encoder/` beside the adapter file
    (the layout of h94/IP-Adapter's folders)."""
    if str(encoder).strip():
        return _resolve(encoder, "clip_vision", "image encoder")
    for folder in (adapter.parent / "image_encoder", adapter.parent.parent / "image_encoder"):
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"IP-Adapter {adapter.name} needs its CLIP image encoder: choose a folder from "
                            "clip_vision/ (transformers format), or keep it as image_encoder/ beside the adapter")


def _key(params: dict) -> str:
    try:
        adapter = _resolve(str(params.get("ip_adapter", "")), "ipadapter", "IP-Adapter")
        return fingerprint(adapter) + "|" + fingerprint(encoder_for(adapter, str(params.get("image_encoder", ""))))
    except (ValueError, FileNotFoundError):
        return "missing"


@node("imagebash.guidance.ip_adapter", version=1, title="IP-Adapter", category="guidance", cache_key=_key)
def ip_adapter(
    model: Model,
    image: Image,
    ip_adapter: Annotated[str, Choices(list_ip_adapters, model="ipadapter"),
                          Help("an IP-Adapter .safetensors file (ipadapter/)")] = "",
    image_encoder: Annotated[str, Choices(list_image_encoders),
                             Help("its CLIP vision encoder folder (clip_vision/); empty: image_encoder/ "
                                  "beside the adapter")] = "",
    weight: Annotated[float, Range(0.0, 2.0, step=0.05)] = 0.6,
    start: Annotated[float, Range(0.0, 1.0, step=0.01), Help("fraction of the steps where it starts")] = 0.0,
    end: Annotated[float, Range(0.0, 1.0, step=0.01), Help("fraction of the steps where it stops")] = 1.0,
    mask: Mask | None = None,
    ctx: Context = None,
) -> Model:
    """Add an IP-Adapter with a reference image to the model's stack (Load and Apply in one node).

    Args:
        image: The reference image; its look steers the sampling (several images: their mean).
        weight: How strongly; 0 leaves the sampling as without it.
        start: Where in the steps it begins to steer (0 = the first step).
        end: Where it stops (1 = the last step).
        mask: Where its look applies (white), e.g. one reference per person; any size.
    """
    fam = get_family(model.family)
    if not fam.ip_adapters:
        raise ValueError(f"IP-Adapter: {fam.title} is not supported yet (SD 1.x, 2.x, XL and Flux.1 are)")
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"IP-Adapter: start {start:g} must be below end {end:g} (fractions of the steps, 0-1)")
    adapter = _resolve(ip_adapter, "ipadapter", "IP-Adapter")
    if adapter.suffix.lower() != ".safetensors":
        raise ValueError(f"{adapter.name}: only .safetensors IP-Adapter files are loaded (a pickle can run code)")
    encoder = encoder_for(adapter, image_encoder)
    img = np.ascontiguousarray(np.asarray(image, np.float32)[..., :3])
    m, m_hash = guide_mask(mask, "IP-Adapter")
    ctx.log(f"IP-Adapter {adapter.name} with {encoder.name}: weight {weight:g}, steps {start:.0%}-{end:.0%}"
            + (", masked" if m is not None else ""))
    ref = AdapterRef(str(adapter.resolve()), str(encoder.resolve()), float(weight), image_hash(img), img,
                     float(start), float(end), m_hash, m)
    return replace(model, ip_adapters=(*model.ip_adapters, ref))


def in_window(ref: AdapterRef, step: int, total: int) -> bool:
    """Whether `ref` steers step `step` of `total` (diffusers' rule for ControlNet windows)."""
    return step / total >= ref.start and (step + 1) / total <= ref.end + 1e-9


def _read(fam: Any, path: str) -> dict[str, dict[str, Any]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        sd = fam.ip_adapter_state(list(f.keys()), f.get_tensor)
    if not sd["image_proj"] or not sd["ip_adapter"]:
        raise ValueError(f"{Path(path).name} is not an IP-Adapter file for {fam.title} "
                         "(no image projection or attention keys of a known layout)")
    return sd


def _load(models: Any, entry: Any, refs: list[AdapterRef]) -> None:
    import inspect

    fam = get_family(entry.family)
    pipe = entry.pipe
    encoder = models.image_encoder(refs[0].encoder)
    pipe.register_modules(image_encoder=encoder)
    dicts = [_read(fam, r.path) for r in refs]
    params = inspect.signature(pipe.load_ip_adapter).parameters
    no_encoder = "image_encoder_folder" if "image_encoder_folder" in params else \
        "image_encoder_pretrained_model_name_or_path"
    try:
        pipe.load_ip_adapter(dicts, subfolder=[""] * len(dicts), weight_name=[""] * len(dicts), **{no_encoder: None})
    except (KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{Path(refs[0].path).name} does not fit this {fam.title} model: {first[:160]}") from None
    denoiser = getattr(pipe, fam.denoiser)
    denoiser.to(entry.device)
    if fam.denoiser == "transformer":
        from diffusers.models.transformers.transformer_flux import FluxIPAdapterAttnProcessor

        for proc in denoiser.attn_processors.values():
            if type(proc) is FluxIPAdapterAttnProcessor:
                proc.__class__ = _masked_flux_processor()


def apply_ip_adapters(models: Any, entry: Any, refs: list[AdapterRef], pipe: Any,
                      size: tuple[int, int]) -> tuple[dict[str, Any], Any]:
    """Load `refs`' adapters into the entry's pipeline (when they are not what is loaded) and set
    their weights for the first step; (the task pipeline `pipe`'s keyword arguments, a step hook
    that sets the weights of each later step by the windows). Call with `entry.lock` held."""
    import PIL.Image

    wanted = tuple((r.path, r.encoder) for r in refs)
    base = entry.pipe
    if entry.state.get("ip_loaded", ()) != wanted:
        if entry.state.get("ip_loaded"):
            base.unload_ip_adapter()
            entry.state["ip_loaded"] = ()
        entry.state["slicing"] = None  # loading or unloading leaves unsliced attention processors
        if refs:
            _load(models, entry, refs)
        for derived in entry.derived.values():  # views built with from_pipe share the denoiser, not these
            derived.register_modules(image_encoder=base.image_encoder, feature_extractor=base.feature_extractor)
        entry.state["ip_loaded"] = wanted
    if not refs:
        return {}, None

    def scales(step: int, total: int) -> Any:
        values = [r.weight if in_window(r, step, max(total, 1)) else 0.0 for r in refs]
        return values if len(values) > 1 else values[0]

    def hook(p: Any, step: int, total: int) -> None:
        if step < total:
            base.set_ip_adapter_scale(scales(step, total))

    first = [r.weight if r.start <= 0 else 0.0 for r in refs]
    base.set_ip_adapter_scale(first if len(first) > 1 else first[0])
    images = []
    for r in refs:
        arr = (np.clip(r.image, 0, 1) * 255).round().astype(np.uint8)
        pil = [PIL.Image.fromarray(a) for a in arr]
        images.append(pil if len(pil) > 1 else pil[0])
    out: dict[str, Any] = {"ip_adapter_image": images if len(images) > 1 else images[0]}
    if any(r.mask is not None for r in refs):
        out.update(_mask_kwargs(get_family(entry.family), refs, size, entry.device))
    windowed = any(r.start > 0 or r.end < 1 for r in refs)
    return out, hook if windowed else None


def _mask_kwargs(fam: Any, refs: list[AdapterRef], size: tuple[int, int], device: str) -> dict[str, Any]:
    """The attention keyword arguments that confine each adapter to its mask."""
    import torch
    import torch.nn.functional as F

    width, height = size
    masks = []
    for r in refs:
        m = torch.ones(1, 1, height, width) if r.mask is None else \
            F.interpolate(torch.from_numpy(r.mask)[None, None], size=(height, width), mode="bilinear",
                          align_corners=False).clamp(0, 1)
        if fam.denoiser == "unet":  # diffusers' shape: (1, reference images, H, W)
            masks.append(m.expand(1, len(r.image), height, width).to(device))
        else:  # image tokens: one per 2x2 latent patch, row-major
            cell = fam.latent_scale * 2
            t = F.interpolate(m, size=(height // cell, width // cell), mode="area")
            masks.append(t.reshape(1, -1, 1).to(device))
    key = "cross_attention_kwargs" if fam.denoiser == "unet" else "joint_attention_kwargs"
    return {key: {"ip_adapter_masks": masks}}


_MASKED: list[type] = []


def _masked_flux_processor() -> type:
    """FluxIPAdapterAttnProcessor that honours `ip_adapter_masks` (one (1, image tokens, 1) weight
    per adapter); without masks it is the parent exactly."""
    if _MASKED:
        return _MASKED[0]
    import torch
    import torch.nn.functional as F
    from diffusers.models.transformers.transformer_flux import FluxIPAdapterAttnProcessor

    class MaskedFluxIPAdapterAttnProcessor(FluxIPAdapterAttnProcessor):
        def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None,
                     attention_mask: Any = None, image_rotary_emb: Any = None, ip_hidden_states: Any = None,
                     ip_adapter_masks: Any = None) -> Any:
            if ip_adapter_masks is None or encoder_hidden_states is None:
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask,
                                        image_rotary_emb, ip_hidden_states)
            scales = self.scale
            self.scale = [0.0] * len(scales)
            try:
                hidden, context, _ = super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask,
                                                      image_rotary_emb, ip_hidden_states)
            finally:
                self.scale = scales
            n, tokens = hidden_states.shape[:2]
            query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))).transpose(1, 2)
            ip = torch.zeros_like(hidden)
            for states, scale, to_k, to_v, mask in zip(ip_hidden_states, scales, self.to_k_ip, self.to_v_ip,
                                                       ip_adapter_masks, strict=False):
                if scale == 0:
                    continue
                key = to_k(states).view(n, -1, attn.heads, attn.head_dim).transpose(1, 2)
                value = to_v(states).view(n, -1, attn.heads, attn.head_dim).transpose(1, 2)
                out = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(n, tokens, -1)
                weight = mask.to(out.dtype)
                if weight.shape[1] < tokens:  # Kontext's reference tokens follow the image's
                    weight = F.pad(weight, (0, 0, 0, tokens - weight.shape[1]))
                ip = ip + scale * out.to(query.dtype) * weight[:, :tokens]
            return hidden, context, ip

    _MASKED.append(MaskedFluxIPAdapterAttnProcessor)
    return MaskedFluxIPAdapterAttnProcessor
