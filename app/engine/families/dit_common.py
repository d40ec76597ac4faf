"""What the transformer (DiT/MMDiT) families share: a denoiser file plus encoders and a VAE.

Releases of Flux.1, SD 3.5 and Qwen-Image come as a diffusers folder, as one all-in-one file
(ComfyUI's "checkpoint": `model.diffusion_model.`, `text_encoders.<name>.transformer.`, `vae.`) or
as ComfyUI's split layout, a denoiser-only file beside separate text-encoder and VAE files.
`read_single_file` assembles a pipeline from any of them: the denoiser through the family's
size-aware converter (the original key names are mapped from the config, so tiny and pruned
models load too), each encoder from the part file whose keys and widths fit its slot, else from
the checkpoint, else from weights in the config folder; tokenizers and the scheduler always come
from the config folder. A slot the family marks optional (SD 3.5's T5) may stay empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.families.base import Family, NameMap
from app.engine.families.loading import (
    DENOISER_PREFIXES,
    LoadError,
    Parts,
    build_empty,
    build_text_model,
    component_class,
    fill,
    load_config,
    model_index,
    read_tensors,
    strip_prefix,
)

#: Per-tensor scales of ComfyUI's "scaled fp8" files (weight = stored * scale_weight).
SCALE_SUFFIX = ".scale_weight"


def dequantize_scaled_fp8(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI scaled-fp8 tensors multiplied out (diffusers cannot read these files)."""
    if "scaled_fp8" not in state and not any(k.endswith(SCALE_SUFFIX) for k in state):
        return state
    out = {}
    for k, v in state.items():
        if k == "scaled_fp8" or k.endswith((SCALE_SUFFIX, ".scale_input")):
            continue
        scale = state.get(k[: -len(".weight")] + SCALE_SUFFIX) if k.endswith(".weight") else None
        out[k] = v.float() * scale.float() if scale is not None else v
    return out


class PerChannelLatents:
    """Latents stored normalised per channel by the VAE config's `latents_mean` / `latents_std`
    (Qwen-Image's and Wan's VAEs), for a (N, C, h, w) or (N, C, F, h, w) tensor."""

    def to_model_space(self, vae: Any, z: Any) -> Any:
        mean, std = channel_stats(vae, z)
        return (z - mean) / std

    def from_model_space(self, vae: Any, z: Any) -> Any:
        mean, std = channel_stats(vae, z)
        return z * std + mean


def channel_stats(vae: Any, z: Any) -> tuple[Any, Any]:
    """The VAE's per-channel mean and std, shaped to broadcast over `z`."""
    import torch

    shape = (1, -1) + (1,) * (z.ndim - 2)
    mean = torch.tensor(vae.config.latents_mean, dtype=z.dtype, device=z.device).view(shape)
    std = torch.tensor(vae.config.latents_std, dtype=z.dtype, device=z.device).view(shape)
    return mean, std


@dataclass
class TransformerFamily(Family):
    """A family whose denoiser is `pipe.transformer`, read by `read_single_file`."""

    denoiser: str = "transformer"
    flow_matching: bool = True
    default_scheduler: str = "default"
    #: slot -> key prefixes under which all-in-one checkpoints embed that encoder
    embedded: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    optional_slots: tuple[str, ...] = ()  # encoders the pipeline runs without (SD 3.5's T5)
    #: slot -> (regex, replacement) renames from the files' key names to transformers' names
    encoder_renames: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    #: module (in this package) holding the original<->diffusers name table of the denoiser,
    #: with `original_modules(config)` and `convert_checkpoint(state, config)`; "" when the
    #: original names are diffusers' (Qwen-Image)
    names: str = ""
    original_marker: str = ""  # a denoiser key only the original naming has

    # -- denoiser keys -------------------------------------------------------------------------
    def _names(self) -> Any:
        import importlib

        return importlib.import_module(f"app.engine.families.{self.names}")

    def is_original(self, keys: set[str]) -> bool:
        """Whether denoiser keys are in the original (BFL/SAI) naming, not diffusers'."""
        return bool(self.original_marker) and self.original_marker in keys

    def convert_denoiser(self, state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        """Original-named denoiser tensors -> diffusers names (size-aware, from the config)."""
        return self._names().convert_checkpoint(state, config) if self.names else state

    def original_names(self, component: str, config: Mapping[str, Any]) -> NameMap:
        if component != self.denoiser or not self.names:
            return {}
        return self._names().original_modules(config)

    # -- assembling ----------------------------------------------------------------------------
    def read_single_file(self, path: Path, variant: str, config: Path, dtype: Any, parts: Parts,
                         explicit_config: bool) -> tuple[Any, list[str]]:

        from app.engine.memory_modes import is_gguf, load_gguf_denoiser

        index = model_index(config)
        warnings: list[str] = []
        components: dict[str, Any] = {}
        den_cls = component_class(index, self.denoiser)
        if is_gguf(path):  # quantized blocks stay quantized; encoders and VAE come from parts/config
            components[self.denoiser] = load_gguf_denoiser(path, den_cls, config, self.denoiser, dtype)
            rest: dict[str, Any] = {}
        else:
            state = dequantize_scaled_fp8(read_tensors(path))
            den, rest = strip_prefix(state, DENOISER_PREFIXES)
            cfg = load_config(config, self.denoiser)
            if self.is_original(set(den)):
                den = self.convert_denoiser(den, cfg)
            components[self.denoiser] = fill(build_empty(den_cls, cfg), den, dtype, path.name)
            del den, state
        files = {p: dequantize_scaled_fp8(read_tensors(p)) for p in parts.text_encoders}
        for slot in self.text_encoders:
            components[slot] = self._encoder(slot, index, config, files, rest, dtype, warnings)
        if files:
            names = ", ".join(p.name for p in files)
            raise LoadError(f"{names}: fits none of {self.title}'s text encoder slots "
                            f"({', '.join(self.text_encoders)}): a text encoder of another model?")
        components["vae"] = self._vae(index, config, parts.vae, rest, dtype, path)
        for name, spec in index.items():
            if name.startswith("_") or name in components:
                continue
            if not isinstance(spec, list) or spec[0] is None:
                components[name] = None
                continue
            components[name] = self._from_folder(index, config, name, dtype)
        pipe = self.base_pipeline(variant)(**components)
        return pipe, warnings

    def _from_folder(self, index: Mapping[str, Any], config: Path, name: str, dtype: Any) -> Any:
        built = self.folder_components(config)
        if name in built:
            return built[name]
        cls = component_class(index, name)
        sub = config / name
        if not sub.is_dir():
            raise LoadError(f"config folder {config.name} has no {name}/")
        kwargs: dict[str, Any] = {"local_files_only": True}
        if any(sub.glob("*.safetensors")):
            kwargs["dtype"] = dtype
        return cls.from_pretrained(str(sub), **kwargs)

    def _encoder(self, slot: str, index: Mapping[str, Any], config: Path, files: dict[Path, dict[str, Any]],
                 rest: dict[str, Any], dtype: Any, warnings: list[str]) -> Any:
        spec = index.get(slot)
        if not isinstance(spec, list) or spec[0] is None:
            return None
        cls = component_class(index, slot)
        model = build_text_model(cls, config, slot)
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        for p, state in list(files.items()):
            renamed = self._fitting(slot, state, own, model)
            if renamed is not None:
                del files[p]
                return fill(model, renamed, dtype, p.name)
        for prefix in self.embedded.get(slot, ()):
            inner = {k[len(prefix):]: v for k, v in rest.items() if k.startswith(prefix)}
            renamed = self._fitting(slot, inner, own, model) if inner else None
            if renamed is not None:
                return fill(model, renamed, dtype, f"{slot} in checkpoint")
        if any((config / slot).glob("*.safetensors")):
            return cls.from_pretrained(str(config / slot), local_files_only=True, dtype=dtype)
        if slot in self.optional_slots:
            warnings.append(f"{self.title}: no {slot} file given, running without it (less prompt adherence, "
                            "less memory)")
            return None
        raise LoadError(f"{self.title} needs its {slot} ({cls.__name__}): set Load Model's text encoder files "
                        f"(ComfyUI keeps them in models/text_encoders), or use a diffusers folder")

    def _fitting(self, slot: str, state: dict[str, Any], own: Mapping[str, tuple[int, ...]],
                 model: Any) -> dict[str, Any] | None:
        """`state` renamed to the slot model's keys (the family's rules, then with or without the
        `transformer.`/`text_model.` levels that files and transformers versions disagree on),
        restricted to them; None when it does not fit the slot."""
        out = {}
        for k, v in state.items():
            for old, new in self.encoder_renames.get(slot, ()):
                k = re.sub(old, new, k)
            out[k] = v
        candidates = [out]
        for prefix in ("transformer.", "text_model."):
            last = candidates[-1]
            if any(k.startswith(prefix) for k in last):
                candidates.append({(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in last.items()})
        for cand in candidates:
            if _fits(cand, own, model):
                return {k: v for k, v in cand.items() if k in own}
        return None

    def _vae(self, index: Mapping[str, Any], config: Path, file: Path | None, rest: dict[str, Any],
             dtype: Any, path: Path) -> Any:
        cls = component_class(index, "vae")
        cfg = load_config(config, "vae")
        if file is not None:

            state, where = read_tensors(file), file.name
        else:
            state = {k[len("vae."):]: v for k, v in rest.items() if k.startswith("vae.")}
            where = f"VAE in {path.name}"
        if not state:
            if any((config / "vae").glob("*.safetensors")):
                return cls.from_pretrained(str(config / "vae"), local_files_only=True, dtype=dtype)
            raise LoadError(f"{self.title} needs its VAE: set Load Model's VAE file (ComfyUI keeps it in "
                            f"models/vae, e.g. ae.safetensors for Flux), or use a diffusers folder")
        model = build_empty(cls, cfg)
        own = set(model.state_dict())
        if not own <= set(state):
            state = self.convert_vae(state, cfg)
        return fill(model, {k: v for k, v in state.items() if k in own}, dtype, where)

    def convert_vae(self, state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        """An original-layout (LDM/BFL) VAE state dict -> diffusers names."""
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        return convert_ldm_vae_checkpoint(state, dict(config))


def _fits(state: Mapping[str, Any], own: Mapping[str, tuple[int, ...]], model: Any) -> bool:
    """Every weight of the slot's model is in `state` with its shape (tied copies may be absent)."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    needed = [k for k in own if k not in tied and not k.endswith("position_ids")]
    return bool(needed) and all(k in state and tuple(state[k].shape) == own[k] for k in needed)


# -- regional prompts: what Flux.1 and Qwen-Image share (nodes/guidance/regions.py) ---------------
def separate_cfg_rows(call: Mapping[str, Any], seen: dict[str, Any]) -> slice | None:
    """The conditional rows of a pipeline that calls the transformer for the prompt, then under
    true CFG once more for the negative prompt (Flux.1, Qwen-Image): the prompt's call is the one
    whose text states are the tensor of the sampling's first call (encoded once before the loop;
    the negative prompt's are another tensor); the negative prompt's calls have none."""
    states = call["encoder_hidden_states"]
    if states is not seen.setdefault("cond", states):
        return None
    return slice(0, int(states.shape[0]))


def token_weight(pipe: Any, mask: Any, size: tuple[int, int], pred: Any) -> Any:
    """A region's weight over packed latents: one token per 2x2 latent patch, row by row, as
    (1, tokens, 1); tokens past the image's (a Kontext or Qwen edit's reference image) weigh 0."""
    import torch

    width, height = size
    cell = int(pipe.vae_scale_factor) * 2
    gh, gw = height // cell, width // cell
    tokens = int(pred.shape[1])
    if gh * gw > tokens:
        raise ValueError(f"Regional Prompt: the denoiser returned {tokens} tokens, fewer than the {gw}x{gh} "
                         f"patches of the {width}x{height} image")
    w = torch.nn.functional.interpolate(mask[None, None].float(), size=(gh, gw), mode="area").reshape(1, gh * gw, 1)
    if tokens > gh * gw:
        w = torch.cat([w, w.new_zeros(1, tokens - gh * gw, 1)], dim=1)
    return w
